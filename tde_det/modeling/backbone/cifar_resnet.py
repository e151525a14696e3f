"""BBN's CIFAR ResNet-32 (Zhou et al., CVPR 2020) as a Detectron2 backbone.

The paper's CIFAR-LT experiments use BBN's ResNet-32: a 3x3 stem with 16 channels, three stages
of ``n = (depth - 2) / 6`` basic blocks (16, 32, 64 channels), where the last stage keeps
``n - 1`` shared blocks and then splits into two parallel 64-channel blocks whose outputs are
concatenated to 128 channels. With K = 2 heads (eq. 7) each head is one branch.
"""
from typing import List

import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

__all__ = ["CifarBasicBlock", "CifarResNet", "build_cifar_resnet_backbone"]


class CifarBasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual shortcut, ReLU after the sum.

    ``shortcut="A"``: when the shape changes, the identity is subsampled by ``stride`` and
    zero-padded in channels (BBN, He et al. 2016 option A); ``"B"``: 1x1 convolution + norm.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, norm: str = "BN",
                 shortcut: str = "A"):
        super().__init__()
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False,
                            norm=get_norm(norm, out_channels))
        self.conv2 = Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False,
                            norm=get_norm(norm, out_channels))
        self.stride = stride
        self.pad_channels = 0
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            if shortcut == "A":
                self.pad_channels = out_channels - in_channels
            elif shortcut == "B":
                self.shortcut = Conv2d(in_channels, out_channels, 1, stride=stride, bias=False,
                                       norm=get_norm(norm, out_channels))
            else:
                raise ValueError(
                    f"MODEL.CIFAR_RESNET.SHORTCUT must be 'A' or 'B', got {shortcut!r}")
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def _identity(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is not None:
            return self.shortcut(x)
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad_channels:
            half = self.pad_channels // 2
            x = F.pad(x, (0, 0, 0, 0, half, self.pad_channels - half))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        out = self.conv2(out)
        return F.relu(out + self._identity(x))


class CifarResNet(Backbone):
    """BBN ResNet for 32x32 images; outputs "stem", "res2", "res3", "res4", "res5".

    "res5" is the concatenation of the ``num_branches`` parallel last blocks
    (``num_branches * 64`` channels, stride 4).
    """

    def __init__(self, depth: int = 32, num_branches: int = 2, norm: str = "BN",
                 shortcut: str = "A", in_channels: int = 3, out_features: List[str] = ("res5",)):
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"MODEL.CIFAR_RESNET.DEPTH must be 6n + 2 with n >= 1 (e.g. 20, 32, "
                             f"44, 56, 110), got {depth}")
        if num_branches < 1:
            raise ValueError(f"MODEL.CIFAR_RESNET.NUM_BRANCHES must be >= 1, got {num_branches}")
        n = (depth - 2) // 6
        self.stem = Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False,
                           norm=get_norm(norm, 16), activation=F.relu)
        nn.init.kaiming_normal_(self.stem.weight)

        def stage(cin, cout, blocks, stride):
            layers = [CifarBasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1,
                                      norm, shortcut) for i in range(blocks)]
            return nn.Sequential(*layers)

        self.res2 = stage(16, 16, n, 1)
        self.res3 = stage(16, 32, n, 2)
        # Last stage: n - 1 shared blocks (the first one strided) ...
        self.res4 = stage(32, 64, n - 1, 2) if n > 1 else nn.Identity()
        # ... then the parallel branches (the first block of the stage when n == 1).
        branch_in, branch_stride = (64, 1) if n > 1 else (32, 2)
        self.branches = nn.ModuleList(
            CifarBasicBlock(branch_in, 64, branch_stride, norm, shortcut)
            for _ in range(num_branches)
        )
        channels = {"stem": 16, "res2": 16, "res3": 32, "res4": 64 if n > 1 else 32,
                    "res5": 64 * num_branches}
        strides = {"stem": 1, "res2": 1, "res3": 2, "res4": 4 if n > 1 else 2, "res5": 4}
        out_features = list(out_features)
        for name in out_features:
            if name not in channels:
                raise ValueError(f"MODEL.CIFAR_RESNET.OUT_FEATURES: unknown output {name!r}; "
                                 f"available: {sorted(channels)}")
        self._out_features = out_features
        self._out_feature_channels = {k: channels[k] for k in out_features}
        self._out_feature_strides = {k: strides[k] for k in out_features}

    def forward(self, x: torch.Tensor):
        outputs = {}
        x = self.stem(x)
        for name in ("stem", "res2", "res3", "res4"):
            if name != "stem":
                x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        if "res5" in self._out_features:
            outputs["res5"] = torch.cat([branch(x) for branch in self.branches], dim=1)
        return outputs

    def output_shape(self):
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name],
                            stride=self._out_feature_strides[name])
            for name in self._out_features
        }


@BACKBONE_REGISTRY.register()
def build_cifar_resnet_backbone(cfg, input_shape: ShapeSpec) -> CifarResNet:
    """Build the BBN CIFAR ResNet from ``cfg.MODEL.CIFAR_RESNET``."""
    c = cfg.MODEL.CIFAR_RESNET
    return CifarResNet(depth=c.DEPTH, num_branches=c.NUM_BRANCHES, norm=c.NORM,
                       shortcut=c.SHORTCUT, in_channels=input_shape.channels,
                       out_features=c.OUT_FEATURES)
