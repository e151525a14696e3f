"""The CUDA path: the TDE maths, the cascade detector and the classifier on a GPU.

Skipped without CUDA (CI has none). On a GPU machine: ``python -m pytest tests/cuda -n0``.
``TDE_TEST_DEVICE=cpu`` runs the same tests on the CPU (to debug them where there is no GPU).
Each test runs the same code on the CPU and on the GPU, or checks that everything the model
keeps (head directions included) lives on the GPU and that the one-pass alpha sweep equals
eval-only there too.
"""
import importlib.util
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.utils.events import EventStorage

from tde_det import add_tde_config
from tde_det.data.classification.synthetic import write_cifar_pickles
from tde_det.data.detection.synthetic import write_tiny_lvis
from tde_det.engine import Trainer
from tde_det.evaluation.alpha_sweep import sweep_classification_dataset
from tde_det.evaluation.detection_alpha_sweep import DetectionAlphaSweep
from tde_det.evaluation.diagnostics import (
    per_class_accuracy,
    per_class_feature_stats,
    weight_norms,
)
from tde_det.layers import (
    CLASSIFIER_KINDS,
    HeadDirection,
    NormalizedClassifier,
    background_exempted_probs,
)

DEVICE = os.environ.get("TDE_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (or TDE_TEST_DEVICE=cpu)")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind", [k for k in CLASSIFIER_KINDS if k != "linear"])
def test_tde_maths_on_cuda_equals_cpu(kind):
    torch.manual_seed(0)
    clf = NormalizedClassifier(64, 11, kind=kind, num_heads=2)
    ema = HeadDirection(64, num_heads=2, mu=0.9, sync=False)
    x = torch.randn(300, 64)
    keep = torch.rand(300) > 0.3
    for _ in range(3):
        ema.update(x, keep)
    gpu_clf, gpu_ema = NormalizedClassifier(64, 11, kind=kind).to(DEVICE), \
        HeadDirection(64, num_heads=2, mu=0.9, sync=False).to(DEVICE)
    gpu_clf.load_state_dict(clf.state_dict())
    for _ in range(3):
        gpu_ema.update(x.to(DEVICE), keep.to(DEVICE))
    torch.testing.assert_close(gpu_ema.ema.cpu(), ema.ema, rtol=1e-6, atol=1e-6)
    for alpha in (0.0, 1.5):
        cpu = clf.tde_logits(x, ema, alpha)
        gpu = gpu_clf.tde_logits(x.to(DEVICE), gpu_ema, alpha)
        assert gpu.device.type == DEVICE
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
    probs = background_exempted_probs(clf(x), clf.tde_logits(x, ema, 1.0))
    gpu_probs = background_exempted_probs(gpu_clf(x.to(DEVICE)),
                                          gpu_clf.tde_logits(x.to(DEVICE), gpu_ema, 1.0))
    torch.testing.assert_close(gpu_probs.cpu(), probs, rtol=1e-4, atol=1e-6)


def test_normalized_classifier_under_autocast_stays_float32():
    clf = NormalizedClassifier(64, 11).to(DEVICE)
    x = torch.randn(8, 64, device=DEVICE)
    with torch.autocast(DEVICE, dtype=torch.float16 if DEVICE == "cuda" else torch.bfloat16):
        out = clf(x.half())
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out, clf(x), rtol=2e-3, atol=2e-3)


@pytest.fixture(scope="module")
def lvis_paths(tmp_path_factory):
    """The tiny LVIS-format dataset, written once (its names are registered once)."""
    return write_tiny_lvis(str(tmp_path_factory.mktemp("cuda_lvis")), num_train=6, num_val=4,
                           seed=3)


def _detector_overrides(paths, **extra):
    """KEY VALUE overrides of the tiny detector config for the tiny dataset on DEVICE."""
    return [
        "DATASETS.LVIS_CUSTOM.NAMES", "('cuda_lvis_train', 'cuda_lvis_val')",
        "DATASETS.LVIS_CUSTOM.JSON_FILES", f"('{paths['train']}', '{paths['val']}')",
        "DATASETS.LVIS_CUSTOM.IMAGE_ROOTS", f"('{paths['image_root']}', '{paths['image_root']}')",
        "DATASETS.TRAIN", "('cuda_lvis_train',)", "DATASETS.TEST", "('cuda_lvis_val',)",
        "MODEL.DEVICE", DEVICE, "SOLVER.MAX_ITER", "8", "SOLVER.WARMUP_ITERS", "1",
        *[str(v) for kv in extra.items() for v in kv]]


def _detector_cfg(root, paths, **extra):
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "TinyLVIS/cascade_R_18_tde.yaml"))
    cfg.merge_from_list(_detector_overrides(paths, **extra))
    cfg.OUTPUT_DIR = str(root / "out")
    return cfg


