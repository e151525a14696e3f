"""Built-in classification datasets, registered under ``$DETECTRON2_DATASETS`` (default
``./datasets``, like Detectron2's own)::

    $DETECTRON2_DATASETS/
      imagenet/train/n01440764/*.JPEG ...     # ImageNet-2012 (ILSVRC) train and val images
      imagenet/val/n01440764/*.JPEG ...       # (val in class folders, as ImageNet_LT_test.txt)
      ImageNet_LT/ImageNet_LT_{train,val,test}.txt
      cifar-10-batches-py/                    # CIFAR python pickles
      cifar-100-python/

Names: ``imagenet_lt_{train,val,test}``; ``cifar10_lt_r{10,50,100}_{train,val,test}`` and
``cifar100_lt_r{10,50,100}_{train,val,test}`` (r = imbalance ratio).
"""
import os

from .cifar import register_cifar_lt
from .split_file import register_split_file_dataset

__all__ = ["CIFAR_LT_RATIOS", "CIFAR_VAL_PER_CLASS", "register_all_imagenet_lt",
           "register_all_cifar_lt"]

CIFAR_LT_RATIOS = (10, 50, 100)
# Balanced validation images per class held out from the CIFAR training pool.
CIFAR_VAL_PER_CLASS = {"cifar10": 50, "cifar100": 10}


def register_all_imagenet_lt(root: str) -> None:
    image_root = os.path.join(root, "imagenet")
    for split in ("train", "val", "test"):
        register_split_file_dataset(
            f"imagenet_lt_{split}", image_root,
            os.path.join(root, "ImageNet_LT", f"ImageNet_LT_{split}.txt"), num_classes=1000,
            train_dataset="imagenet_lt_train")


def register_all_cifar_lt(root: str) -> None:
    for kind in ("cifar10", "cifar100"):
        for ratio in CIFAR_LT_RATIOS:
            register_cifar_lt(f"{kind}_lt_r{ratio}", root, kind, ratio, CIFAR_VAL_PER_CLASS[kind])


_root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
register_all_imagenet_lt(_root)
register_all_cifar_lt(_root)
