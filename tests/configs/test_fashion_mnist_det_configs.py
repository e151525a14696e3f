"""The Fashion-MNIST-LT-Det configs build their Cascade Mask R-CNN and fit the generated data."""
import os

import pytest
from detectron2.config import get_cfg
from detectron2.modeling import build_model

import tde_det  # noqa: F401  (registration)
from tde_det import add_tde_config
from tde_det.data.classification.fashion_mnist import FASHION_MNIST_CLASSES
from tde_det.modeling.roi_heads import TDECascadeROIHeads
from tests.helpers.configs import CONFIG_DIR
from tests.helpers.configs import FASHION_MNIST_DET_CONFIGS as CONFIGS


def test_the_benchmarks_variants_exist():
    for kind in ("baseline", "deconfound"):
        assert f"FashionMNIST-LT-Det/cascade_R_18_{kind}.yaml" in CONFIGS


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds(name):
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(os.path.join(CONFIG_DIR, name))
    model = build_model(cfg)
    assert isinstance(model.roi_heads, TDECascadeROIHeads)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == len(FASHION_MNIST_CLASSES)
    assert cfg.INPUT.MASK_FORMAT == "bitmask"  # the generator writes RLE masks
    assert len(cfg.DATASETS.LVIS_CUSTOM.NAMES) == len(cfg.DATASETS.LVIS_CUSTOM.JSON_FILES) == 3
    kinds = {p.cls_score.kind for p in model.roi_heads.box_predictor}
    if name.endswith("_baseline.yaml"):
        assert kinds == {"linear"} and not cfg.MODEL.TDE.TEST_TDE
    else:
        assert kinds == {"deconfound"} and cfg.MODEL.TDE.TEST_TDE
        assert cfg.MODEL.TDE.BACKGROUND_EXEMPTED
