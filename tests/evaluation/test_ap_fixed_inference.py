"""AP-fixed inference on the tiny Cascade Mask R-CNN (random weights, CPU): the standard outputs
are exactly the model's own, on TDE and stock heads; only the candidates that are in their
class's running top K get masks; and the inputs AP-fixed cannot take are refused by name."""
import logging
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes

from tde_det import add_tde_config
from tde_det.data.detection.lvis import register_lvis_dataset
from tde_det.data.detection.synthetic import write_tiny_lvis
from tde_det.engine import Trainer
from tde_det.evaluation.ap_fixed import APFixedLVISEvaluator
from tde_det.evaluation.ap_fixed_inference import AP_FIXED_CANDIDATES, APFixedInference
from tests.helpers.tools import REPO

NAME = "ap_fixed_inference_val"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    paths = write_tiny_lvis(str(tmp_path_factory.mktemp("ap_fixed")), num_train=1, num_val=4,
                            seed=5)
    register_lvis_dataset(NAME, paths["val"], paths["image_root"])
    return paths


def build(heads: str, **test):
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "TinyLVIS/cascade_R_18_tde.yaml"))
    cfg.DATASETS.TEST = (NAME,)
    cfg.MODEL.ROI_HEADS.NAME = heads
    cfg.TEST.DETECTIONS_PER_IMAGE = 20  # fewer than the box head gives: a real prefix
    cfg.TEST.AP_FIXED.ENABLED = True
    for key, value in test.items():
        setattr(cfg.TEST.AP_FIXED, key, value)
    if heads == "StandardROIHeads":
        cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = False
    torch.manual_seed(0)
    model = Trainer.build_model(cfg).eval()
    if heads == "TDECascadeROIHeads":  # TDE needs a head direction
        for p in model.roi_heads.box_predictor:
            p.head_direction.ema.normal_()
    return cfg, model


def fields(instances):
    return {k: (v.tensor if isinstance(v, Boxes) else v) for k, v in
            instances.get_fields().items()}


@pytest.mark.parametrize("heads", ["TDECascadeROIHeads", "CascadeROIHeads",
                                   "StandardROIHeads"])
def test_standard_outputs_are_the_models_own(tiny, heads):
    cfg, model = build(heads)
    wrapped = APFixedInference(model)
    longer = 0
    for batch in Trainer.build_test_loader(cfg, NAME):
        ours, theirs = wrapped(batch), model(batch)
        for a, b in zip(ours, theirs):
            fa, fb = fields(a["instances"]), fields(b["instances"])
            assert list(fa) == list(fb) and len(b["instances"]) == 20
            for k in fa:
                assert torch.equal(fa[k], fb[k]), k  # bit for bit
        candidates = ours[0][AP_FIXED_CANDIDATES]
        assert all(o[AP_FIXED_CANDIDATES] is candidates for o in ours)
        scores = candidates.scores(0)
        # the candidates start with the standard detections, sorted by score
        assert torch.equal(scores[:20], theirs[0]["instances"].scores)
        assert bool((scores[1:] <= scores[:-1]).all())
        longer += len(scores) > 20
    assert longer  # so that the prefix was a real one


def running_top_k_members(per_image, k):
    """Per image, how many of its candidates are in their class's top k (stable sort) of all
    candidates so far: the detections that need a mask."""
    seen, needed = [], []
    for classes, scores in per_image:
        start = len(seen)
        seen += list(zip(classes, scores))
        kept = set()
        for c in {c for c, _ in seen}:
            idx = [i for i, (ci, _) in enumerate(seen) if ci == c]
            kept |= set(sorted(idx, key=lambda i: -seen[i][1])[:k])
        needed.append(sum(i >= start for i in kept))
    return needed


def test_masks_only_for_candidates_in_the_running_top_k(tiny, tmp_path):
    cfg, model = build("TDECascadeROIHeads", DETS_PER_CLASS=15, DETS_PER_IMAGE=60,
                       SCORE_THRESH=0.01)
    evaluator = Trainer.build_evaluator(cfg, NAME, str(tmp_path))
    assert isinstance(evaluator, APFixedLVISEvaluator)
    evaluator.reset()
    wrapped, per_image, needed = APFixedInference(model), [], []
    for batch in Trainer.build_test_loader(cfg, NAME):
        outputs = wrapped(batch)
        c = outputs[0][AP_FIXED_CANDIDATES]
        keep = (c.scores(0) > 0.01).nonzero().flatten()[:60]
        per_image.append((c.classes(0)[keep].tolist(), c.scores(0)[keep].tolist()))
        before = evaluator.mask_rows
        evaluator.process(batch, outputs)
        needed.append(evaluator.mask_rows - before)
    assert needed == running_top_k_members(per_image, 15)
    assert sum(needed) < evaluator.candidates == sum(len(s) for _, s in per_image)
    results = evaluator.evaluate()
    for task in ("bbox", "segm"):
        assert {"AP-fixed", "APr-fixed", "APc-fixed", "APf-fixed"} <= set(results[task])
    assert os.path.isfile(tmp_path / "lvis_ap_fixed_results.json")


def test_bad_input(tiny, tmp_path, caplog):
    cfg, model = build("CascadeROIHeads")
    with pytest.raises(ValueError, match="GeneralizedRCNN"):
        APFixedInference(model.roi_heads)
    for key, value in (("DETS_PER_CLASS", 0), ("DETS_PER_CLASS", -5), ("DETS_PER_IMAGE", 0)):
        with pytest.raises(ValueError, match=f"TEST.AP_FIXED.{key}"):
            c = cfg.clone()
            setattr(c.TEST.AP_FIXED, key, value)
            Trainer.check_datasets(c, training=False)
    coco = NAME + "_as_coco"
    if coco not in MetadataCatalog.list():
        MetadataCatalog.get(coco).set(evaluator_type="coco")
    c = cfg.clone()
    c.DATASETS.TEST = (coco,)
    with pytest.raises(ValueError, match="TEST.AP_FIXED.ENABLED True: AP-fixed is an LVIS"):
        Trainer.build_evaluator(c, coco)
    # an evaluator that never got candidates (the model not wrapped) says so, reports no
    # AP-fixed; one that got them for some images only is an error
    evaluator = Trainer.build_evaluator(cfg, NAME, "")
    evaluator.reset()
    batches = list(Trainer.build_test_loader(cfg, NAME))
    with torch.no_grad():
        for batch in batches:
            evaluator.process(batch, model(batch))
    with caplog.at_level(logging.WARNING):
        results = evaluator.evaluate()
    assert "AP-fixed" not in results["bbox"] and "no AP-fixed candidates" in caplog.text
    evaluator.reset()
    evaluator.process(batches[0], APFixedInference(model)(batches[0]))
    with torch.no_grad():
        evaluator.process(batches[1], model(batches[1]))
    with pytest.raises(RuntimeError, match="AP-fixed candidates came for 1 of the 2 images"):
        evaluator.evaluate()
