"""Every Fashion-MNIST-LT config builds a model and names datasets that exist."""
import glob
import os

import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

import tde_det  # noqa: F401  (registration)
from tde_det import add_tde_config

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "configs")
CONFIGS = sorted(os.path.basename(p) for pat in ("Base-FashionMNIST-LT*.yaml",
                                                 "fashion_mnist_lt_*.yaml")
                 for p in glob.glob(os.path.join(CONFIG_DIR, pat)))


def test_all_variants_exist():
    for r in (10, 50, 100):
        for kind in ("baseline", "cosine", "capsule", "deconfound"):
            assert f"fashion_mnist_lt_r{r}_{kind}.yaml" in CONFIGS


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
