"""Image-classification data: ImageNet-LT, CIFAR-10/100-LT, Fashion-MNIST-LT, image folder +
split files.

Importing this registers the built-in datasets (see :mod:`.builtin` for the layout under
``$DETECTRON2_DATASETS``).
"""
from . import builtin as _builtin  # noqa: F401  (registration)
from .build import (
    build_classification_test_loader,
    build_classification_train_loader,
    get_classification_dataset_dicts,
    register_split_file_datasets_from_config,
)
from .cifar import load_cifar, register_cifar_lt
from .fashion_mnist import (
    FASHION_MNIST_CLASSES,
    fashion_mnist_lt_splits,
    load_fashion_mnist,
    register_fashion_mnist_lt,
    set_fashion_mnist_root,
)
from .long_tailed import (
    SHOT_GROUPS,
    array_dataset_dicts,
    balanced_splits,
    held_out_indices,
    long_tailed_counts,
    long_tailed_indices,
    register_classification_dataset,
    shot_groups,
    train_class_counts,
)
from .mapper import ClassificationDatasetMapper, build_classification_augmentation
from .split_file import load_split_file, register_split_file_dataset
from .transforms import CenterCrop, ColorJitter, PadRandomCrop, RandomResizedCrop

__all__ = [
    "FASHION_MNIST_CLASSES", "fashion_mnist_lt_splits", "load_fashion_mnist",
    "register_fashion_mnist_lt", "set_fashion_mnist_root", "SHOT_GROUPS", "CenterCrop",
    "ClassificationDatasetMapper", "ColorJitter", "PadRandomCrop", "balanced_splits",
    "RandomResizedCrop", "array_dataset_dicts", "build_classification_augmentation",
    "build_classification_test_loader", "build_classification_train_loader",
    "get_classification_dataset_dicts", "held_out_indices", "load_cifar", "load_split_file",
    "long_tailed_counts", "long_tailed_indices", "register_cifar_lt",
    "register_classification_dataset", "register_split_file_dataset",
    "register_split_file_datasets_from_config", "shot_groups", "train_class_counts",
]
