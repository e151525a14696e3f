"""The one-pass alpha sweep for classification equals eval-only with each alpha."""
import math
import re

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg

import tde_det  # noqa: F401  (registration)
from tde_det import add_tde_config
from tde_det.data.classification import register_fashion_mnist_lt
from tde_det.data.classification.synthetic import write_fashion_mnist_idx
from tde_det.engine import Trainer
from tde_det.evaluation.alpha_sweep import (
    ClassificationCache,
    alpha_override,
    best_alpha,
    check_alphas,
    check_sweep_config,
    collect_classification_cache,
    reported_split_warning,
    sweep_classification,
    sweep_classification_dataset,
)
from tde_det.layers import NormalizedClassifier
from tde_det.layers.checks import tde_undefined


@pytest.mark.parametrize("kind", ["cosine", "capsule", "deconfound"])
def test_cached_terms_give_eq8(kind):
    torch.manual_seed(0)
    clf = NormalizedClassifier(8, 5, kind=kind, num_heads=2, tau=16, gamma=1 / 32)
    x, x_bar = torch.rand(6, 8), torch.rand(8)
    cache = ClassificationCache(clf(x), None, torch.zeros(6, dtype=torch.long))

    cache.bias = clf.tde_bias(x, x_bar)
    for alpha in (0.0, 0.7, 3.0):
        torch.testing.assert_close(cache.logits(alpha), clf.tde_logits(x, x_bar, alpha),
                                   rtol=0, atol=1e-5)


def test_rows_best_alpha_and_bad_alphas():
    # Two classes; image 0 (label 0) is won by class 0 only for alpha < 1.
    cache = ClassificationCache(total=torch.tensor([[2.0, 1.0], [0.0, 1.0]]),
                                bias=torch.tensor([[2.0, 0.0], [0.0, 0.0]]),
                                labels=torch.tensor([0, 1]))
    rows = sweep_classification(cache, [0, 0.25, 1.5], train_counts=[50, 5], many_threshold=10,
                                few_threshold=10, topk=1)
    assert [r["top1"] for r in rows] == [100.0, 100.0, 50.0]
    assert [r["many"] for r in rows] == [100.0, 100.0, 0.0] and rows[2]["few"] == 100.0
    assert rows[2]["per_class"] == [0.0, 100.0]
    assert best_alpha(rows)["alpha"] == 0.0  # ties -> the smallest alpha
    assert best_alpha(rows, "few")["alpha"] == 0.0
    with pytest.raises(ValueError, match="unknown metric"):
        best_alpha(rows, "AP")
    # a repeated alpha: one row, the first time it is given (no row of another alpha moves)
    again = sweep_classification(cache, [0, 0.25, 0.0, 1.5, 0.25, -0.0], train_counts=[50, 5],
                                 many_threshold=10, few_threshold=10, topk=1)
    assert repr(again) == repr(rows)  # ("medium" is NaN: no class in that group)
    assert check_alphas([1, 0.5, 1.0, -0.0, 0]) == [1.0, 0.5, 0.0]
    for bad in ([], [-1.0], [math.inf], [float("nan")]):
        with pytest.raises(ValueError, match=r"no alpha to sweep|every alpha \(eq. 8\) must be "
                                             r"a finite number >= 0.0"):
            check_alphas(bad)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = write_fashion_mnist_idx(str(tmp_path_factory.mktemp("fm")), per_class=40,
                                   test_per_class=12)
    register_fashion_mnist_lt("sweep_fm_r10", 10, seed=0, val_per_class=8, root=root)
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file("configs/FashionMNIST-LT/r10_deconfound.yaml")
    cfg.DATASETS.TRAIN = ("sweep_fm_r10_train",)
    cfg.DATASETS.TEST = ("sweep_fm_r10_test",)
    cfg.MODEL.SMALL_CNN.CHANNELS = [4, 8, 8]
    cfg.MODEL.DEVICE = "cpu"
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.IMS_PER_BATCH = 6, 1, 32
    cfg.TEST.CLASSIFICATION.MANY_THRESHOLD, cfg.TEST.CLASSIFICATION.FEW_THRESHOLD = 20, 8
    cfg.TEST.CLASSIFICATION.IMS_PER_BATCH = 16
    cfg.OUTPUT_DIR = str(tmp_path_factory.mktemp("out"))
    trainer = Trainer(cfg)
    trainer.train()
    return cfg, trainer.model


def _loader(cfg):
    return Trainer.build_test_loader(cfg, "sweep_fm_r10_test")