def _classifier_cfg(root):
    """The CIFAR-10-LT config, tiny, on DEVICE (DETECTRON2_DATASETS must hold the data)."""
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "CIFAR-LT/cifar10_r10_tde.yaml"))
    cfg.merge_from_list([
        "MODEL.DEVICE", DEVICE, "MODEL.CIFAR_RESNET.DEPTH", "8", "SOLVER.IMS_PER_BATCH", "16",
        "SOLVER.MAX_ITER", "6", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()",
        "DATALOADER.NUM_WORKERS", "0", "DATASETS.TEST", "('cifar10_lt_r10_test',)",
        "TEST.CLASSIFICATION.MANY_THRESHOLD", "30", "TEST.CLASSIFICATION.FEW_THRESHOLD", "10",
        "OUTPUT_DIR", str(root / "out")])
    return cfg


@pytest.mark.parametrize("amp", [False, True] if DEVICE == "cuda" else [False])
def test_tiny_detector_trains_on_cuda_and_sweep_equals_eval_only(tmp_path, lvis_paths, amp):
    cfg = _detector_cfg(tmp_path, lvis_paths, **{"SOLVER.AMP.ENABLED": amp})
    torch.manual_seed(0)
    trainer = Trainer(cfg)
    trainer.train()
    model = trainer.model.eval()
    heads = model.roi_heads
    buffers = {n: b for n, b in model.named_buffers() if n.endswith("ema")}
    assert len(buffers) == heads.num_cascade_stages  # one head direction per stage
    for name, ema in buffers.items():
        assert ema.device.type == DEVICE and torch.isfinite(ema).all() and ema.norm() > 0, name
    swept = {}
    for share in (False, True):  # each alpha's own mask batches (exact), or shared masks
        sweep = DetectionAlphaSweep(model, [0.0, 1.5], lambda a: Trainer.build_evaluator(
            cfg, "cuda_lvis_val", str(tmp_path / f"sweep_{share}_{a}")), share_masks=share)
        for batch in Trainer.build_test_loader(cfg, "cuda_lvis_val"):
            sweep.process(batch)
        swept[share] = sweep.evaluate()
    for alpha in (0.0, 1.5):
        for p in heads.box_predictor:
            p.alpha = alpha
        c = cfg.clone()
        c.defrost()
        c.OUTPUT_DIR = str(tmp_path / f"eval_{alpha}")
        assert swept[False][alpha] == Trainer.test(c, model), alpha
        # the detections themselves, not only the APs (all 0 for a weak model)
        again = json.load(open(tmp_path / f"eval_{alpha}" / "inference"
                               / "lvis_instances_results.json"))
        exact, shared = (json.load(open(tmp_path / f"sweep_{share}_{alpha}" /
                                        "lvis_instances_results.json")) for share in (False, True))
        assert exact == again and len(exact) > 0, alpha
        # Shared masks: the mask head ran on other batch sizes, where a convolution library
        # may round differently; all but the masks must be equal, the masks nearly
        strip = lambda ds: [{k: v for k, v in d.items() if k != "segmentation"}  # noqa: E731
                            for d in ds]
        assert strip(shared) == strip(again), alpha
        pixels = [(mask_util.decode(a["segmentation"]) != mask_util.decode(b["segmentation"]))
                  .mean() for a, b in zip(shared, again)]
        assert max(pixels) < 1e-3, alpha
    scores = {a: [d["score"] for d in json.load(open(tmp_path / f"sweep_False_{a}" /
                                                     "lvis_instances_results.json"))]
              for a in (0.0, 1.5)}
    assert scores[0.0] != scores[1.5]  # alpha matters, so the equality above could fail


