"""Built-in classification datasets, registered under ``$DETECTRON2_DATASETS`` (default
``./datasets``, like Detectron2's own)::

    $DETECTRON2_DATASETS/
      imagenet/train/n01440764/*.JPEG ...     # ImageNet-2012 (ILSVRC) train and val images
      imagenet/val/n01440764/*.JPEG ...       # (val in class folders, as ImageNet_LT_test.txt)
      ImageNet_LT/ImageNet_LT_{train,val,test}.txt
      cifar-10-batches-py/                    # CIFAR python pickles
      cifar-100-python/
      fashion-mnist/                          # optional: the Fashion-MNIST IDX files (else
                                              # DATASETS.FASHION_MNIST.ROOT, else Debian's folder)

The root is read when a dataset is loaded (not at import), so ``DETECTRON2_DATASETS`` may be
set after importing. Names: ``imagenet_lt_{train,val,test}``;
``cifar10_lt_r{10,50,100}_{train,val,test}`` and ``cifar100_lt_r{10,50,100}_{train,val,test}``
(r = imbalance ratio); ``fashion_mnist_lt_r{10,50,100}_s{0..9}_{train,val,test}`` (s = seed
of the class order and of the image draw, see :mod:`.fashion_mnist`).
"""
import os
from typing import Dict, List, Optional, Tuple

from .cifar import register_cifar_lt
from .fashion_mnist import register_fashion_mnist_lt
from .long_tailed import datasets_root, register_classification_dataset
from .split_file import load_split_file

__all__ = ["CIFAR_LT_RATIOS", "CIFAR_VAL_PER_CLASS", "imagenet_lt_paths",
           "register_all_imagenet_lt", "register_all_cifar_lt", "FASHION_MNIST_LT_SEEDS",
           "FASHION_MNIST_VAL_PER_CLASS", "register_all_fashion_mnist_lt"]

CIFAR_LT_RATIOS = (10, 50, 100)
# Balanced validation images per class held out from the CIFAR training pool.
CIFAR_VAL_PER_CLASS = {"cifar10": 50, "cifar100": 10}
# Fashion-MNIST-LT: registered seeds, and balanced validation images per class (never in train).
FASHION_MNIST_LT_SEEDS = tuple(range(10))
FASHION_MNIST_VAL_PER_CLASS = 100


def imagenet_lt_paths(split: str, root: Optional[str] = None) -> Tuple[str, str]:
    """(image root, split file) of ``imagenet_lt_<split>`` under ``root`` (None: the current
    :func:`datasets_root`)."""
    root = root or datasets_root()
    return (os.path.join(root, "imagenet"),
            os.path.join(root, "ImageNet_LT", f"ImageNet_LT_{split}.txt"))


def register_all_imagenet_lt(root: Optional[str] = None) -> None:
    """Register ``imagenet_lt_{train,val,test}`` (1000 classes; groups from the train split),
    their files resolved under ``root`` (None: ``$DETECTRON2_DATASETS``) when loaded."""
    for split in ("train", "val", "test"):
        name = f"imagenet_lt_{split}"

        def load(split: str = split, name: str = name) -> List[Dict]:
            image_root, split_file = imagenet_lt_paths(split, root)
            return load_split_file(split_file, image_root, 1000, name)

        register_classification_dataset(name, load, num_classes=1000,
                                        train_dataset="imagenet_lt_train")


def register_all_cifar_lt(root: Optional[str] = None) -> None:
    """Register CIFAR-10/100-LT at every ratio, under ``root`` (None: ``$DETECTRON2_DATASETS``
    when loaded)."""
    for kind in ("cifar10", "cifar100"):
        for ratio in CIFAR_LT_RATIOS:
            register_cifar_lt(f"{kind}_lt_r{ratio}", root, kind, ratio, CIFAR_VAL_PER_CLASS[kind])


def register_all_fashion_mnist_lt() -> None:
    for ratio in CIFAR_LT_RATIOS:
        for seed in FASHION_MNIST_LT_SEEDS:
            register_fashion_mnist_lt(f"fashion_mnist_lt_r{ratio}_s{seed}", ratio, seed,
                                      FASHION_MNIST_VAL_PER_CLASS)


register_all_imagenet_lt()
register_all_cifar_lt()
register_all_fashion_mnist_lt()
