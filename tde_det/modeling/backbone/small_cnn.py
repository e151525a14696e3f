"""A small plain CNN for 28x28 images (Fashion-MNIST-LT), as a Detectron2 backbone.

Stage s: two 3x3 convolutions (each followed by the norm and ReLU), then a 2x2 max-pool except
in the last stage (its output is the pooled map: stage1 has stride 2, stage2 and stage3 4).
With the default channels (32, 64, 128) a 28x28 grey image gives a
128 x 7 x 7 "stage3" map, globally pooled by the classifier into a 128-d post-ReLU feature
(like the ResNeXt feature of the paper: non-negative, so the head direction is meaningful).
"""
from typing import List, Sequence

import torch
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

__all__ = ["SmallCNN", "build_small_cnn_backbone"]


class SmallCNN(Backbone):
    """Plain VGG-style CNN; outputs ``stage1`` .. ``stage{len(channels)}``."""

    def __init__(self, in_channels: int, channels: Sequence[int], norm: str = "BN",
                 out_features: Sequence[str] = ("stage3",)):
        super().__init__()
        if not channels or any(int(c) <= 0 for c in channels):
            raise ValueError(f"MODEL.SMALL_CNN.CHANNELS must be a non-empty list of positive "
                             f"channel counts, got {list(channels)}")
        names = [f"stage{i + 1}" for i in range(len(channels))]
        unknown = [f for f in out_features if f not in names]
        if unknown or not out_features:
            raise ValueError(f"MODEL.SMALL_CNN.OUT_FEATURES {list(out_features)} must name some "
                             f"of {names}")
        self.stage_names = names
        self._out_features = list(out_features)
        self._out_feature_channels, self._out_feature_strides = {}, {}
        stride, prev = 1, in_channels
        for i, (name, c) in enumerate(zip(names, channels)):
            layers: List[nn.Module] = [
                Conv2d(prev, c, 3, padding=1, bias=not norm, norm=get_norm(norm, c),
                       activation=nn.ReLU(inplace=True)),
                Conv2d(c, c, 3, padding=1, bias=not norm, norm=get_norm(norm, c),
                       activation=nn.ReLU(inplace=True)),
            ]
            if i + 1 < len(channels):
                layers.append(nn.MaxPool2d(2))
                stride *= 2
            self._out_feature_channels[name] = int(c)
            self._out_feature_strides[name] = stride
            self.add_module(name, nn.Sequential(*layers))
            prev = int(c)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor):
        outputs = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def output_shape(self):
        return {name: ShapeSpec(channels=self._out_feature_channels[name],
                                stride=self._out_feature_strides[name])
                for name in self._out_features}


@BACKBONE_REGISTRY.register()
def build_small_cnn_backbone(cfg, input_shape: ShapeSpec) -> SmallCNN:
    """``MODEL.SMALL_CNN.*``; input channels = ``len(MODEL.PIXEL_MEAN)`` (1 for grey images)."""
    c = cfg.MODEL.SMALL_CNN
    return SmallCNN(input_shape.channels, list(c.CHANNELS), norm=c.NORM,
                    out_features=list(c.OUT_FEATURES))