@pytest.mark.parametrize("fused", [False, True])
def test_detector_training_step_on_cuda_has_finite_losses(tmp_path, lvis_paths, fused):
    """Also with MODEL.TDE.FUSED_KERNELS (Triton kernels on CUDA; the eager maths on the CPU):
    the same losses, gradients and head directions as the eager maths."""
    cfg = _detector_cfg(tmp_path, lvis_paths, **{"MODEL.TDE.FUSED_KERNELS": fused})
    torch.manual_seed(0)
    model = Trainer.build_model(cfg).train()
    batch = next(iter(Trainer.build_train_loader(cfg)))
    torch.manual_seed(1)  # the same proposals sampled in both runs
    with EventStorage():
        losses = model(batch)
    assert all(v.device.type == DEVICE and torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    grads = [p.grad for p in model.roi_heads.box_predictor.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    emas = [p.head_direction.ema for p in model.roi_heads.box_predictor]
    assert all(torch.isfinite(e).all() and e.norm() > 0 for e in emas)
    if fused:
        cfg.MODEL.TDE.FUSED_KERNELS = False
        torch.manual_seed(0)
        eager = Trainer.build_model(cfg).train()
        eager.load_state_dict(model.state_dict())
        for p in eager.roi_heads.box_predictor:
            p.head_direction.ema.zero_()
        torch.manual_seed(1)
        with EventStorage():
            again = eager(batch)
        for name, v in again.items():
            torch.testing.assert_close(losses[name], v, rtol=1e-4, atol=1e-5, msg=name)
        sum(again.values()).backward()
        for (name, p), q in zip(eager.roi_heads.box_predictor.named_parameters(),
                                model.roi_heads.box_predictor.parameters()):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-3,
                                       atol=1e-5 * p.grad.abs().max().item(), msg=name)
        for p, e in zip(eager.roi_heads.box_predictor, emas):
            torch.testing.assert_close(e, p.head_direction.ema, rtol=1e-4, atol=1e-6)


def test_classifier_trains_on_cuda_and_sweep_equals_eval_only(tmp_path):
    write_cifar_pickles(str(tmp_path / "data"), "cifar10", per_class=40, test_per_class=6)
    os.environ["DETECTRON2_DATASETS"] = str(tmp_path / "data")
    try:
        cfg = _classifier_cfg(tmp_path)
        torch.manual_seed(0)
        trainer = Trainer(cfg)
        trainer.train()
        model = trainer.model.eval()
        ema = model.head_direction.ema
        assert ema.device.type == DEVICE and ema.norm() > 0
        rows, _ = sweep_classification_dataset(
            cfg, model, "cifar10_lt_r10_test", [0.0, 1.0],
            Trainer.build_test_loader(cfg, "cifar10_lt_r10_test"))
        for row in rows:
            model.alpha = row["alpha"]
            result = Trainer.test(cfg, model)["classification"]
            assert abs(result["top1"] - row["top1"]) < 1e-6, (row["alpha"], result, row)
    finally:
        os.environ.pop("DETECTRON2_DATASETS", None)


def test_diagnostics_take_tensors_on_the_device():
    torch.manual_seed(0)
    x, labels, ema = torch.randn(20, 8), torch.randint(0, 3, (20,)), torch.randn(8)
    w, logits = torch.randn(3, 8), torch.randn(20, 3)
    on = lambda t: t.to(DEVICE)  # noqa: E731
    for key, value in per_class_feature_stats(on(x), on(labels), on(ema), 2, 3).items():
        np.testing.assert_allclose(value, per_class_feature_stats(x, labels, ema, 2, 3)[key])
    for key, value in weight_norms(on(w), 2).items():
        np.testing.assert_allclose(value, weight_norms(w, 2)[key])
    np.testing.assert_array_equal(per_class_accuracy(on(logits), on(labels), 3),
                                  per_class_accuracy(logits, labels, 3))


def test_diagnose_and_visualize_a_detector_on_cuda(tmp_path, lvis_paths):
    cfg = _detector_cfg(tmp_path, lvis_paths)
    Trainer(cfg).train()
    cfg.MODEL.WEIGHTS = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    rows = _tool("diagnose").diagnose_detector(cfg, "cuda_lvis_val", str(tmp_path / "diag"))
    assert len(rows) == 6 and all(np.isfinite(r["weight_norm"]) for r in rows)
    assert (tmp_path / "diag" / "per_class.csv").exists()
    visualize = _tool("visualize")
    args = visualize.parse_args([
        "--config-file", os.path.join(REPO, "configs", "TinyLVIS/cascade_R_18_tde.yaml"),
        "--dataset", "cuda_lvis_val", "--show-gt", "--compare-tde", "--max-images", "2",
        "--output", str(tmp_path / "vis"), *_detector_overrides(lvis_paths),
        "MODEL.WEIGHTS", cfg.MODEL.WEIGHTS, "OUTPUT_DIR", str(tmp_path / "vis_out")])
    visualize.main(args)
    # two drawings, beside the tool's own config.yaml and log.txt
    assert len(list((tmp_path / "vis").glob("*.png"))) == 2


def test_diagnose_a_classifier_on_cuda(tmp_path):
    write_cifar_pickles(str(tmp_path / "data"), "cifar10", per_class=40, test_per_class=6)
    os.environ["DETECTRON2_DATASETS"] = str(tmp_path / "data")
    try:
        cfg = _classifier_cfg(tmp_path)
        Trainer(cfg).train()
        cfg.MODEL.WEIGHTS = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
        rows = _tool("diagnose").diagnose_classifier(cfg, "cifar10_lt_r10_test",
                                                     str(tmp_path / "diag"))
        assert len(rows) == 10 and all(np.isfinite(r["feature_norm"]) for r in rows)
    finally:
        os.environ.pop("DETECTRON2_DATASETS", None)
