"""Backbones of tde-det (ResNeXt/ResNet come from Detectron2's ``build_resnet_backbone``)."""
from .cifar_resnet import CifarBasicBlock, CifarResNet, build_cifar_resnet_backbone

__all__ = ["CifarBasicBlock", "CifarResNet", "build_cifar_resnet_backbone"]
