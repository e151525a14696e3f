"""A tiny Fashion-MNIST-LT (ratio 2) and the deconfound config on it, for CPU Trainer tests."""
import os

from detectron2.config import get_cfg

from tde_det import add_tde_config
from tde_det.data.classification import register_fashion_mnist_lt
from tde_det.data.classification.synthetic import write_fashion_mnist_idx

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_fashion_mnist_cfg(name: str, folder: str, test: bool = True, *opts):
    """configs/FashionMNIST-LT/r10_deconfound.yaml on "<name>_train" (and "<name>_test" when
    ``test``), 20 images per class written under ``folder``, CPU, batch 16, then ``opts``."""
    root = write_fashion_mnist_idx(os.path.join(folder, "fm"), per_class=20, test_per_class=2)
    register_fashion_mnist_lt(name, 2, seed=0, val_per_class=1, root=root)
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "FashionMNIST-LT/r10_deconfound.yaml"))
    cfg.merge_from_list([
        "DATASETS.TRAIN", f"('{name}_train',)", "DATASETS.TEST",
        f"('{name}_test',)" if test else "()", "SOLVER.IMS_PER_BATCH", "16",
        "DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", "cpu",
        "OUTPUT_DIR", os.path.join(folder, "out"), *opts])
    return cfg