def test_each_row_equals_eval_only_with_that_alpha(trained):
    cfg, model = trained
    alphas = [0.0, 0.5, 1.5, 3.0]
    rows, cache = sweep_classification_dataset(cfg, model, "sweep_fm_r10_test", alphas,
                                               _loader(cfg))
    assert len(cache.labels) == 120 and torch.isfinite(cache.total).all()
    distinct = {tuple(r["per_class"]) for r in rows}
    assert len(distinct) > 1  # alpha changes the predictions, so the comparison can fail
    for row in rows:
        c = cfg.clone()
        c.defrost()
        c.MODEL.TDE.ALPHA = row["alpha"]
        model.alpha = row["alpha"]
        result = Trainer.test(c, model)["classification"]
        for key in ("top1", "top2", "many", "medium", "few"):
            assert row[key] == pytest.approx(result[key], abs=1e-9, nan_ok=True), (row, key)


def test_the_network_runs_once(trained, monkeypatch):
    cfg, model = trained
    calls = []
    original = model.backbone.forward
    monkeypatch.setattr(model.backbone, "forward", lambda x: calls.append(len(x)) or original(x))
    cache = collect_classification_cache(model, _loader(cfg))
    rows = sweep_classification(cache, np.linspace(0, 3, 31).tolist(), [40] * 10, 20, 8, 2)
    assert sum(calls) == 120 and len(rows) == 31


def test_sweeping_means_tde_on_whatever_test_tde(trained, monkeypatch):
    """A config with MODEL.TDE.TEST_TDE False: each row equals eval-only with TEST_TDE True."""
    from tde_det.evaluation import alpha_sweep

    cfg, model = trained
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.TDE.TEST_TDE = False
    logged = []
    monkeypatch.setattr(alpha_sweep.logger, "info", lambda msg, *a: logged.append(msg))
    check_sweep_config(cfg)
    assert "MODEL.TDE.TEST_TDE True" in logged[0]
    assert alpha_override(cfg, 1.5) == "MODEL.TDE.TEST_TDE True MODEL.TDE.ALPHA 1.5"
    cfg.MODEL.TDE.TEST_TDE = True
    assert alpha_override(cfg, 0.25) == "MODEL.TDE.ALPHA 0.25"
    cfg.MODEL.TDE.TEST_TDE = False
    model.test_tde = False
    try:
        rows, _ = sweep_classification_dataset(cfg, model, "sweep_fm_r10_test", [0.0, 3.0],
                                               _loader(cfg))
        plain = Trainer.test(cfg, model)["classification"]
        model.test_tde, model.alpha = True, 3.0
        tde = Trainer.test(cfg, model)["classification"]
    finally:
        model.test_tde, model.alpha = True, cfg.MODEL.TDE.ALPHA
    assert rows[0]["per_class"] != rows[1]["per_class"]  # TDE matters, so this could fail
    for row, result in zip(rows, (plain, tde)):
        for key in ("top1", "many", "medium", "few"):
            assert row[key] == pytest.approx(result[key], abs=1e-9, nan_ok=True), (row, key)


def test_a_linear_classifier_is_refused(trained):
    cfg = trained[0].clone()
    cfg.defrost()
    cfg.MODEL.TDE.CLASSIFIER, cfg.MODEL.TDE.TEST_TDE = "linear", False
    no_tde = re.escape(tde_undefined("linear", "there is no alpha to sweep"))
    with pytest.raises(ValueError, match=no_tde):
        check_sweep_config(cfg)
    model = Trainer.build_model(cfg)
    with pytest.raises(ValueError, match=no_tde):
        sweep_classification_dataset(cfg, model, "sweep_fm_r10_test", [0.0, 1.0], data_loader=[])
    # alpha = 0 is eq. 7, defined for a linear classifier (tools/benchmarks/real_lt.py uses it).
    (row,), _ = sweep_classification_dataset(cfg, model, "sweep_fm_r10_test", [0.0],
                                             _loader(cfg))
    assert row["alpha"] == 0.0 and 0 <= row["top1"] <= 100


def test_choosing_alpha_on_a_reported_split_is_warned_about():
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.DATASETS.TEST = ("lvis_v1_val",)
    assert "one of DATASETS.TEST" in reported_split_warning(cfg, "lvis_v1_val")
    assert "named as a test split" in reported_split_warning(cfg, "cifar10_lt_r100_test")
    assert "tde_det.data.detection.holdout" in reported_split_warning(cfg, "lvis_v1_val")
    for held_out in ("lvis_v1_train_heldout", "cifar10_lt_r100_val"):
        assert reported_split_warning(cfg, held_out) is None
