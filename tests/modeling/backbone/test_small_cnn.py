"""The small CNN backbone for 28x28 images."""
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone

import tde_det  # noqa: F401  (registration)
from tde_det import add_tde_config
from tde_det.modeling.backbone import SmallCNN


def test_builds_from_config_with_one_grey_channel():
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "build_small_cnn_backbone"
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = [72.9], [90.0]
    cfg.MODEL.SMALL_CNN.CHANNELS = [8, 16, 24]
    cfg.MODEL.SMALL_CNN.OUT_FEATURES = ["stage2", "stage3"]
    net = build_backbone(cfg)
    out = net(torch.rand(2, 1, 28, 28))
    assert out["stage2"].shape == (2, 16, 7, 7) and out["stage3"].shape == (2, 24, 7, 7)
    shapes = net.output_shape()
    assert shapes["stage3"].channels == 24 and shapes["stage3"].stride == 4
    assert shapes["stage2"].stride == 4
    assert (out["stage3"] >= 0).all()  # post-ReLU feature


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="OUT_FEATURES"):
        SmallCNN(1, [8, 16], out_features=["stage3"])
    with pytest.raises(ValueError, match="CHANNELS"):
        SmallCNN(1, [])
