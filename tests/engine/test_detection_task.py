"""The detection task's evaluator choice, class-count check and head-direction metrics."""
import os
import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator, LVISEvaluator
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.utils.events import EventStorage

from tde_det import add_tde_config
from tde_det.data.detection import register_lvis_dataset
from tde_det.data.detection.synthetic import write_tiny_lvis
from tde_det.engine import Trainer, detection_task
from tde_det.modeling.roi_heads import TDEFastRCNNOutputLayers


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    paths = write_tiny_lvis(str(tmp_path_factory.mktemp("lvis")), num_train=6, num_val=6)
    register_lvis_dataset("tiny_lvis_task_val", paths["val"], paths["image_root"])
    return paths


def cfg_for(tmp_path):
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 6
    return cfg


def test_evaluator_from_metadata(tiny, tmp_path):
    cfg = cfg_for(tmp_path)
    ev = detection_task.build_evaluator(cfg, "tiny_lvis_task_val", str(tmp_path))
    assert isinstance(ev, LVISEvaluator) and ev._tasks == ("bbox", "segm")
    MetadataCatalog.get("tiny_coco_like").set(evaluator_type="coco", json_file=tiny["val"])
    ev = detection_task.build_evaluator(cfg, "tiny_coco_like", str(tmp_path))
    assert isinstance(ev, COCOEvaluator) and ev._use_fast_impl is False
    MetadataCatalog.get("tiny_voc_like").set(evaluator_type="pascal_voc")
    with pytest.raises(ValueError, match="evaluator_type='pascal_voc'"):
        detection_task.build_evaluator(cfg, "tiny_voc_like", str(tmp_path))


def test_num_classes_must_match_the_dataset(tiny, tmp_path):
    cfg = cfg_for(tmp_path)
    detection_task.check_num_classes(cfg, "tiny_lvis_task_val")
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 1203
    with pytest.raises(ValueError, match="NUM_CLASSES 6"):
        detection_task.check_num_classes(cfg, "tiny_lvis_task_val")


def test_test_datasets_are_checked_before_training(tiny, tmp_path):
    """A test split that would fail at the first evaluation fails when the Trainer is made."""
    cfg = cfg_for(tmp_path)
    cfg.DATASETS.TRAIN = cfg.DATASETS.TEST = ("tiny_lvis_task_val",)
    detection_task.check_datasets(cfg)
    cfg.DATASETS.TEST = ("tiny_lvis_task_val", "tiny_lvis_task_vall")
    with pytest.raises(KeyError, match="DATASETS.TEST: 'tiny_lvis_task_vall' is not a "
                                       "registered dataset; did you mean 'tiny_lvis_task_val'"):
        Trainer(cfg)  # before anything is built
    cfg.DATASETS.TEST = ("nothing_like_it_42",)
    with pytest.raises(KeyError, match="not a registered dataset .*DATASETS.LVIS_CUSTOM"):
        detection_task.check_datasets(cfg)
    cfg.DATASETS.TEST = ("tiny_lvis_task_val",)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 1203
    with pytest.raises(ValueError, match="NUM_CLASSES 6"):
        detection_task.check_datasets(cfg)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 6
    DatasetCatalog.register("tiny_voc_task", lambda: [])
    MetadataCatalog.get("tiny_voc_task").set(evaluator_type="pascal_voc")
    cfg.DATASETS.TEST = ("tiny_voc_task",)
    with pytest.raises(ValueError, match="DATASETS.TEST: No detection evaluator .*'pascal_voc'"):
        detection_task.check_datasets(cfg)
    # an LVIS-format split whose json has gone (e.g. lvis_v1_val without datasets/lvis)
    gone = tmp_path / "gone.json"
    shutil.copy(tiny["val"], gone)
    register_lvis_dataset("tiny_lvis_task_gone", str(gone), tiny["image_root"])
    gone.unlink()
    cfg.DATASETS.TEST = ("tiny_lvis_task_gone",)
    with pytest.raises(FileNotFoundError, match=f"'tiny_lvis_task_gone', {gone}, does not exist"):
        detection_task.check_datasets(cfg)


def edited_copy(src, path, edit):
    """``src`` json with ``edit(data)`` applied, written to ``path``; returns (path, data)."""
    with open(src) as f:
        data = json.load(f)
    edit(data)
    path.write_text(json.dumps(data))
    return str(path), data


def test_a_test_json_the_lvis_api_cannot_evaluate_stops_before_training(tiny, tmp_path):
    """A custom test json without r/c/f frequencies (or another field the LVIS API reads) is
    refused when the Trainer is made, naming the key, the split, the file and the categories."""
    def edit(d):
        d["categories"][0].pop("frequency")
        d["categories"][3]["frequency"] = "common"

    path, _ = edited_copy(tiny["val"], tmp_path / "no_freq.json", edit)
    register_lvis_dataset("tiny_lvis_task_no_freq", path, tiny["image_root"])
    cfg = cfg_for(tmp_path)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ("tiny_lvis_task_val",), ("tiny_lvis_task_no_freq",)
    with pytest.raises(ValueError, match=rf"DATASETS.TEST: 'tiny_lvis_task_no_freq': {path} "
                                         rf"cannot be evaluated with the LVIS API") as err:
        Trainer(cfg)
    assert "2 categories without a 'frequency' of 'r', 'c' or 'f'" in str(err.value)
    assert "id 1 'red_square' (none), id 7 'yellow_square' ('common')" in str(err.value)
    with pytest.raises(ValueError, match="--dataset: 'tiny_lvis_task_no_freq'"):
        detection_task.check_datasets(cfg, training=False, test=["tiny_lvis_task_no_freq"])
    # the images' fields too
    path, _ = edited_copy(tiny["val"], tmp_path / "no_neg.json",
                          lambda d: d["images"][0].pop("neg_category_ids"))
    register_lvis_dataset("tiny_lvis_task_no_neg", path, tiny["image_root"])
    cfg.DATASETS.TEST = ("tiny_lvis_task_no_neg",)
    with pytest.raises(ValueError, match="1 images without a list 'neg_category_ids'"):
        detection_task.check_datasets(cfg, training=False)


