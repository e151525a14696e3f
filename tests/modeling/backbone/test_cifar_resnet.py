"""BBN ResNet-32 backbone: shapes, the two-branch last stage, configuration errors."""
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone

import tde_det  # noqa: F401  (registration)
from tde_det import add_tde_config
from tde_det.modeling.backbone import CifarResNet


def test_resnet32_outputs_two_branches_of_64_channels():
    torch.manual_seed(0)
    net = CifarResNet(depth=32, out_features=["res4", "res5"]).eval()
    assert net.output_shape()["res5"].channels == 128 and net.output_shape()["res5"].stride == 4
    # 3 stages of 5 basic blocks, the last stage: 4 shared + 2 parallel blocks.
    assert len(net.res2) == len(net.res3) == 5 and len(net.res4) == 4 and len(net.branches) == 2
    x = torch.randn(2, 3, 32, 32)
    out = net(x)
    assert out["res5"].shape == (2, 128, 8, 8)
    # With K = 2 heads, head k is exactly branch k.
    assert torch.equal(out["res5"][:, :64], net.branches[0](out["res4"]))
    assert torch.equal(out["res5"][:, 64:], net.branches[1](out["res4"]))
    assert (out["res5"] >= 0).all()  # post-ReLU


def test_built_from_config_with_option_b_shortcut():
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "build_cifar_resnet_backbone"
    cfg.MODEL.CIFAR_RESNET.DEPTH = 8
    cfg.MODEL.CIFAR_RESNET.SHORTCUT = "B"
    cfg.MODEL.CIFAR_RESNET.NUM_BRANCHES = 3
    net = build_backbone(cfg, ShapeSpec(channels=3))
    assert net(torch.randn(1, 3, 32, 32))["res5"].shape == (1, 192, 8, 8)


@pytest.mark.parametrize("kwargs, match", [
    ({"depth": 30}, "6n \\+ 2"),
    ({"out_features": ["res6"]}, "unknown output"),
    ({"shortcut": "C"}, "SHORTCUT"),
])
def test_bad_configuration_is_reported(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CifarResNet(**kwargs)
