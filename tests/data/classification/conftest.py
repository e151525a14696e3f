"""Tiny generated long-tailed data (CIFAR-format pickles and an image folder with split files)."""
import pytest

from tde_det.data.classification.synthetic import write_cifar_pickles, write_image_folder


@pytest.fixture(scope="session")
def tiny_cifar_root(tmp_path_factory):
    """CIFAR-10 pickles: 60 training and 10 test images per class."""
    root = tmp_path_factory.mktemp("cifar")
    write_cifar_pickles(str(root), "cifar10", per_class=60, test_per_class=10)
    return root


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """PNG images + train/val/test split files (long-tailed train split, ratio 10)."""
    root = tmp_path_factory.mktemp("folder")
    write_image_folder(str(root), num_classes=10, per_class=30, ratio=10, val_per_class=2,
                       test_per_class=3)
    return root
