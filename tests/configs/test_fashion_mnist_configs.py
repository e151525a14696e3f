"""Every Fashion-MNIST-LT config builds a model and names datasets that exist."""
import os
import re

import numpy as np
import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

import tde_det  # noqa: F401  (registration)
from tde_det import add_tde_config
from tests.helpers.configs import CONFIG_DIR
from tests.helpers.configs import FASHION_MNIST_CONFIGS as CONFIGS


def test_all_variants_exist():
    for r in (10, 50, 100):
        for kind in ("baseline", "cosine", "capsule", "deconfound"):
            assert f"FashionMNIST-LT/r{r}_{kind}.yaml" in CONFIGS


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds(name):
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(os.path.join(CONFIG_DIR, name))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    assert model.classifier.in_features % cfg.MODEL.TDE.NUM_HEADS == 0
    assert cfg.SOLVER.MOMENTUM == 0.9
    kind = name.rsplit("_", 1)[-1][:-5]
    if kind in ("cosine", "capsule", "deconfound"):
        assert model.classifier.kind == kind and cfg.MODEL.TDE.TEST_TDE
    if kind == "baseline":
        assert model.classifier.kind == "linear" and not cfg.MODEL.TDE.TEST_TDE
    for ds in cfg.DATASETS.TRAIN + cfg.DATASETS.TEST:
        assert ds in DatasetCatalog.list()


@pytest.mark.parametrize("name", [c for c in CONFIGS if "/Base-" not in c])
def test_every_shot_group_has_classes(name):
    """The many / medium / few thresholds of each ratio's configs leave every group non-empty
    (the counts come from the real split code, on Fashion-MNIST's 6,000 images per class)."""
    from tde_det.data.classification.fashion_mnist import fashion_mnist_lt_splits

    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(os.path.join(CONFIG_DIR, name))
    ratio = int(re.search(r"/r(\d+)_", name).group(1))
    labels = np.repeat(np.arange(10), 6000)
    train, _, _ = fashion_mnist_lt_splits(labels, ratio, seed=0, val_per_class=100)
    counts = np.bincount(labels[train], minlength=10)
    c = cfg.TEST.CLASSIFICATION
    many, few = counts > c.MANY_THRESHOLD, counts < c.FEW_THRESHOLD
    assert many.sum() >= 2 and few.sum() >= 2 and (~many & ~few).sum() >= 2, (counts, c)
