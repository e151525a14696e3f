"""The config files of configs/, by dataset folder, as paths relative to configs/."""
import glob
import os

from tests.helpers.tools import REPO

CONFIG_DIR = os.path.join(REPO, "configs")


def configs(*folders: str):
    """The yaml files directly in ``folders`` of configs/ ("." for configs/ itself), sorted."""
    return sorted(os.path.relpath(p, CONFIG_DIR) for folder in folders
                  for p in glob.glob(os.path.join(CONFIG_DIR, folder, "*.yaml")))


def all_configs():
    """Every yaml file under configs/."""
    return sorted(os.path.relpath(p, CONFIG_DIR)
                  for p in glob.glob(os.path.join(CONFIG_DIR, "**", "*.yaml"), recursive=True))


# configs/lvis_cascade_tde.yaml stays at the top, where users run it.
LVIS_CONFIGS = configs("LVISv1", "LVISv0.5") + [c for c in configs(".") if c.startswith("lvis_")]
CLASSIFICATION_CONFIGS = configs("ImageNet-LT", "CIFAR-LT")
FASHION_MNIST_CONFIGS = configs("FashionMNIST-LT")
FASHION_MNIST_DET_CONFIGS = configs("FashionMNIST-LT-Det")
