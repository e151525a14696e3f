"""tools/diagnose.py and the per-class diagnostics it is built on."""
import csv
import json
import math
import os

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg

from tests.helpers.tools import REPO, load_tool
from tde_det import add_tde_config
from tde_det.data.classification import register_fashion_mnist_lt, shot_groups
from tde_det.data.classification.fashion_mnist import FASHION_MNIST_CLASSES
from tde_det.data.classification.synthetic import write_fashion_mnist_idx
from tde_det.data.detection.synthetic import TINY_CATEGORIES
from tde_det.engine import Trainer
from tde_det.evaluation.diagnostics import (
    per_class_accuracy,
    per_class_feature_stats,
    weight_norms,
)

diagnose = load_tool("diagnose")


def test_feature_stats_by_hand():
    # K = 2 heads of 2: d_hat = ([1, 0], [0, 1]).
    x = torch.tensor([[3.0, 4.0, 0.0, 2.0], [1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 0, 2])
    s = per_class_feature_stats(x, labels, torch.tensor([5.0, 0.0, 0.0, 0.5]), 2, 3)
    # sample 0: ||x|| = sqrt(29), cos = (3/5 + 1) / 2; sample 1: ||x|| = sqrt(2), cos = (1 + 0) / 2
    assert s["feature_norm"][0] == pytest.approx((math.sqrt(29) + math.sqrt(2)) / 2)
    assert s["cos_head_direction"][0] == pytest.approx(((0.6 + 1) / 2 + 0.5) / 2)
    assert math.isnan(s["feature_norm"][1]) and s["count"].tolist() == [2, 0, 1]
    assert s["cos_head_direction"][2] == 0.0  # a zero feature has no direction
    w = weight_norms(torch.tensor([[3.0, 4.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0]]), 2)
    assert w["norm"].tolist() == pytest.approx([5.0, math.sqrt(2)])
    assert w["head_norm_mean"].tolist() == pytest.approx([2.5, 1.0])
    acc = per_class_accuracy(torch.tensor([[1.0, 0], [0, 1], [0, 1]]), torch.tensor([0, 0, 1]), 3)
    assert acc[:2].tolist() == [50.0, 100.0] and math.isnan(acc[2])


def test_training_metrics_plot(tiny_detector, tmp_path):
    out_dir = os.path.dirname(tiny_detector[3])
    series = diagnose.plot_training_metrics(os.path.join(out_dir, "metrics.json"), str(tmp_path))
    assert {f"tde/stage{s}/ema_norm" for s in range(3)} <= set(series)
    assert (tmp_path / "training_metrics.png").stat().st_size > 1000


def test_per_class_diagnostics_of_a_classifier(tmp_path, progress_log):
    root = write_fashion_mnist_idx(str(tmp_path / "fm"), per_class=40, test_per_class=6)
    register_fashion_mnist_lt("diag_fm_r10", 10, seed=1, val_per_class=5, root=root)
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "FashionMNIST-LT/r10_deconfound.yaml"))
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ("diag_fm_r10_train",), ()
    cfg.MODEL.SMALL_CNN.CHANNELS = [4, 8, 8]
    cfg.MODEL.DEVICE = "cpu"
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.IMS_PER_BATCH = 4, 1, 16
    cfg.OUTPUT_DIR = str(tmp_path / "train")
    Trainer(cfg).train()
    cfg.MODEL.WEIGHTS = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    rows = diagnose.diagnose_classifier(cfg, "diag_fm_r10_test", str(tmp_path / "diag"))
    # both passes log their progress (60 test images in batches of TEST.CLASSIFICATION's size)
    for label in ("features", "logits"):
        lines = [m for m in progress_log if m.startswith(f"diagnose: {label}: inference done ")]
        assert lines and lines[-1].endswith(" ETA=0:00:00")
    counts = [r["train_count"] for r in rows]
    assert counts == sorted(counts, reverse=True) and len(rows) == 10
    assert all(r["class"] == FASHION_MNIST_CLASSES[r["class_id"]] for r in rows)  # names
    # the shot group of each class (TEST.CLASSIFICATION thresholds), shaded in the picture
    assert [r["group"] for r in rows] == shot_groups(
        counts, cfg.TEST.CLASSIFICATION.MANY_THRESHOLD, cfg.TEST.CLASSIFICATION.FEW_THRESHOLD)
    with open(tmp_path / "diag" / "per_class.csv") as f:
        table = list(csv.DictReader(f))
    assert {"feature_norm", "cos_head_direction", "weight_norm", "accuracy_no_tde",
            "accuracy_tde_alpha_1"} <= set(table[0])
    assert all(np.isfinite(float(r["feature_norm"])) and np.isfinite(float(r["weight_norm"]))
               for r in table)
    assert (tmp_path / "diag" / "per_class.png").stat().st_size > 1000
    # A linear classifier (the same weights): TDE does not apply, so there is no TDE column.
    cfg.MODEL.TDE.CLASSIFIER, cfg.MODEL.TDE.TEST_TDE = "linear", False
    rows = diagnose.diagnose_classifier(cfg, "diag_fm_r10_test", str(tmp_path / "diag_linear"))
    assert len(rows) == 10 and not any("_tde_alpha_" in k for k in rows[0])


