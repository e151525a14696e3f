"""CIFAR-10-LT / CIFAR-100-LT from the standard CIFAR python pickles.

``cifar-10-batches-py/`` (``data_batch_1`` .. ``data_batch_5``, ``test_batch``) and
``cifar-100-python/`` (``train``, ``test``), as downloaded from
https://www.cs.toronto.edu/~kriz/cifar.html. Each pickle holds ``data`` (N x 3072 uint8, the R,
G and B planes of a 32x32 image) and ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100).

Splits of ``register_cifar_lt``:
- train: the long-tailed subset of the 50,000 training images (:func:`long_tailed_indices`:
  class i keeps its first ``int(n_max * (1/ratio)^(i/(C-1)))`` images, n_max = 5000 / 500);
- val: the last ``val_per_class`` training images of each class (balanced). The official code
  selected models on the test set; this split keeps the test set for the final numbers. Class 0
  keeps all n_max images, so its validation images are also training images; for the other
  classes (whenever kept + val_per_class <= pool) the split is disjoint from train;
- test: the balanced 10,000-image test set.
"""
import os
import pickle
from typing import Optional, Tuple

import numpy as np

from .long_tailed import (
    array_dataset_dicts,
    datasets_root,
    held_out_indices,
    long_tailed_indices,
    register_classification_dataset,
)

__all__ = ["CIFAR10_CLASSES", "CIFAR_FILES", "load_cifar", "register_cifar_lt"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")

# folder, train files, test files, label key, number of classes
CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100),
}


def _load_pickle(path: str, label_key: str) -> Tuple[np.ndarray, np.ndarray]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CIFAR pickle not found: {path} (see docs/classification.md "
                                f"for the layout under $DETECTRON2_DATASETS)")
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="bytes")
        # The original files are Python 2 pickles (bytes keys); accept str keys too.
        entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
        data = np.asarray(entry["data"], dtype=np.uint8)
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except Exception as e:
        raise ValueError(f"{path} is not a CIFAR python pickle with 'data' and "
                         f"'{label_key}': {e!r}") from e
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise ValueError(f"{path}: expected 'data' of shape [N, 3072] and N labels, got "
                         f"{data.shape} and {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def load_cifar(root: str, kind: str, train: bool) -> Tuple[np.ndarray, np.ndarray]:
    """(images [N, 32, 32, 3] uint8 RGB, labels [N]) of a CIFAR split, in file order."""
    folder, train_files, test_files, label_key, num_classes = CIFAR_FILES[kind]
    parts = [_load_pickle(os.path.join(root, folder, f), label_key)
             for f in (train_files if train else test_files)]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        raise ValueError(f"{os.path.join(root, folder)}: label {labels[bad[0]]} of image "
                         f"{bad[0]} is out of range [0, {num_classes})")
    return images, labels


def register_cifar_lt(prefix: str, root: Optional[str], kind: str, imbalance_ratio: float,
                      val_per_class: int, class_order_seed: Optional[int] = None) -> None:
    """Register ``<prefix>_train``, ``<prefix>_val``, ``<prefix>_test`` (see module docstring).

    ``root``: the folder holding the CIFAR folders; None = :func:`datasets_root` at load time.
    """
    num_classes = CIFAR_FILES[kind][4]
    names = CIFAR10_CLASSES if kind == "cifar10" else None

    def train():
        images, labels = load_cifar(root or datasets_root(), kind, train=True)
        idx = long_tailed_indices(labels, num_classes, imbalance_ratio,
                                  class_order_seed=class_order_seed)
        return array_dataset_dicts(images, labels, idx)

    def val():
        images, labels = load_cifar(root or datasets_root(), kind, train=True)
        return array_dataset_dicts(images, labels,
                                   held_out_indices(labels, num_classes, val_per_class))

    def test():
        return array_dataset_dicts(*load_cifar(root or datasets_root(), kind, train=False))

    common = dict(num_classes=num_classes, train_dataset=f"{prefix}_train", class_names=names,
                  imbalance_ratio=imbalance_ratio)
    register_classification_dataset(f"{prefix}_train", train, **common)
    register_classification_dataset(f"{prefix}_val", val, **common)
    register_classification_dataset(f"{prefix}_test", test, **common)
