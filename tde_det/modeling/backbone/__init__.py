"""Backbones of tde-det (ResNeXt/ResNet come from Detectron2's ``build_resnet_backbone``)."""
from .cifar_resnet import CifarBasicBlock, CifarResNet, build_cifar_resnet_backbone
from .small_cnn import SmallCNN, build_small_cnn_backbone

__all__ = ["CifarBasicBlock", "CifarResNet", "SmallCNN", "build_cifar_resnet_backbone",
           "build_small_cnn_backbone"]