def test_per_class_diagnostics_of_a_detector(tiny_detector, tmp_path, monkeypatch,
                                             progress_log):
    cfg, model, _, weights = tiny_detector
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS, cfg.DATASETS.TEST = weights, ("tools_lvis_val",)
    cfg.OUTPUT_DIR = str(tmp_path / "eval")
    backbone = type(model.backbone)
    passes = []
    original = backbone.forward
    monkeypatch.setattr(backbone, "forward", lambda self, x: passes.append(len(x))
                        or original(self, x))
    rows = diagnose.diagnose_detector(cfg, "tools_lvis_val", str(tmp_path / "diag"))
    monkeypatch.undo()
    for label in ("ground-truth box features", "detections with and without TDE"):
        assert f"diagnose: {label}: inference done 4/4. " in "\n".join(progress_log)
    # 4 images: one pass for the ground-truth boxes' features, one for AP with and without TDE
    assert sum(passes) == 8
    assert not (tmp_path / "diag" / "tde").exists()  # nothing evaluated or written per setting
    counts = [r["train_images"] for r in rows]
    assert len(rows) == 6 and counts == sorted(counts, reverse=True)
    # LVIS's frequency group of each class (its APr / APc / APf), shaded in the picture
    frequency = {name: f for _, name, f, _ in TINY_CATEGORIES}
    assert [r["frequency"] for r in rows] == [frequency[r["class"]] for r in rows]
    assert {r["frequency"] for r in rows} == {"r", "c", "f"}
    assert all(np.isfinite(r["weight_norm"]) for r in rows)
    assert all(np.isfinite(r["feature_norm_stage0"]) and -1 <= r["cos_head_direction_stage2"] <= 1
               for r in rows if r["eval_instances"] > 0)
    # The mean of the per-category APs is LVIS's AP, as the evaluator reports it.
    for p in model.roi_heads.box_predictor:
        p.test_tde = False
    overall = Trainer.test(cfg, model)["segm"]["AP"]
    for p in model.roi_heads.box_predictor:
        p.test_tde = True
    per_class = [r["segm_AP_no_tde"] for r in rows]
    assert np.nanmean(per_class) == pytest.approx(overall, abs=1e-6)
    with_tde = Trainer.test(cfg, model)["segm"]["AP"]  # alpha 1.5, the config's
    assert with_tde != overall  # so the next line could fail
    assert np.nanmean([r["segm_AP_tde_alpha_1.5"] for r in rows]) == pytest.approx(with_tde,
                                                                                  abs=1e-6)
    header = (tmp_path / "diag" / "per_class.csv").read_text().splitlines()[0]
    assert "segm_AP_tde_alpha_1.5" in header and "cos_head_direction_stage1" in header


def test_training_images_per_class_count_every_training_dataset():
    from detectron2.data import DatasetCatalog

    def image(*classes):
        return {"file_name": f"{classes}.jpg", "annotations": [{"category_id": c}
                                                               for c in classes]}
    DatasetCatalog.register("diag_counts_a", lambda: [image(0, 0, 2), image(2), image()])
    DatasetCatalog.register("diag_counts_b", lambda: [image(1, 2), {"file_name": "x.jpg"}])
    DatasetCatalog.register("diag_counts_bad", lambda: [image(1), image(0, 3)])
    try:
        # an image counts once per class it has, whatever its number of boxes of that class
        assert diagnose.train_images_per_class(["diag_counts_a"], 4).tolist() == [1, 0, 2, 0]
        assert diagnose.train_images_per_class(["diag_counts_a", "diag_counts_b"],
                                               4).tolist() == [1, 1, 3, 0]
        with pytest.raises(SystemExit, match=r"'diag_counts_bad', image \(0, 3\)\.jpg: class "
                                             r"ids \[3\] are not in \[0, 3\)"):
            diagnose.train_images_per_class(["diag_counts_bad"], 3)
        with pytest.raises(SystemExit, match="DATASETS.TRAIN is empty"):
            diagnose.train_images_per_class([], 3)
    finally:
        for name in ("diag_counts_a", "diag_counts_b", "diag_counts_bad"):
            DatasetCatalog.remove(name)


def test_linear_detector_has_no_tde_column(tiny_detector, tmp_path):
    cfg, _, _, weights = tiny_detector
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS, cfg.DATASETS.TEST = weights, ("tools_lvis_val",)
    cfg.MODEL.TDE.CLASSIFIER, cfg.MODEL.TDE.TEST_TDE = "linear", False
    cfg.OUTPUT_DIR = str(tmp_path / "eval")
    rows = diagnose.diagnose_detector(cfg, "tools_lvis_val", str(tmp_path / "diag"))
    assert len(rows) == 6 and "segm_AP_no_tde" in rows[0]
    assert not any("_tde_alpha_" in k for k in rows[0])
    assert not (tmp_path / "diag" / "tde").exists()  # no evaluation with TDE was attempted


def test_training_metrics_after_a_resume_keep_the_last_run_of_each_iteration(tmp_path):
    """A run stopped after iteration 9 and resumed from its checkpoint at iteration 5:
    metrics.json holds iterations 5 to 9 twice; the plot has each once, the resumed run's."""
    lines = [json.dumps({"iteration": i, "tde/stage0/ema_norm": float(i), "lr": 0.1})
             for i in range(10)]
    lines += [json.dumps({"iteration": i, "tde/stage0/ema_norm": 100.0 + i}) for i in range(5, 13)]
    metrics = tmp_path / "metrics.json"
    metrics.write_text("\n".join(lines) + "\n")
    series = diagnose.plot_training_metrics(str(metrics), str(tmp_path / "plot"))
    points = series["tde/stage0/ema_norm"]
    assert [it for it, _ in points] == list(range(13))
    assert [v for _, v in points] == [0.0, 1, 2, 3, 4] + [100.0 + i for i in range(5, 13)]
    assert (tmp_path / "plot" / "training_metrics.png").stat().st_size > 1000