def test_empty_train_or_test_splits_name_the_key(tiny, tmp_path):
    cfg = cfg_for(tmp_path)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (), ("tiny_lvis_task_val",)
    with pytest.raises(ValueError, match="DATASETS.TRAIN is empty"):
        Trainer(cfg)
    detection_task.check_datasets(cfg, training=False)  # evaluation needs no training split
    cfg.DATASETS.TEST = ()  # e.g. --eval-only
    with pytest.raises(ValueError, match="DATASETS.TEST is empty: there is nothing to evaluate"):
        detection_task.check_datasets(cfg, training=False)


def test_predictors_put_per_stage_scalars_and_the_hook_prints_them(tmp_path, caplog):
    cfg = cfg_for(tmp_path)
    cfg.MODEL.TDE.LOG_PERIOD = 2
    predictors = [TDEFastRCNNOutputLayers(
        cfg, ShapeSpec(channels=4), box2box_transform=Box2BoxTransform((10.0, 10, 5, 5))).train()
        for _ in range(3)]
    (hook,) = detection_task.build_hooks(cfg, None)
    g = torch.Generator().manual_seed(0)
    with EventStorage() as storage, caplog.at_level("INFO", "tde_det"):
        hook.trainer = SimpleNamespace(storage=storage)
        for it in range(4):
            storage.iter = it
            for k, p in enumerate(predictors):
                labels = torch.tensor([0, 1, 6]) if k < 2 else torch.tensor([6, 6, 6])
                with storage.name_scope(f"tde/stage{k}"):  # as TDECascadeROIHeads
                    p(torch.rand(3, 4, generator=g) + 0.1, labels)
            hook.after_step()
        hist = storage.histories()
    for k in (0, 1):
        assert hist[f"tde/stage{k}/ema_norm"].latest() > 0
        assert -1 <= hist[f"tde/stage{k}/direction_cos_prev"].latest() <= 1 + 1e-6
        assert 0 < hist[f"tde/stage{k}/fg_cos"].latest() <= 1 + 1e-6
        assert [it for _, it in hist[f"tde/stage{k}/ema_norm"].values()] == [1, 3]
    # Stage 2 never saw a foreground proposal: zero EMA, no cosines.
    assert hist["tde/stage2/ema_norm"].latest() == 0
    assert "tde/stage2/fg_cos" not in hist and "tde/stage2/direction_cos_prev" not in hist
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("iter: ")]
    assert len(lines) == 2 and lines[1].startswith("iter: 3  tde/stage0/direction_cos_prev: ")
    assert lines[1].endswith("  tde/stage2/ema_norm: 0")
    cfg.MODEL.TDE.LOG_PERIOD = 0
    assert detection_task.build_hooks(cfg, None) == []


def test_repeat_factor_sampler_from_the_config(tiny, tmp_path):
    cfg = cfg_for(tmp_path)
    register_lvis_dataset("tiny_lvis_task_train", tiny["train"], tiny["image_root"])
    cfg.DATASETS.TRAIN = ("tiny_lvis_task_train",)
    cfg.DATALOADER.SAMPLER_TRAIN = "RepeatFactorTrainingSampler"
    cfg.DATALOADER.REPEAT_THRESHOLD = 0.5
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (64,), 96
    loader = detection_task.build_train_loader(cfg)
    sampler, ds = None, loader.dataset
    while sampler is None or type(sampler).__name__ == "_InfiniteConstantSampler":
        sampler, ds = getattr(ds, "sampler", None), ds.dataset
    assert type(sampler).__name__ == "RepeatFactorTrainingSampler"
    # Images holding a rare category are repeated (factor > 1), the others are not.
    assert sampler._int_part.max() >= 1 and (sampler._int_part + sampler._frac_part).max() > 1
    batch = next(iter(loader))
    assert len(batch) == 2 and all("instances" in d for d in batch)


def test_warns_when_a_frozen_backbone_would_stay_random(tmp_path):
    cfg = cfg_for(tmp_path)
    cfg.merge_from_file(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "configs", "lvis_cascade_tde.yaml"))
    assert detection_task.untrained_frozen_backbone_warning(cfg) is None  # ImageNet weights
    cfg.MODEL.WEIGHTS = ""
    msg = detection_task.untrained_frozen_backbone_warning(cfg)
    assert "MODEL.WEIGHTS is empty" in msg and "MODEL.BACKBONE.FREEZE_AT 2" in msg
    assert "MODEL.RESNETS.NORM FrozenBN" in msg
    cfg.MODEL.BACKBONE.FREEZE_AT, cfg.MODEL.RESNETS.NORM = 0, "BN"  # from scratch, all trained
    assert detection_task.untrained_frozen_backbone_warning(cfg) is None


def test_records_lvis_evaluator_wants_one_list_per_image():
    from tde_det.evaluation import RecordsLVISEvaluator

    ev = RecordsLVISEvaluator.__new__(RecordsLVISEvaluator)  # process_records needs no dataset
    ev.reset()
    with pytest.raises(ValueError, match="one list of records per input image"):
        ev.process_records([{"image_id": 1}], [])
    ev.process_records([{"image_id": 1}], [[{"score": 0.5}]])
    assert ev._predictions == [{"image_id": 1, "instances": [{"score": 0.5}]}]
