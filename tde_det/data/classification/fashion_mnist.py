"""Fashion-MNIST-LT: a long-tailed training split of Fashion-MNIST, a balanced validation split
and the untouched test set (real images reachable offline; the README's "Evidence" section).

The data are the original IDX files (``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``,
60,000 + 10,000 grey 28x28 images, 10 classes, 6,000 training images per class), e.g. from
Debian's package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).

Splits of ``fashion_mnist_lt_r{ratio}_s{seed}`` (all deterministic given the seed):

- ``_val``: ``val_per_class`` (registered names: 100) images of every class, drawn at random
  (seeded) and set aside first (balanced, for choosing alpha; never training images);
- ``_train``: from the remaining ``6000 - val_per_class`` images per class (the train pool),
  the classes are ranked by a permutation drawn with the seed (which class is frequent is
  random: Fashion-MNIST's classes differ widely in difficulty, so label order would confound
  "tail" with "hard"); the class of rank r keeps ``int(n * (1/ratio)^(r/9))`` images, n the
  smallest class's pool (6000 - val_per_class: 5900 -> 59 at ratio 100), drawn at random
  (seeded) from its pool;
- ``_test``: the 10,000 test images.
"""
import gzip
import logging
import os
import struct
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

import numpy as np

from .long_tailed import (
    array_dataset_dicts,
    balanced_splits,
    long_tailed_indices,
    register_classification_dataset,
)

__all__ = ["DEBIAN_FASHION_MNIST_ROOT", "FASHION_MNIST_CLASSES", "fashion_mnist_lt_splits",
           "load_fashion_mnist", "register_fashion_mnist_lt", "resolve_fashion_mnist_root",
           "set_fashion_mnist_root"]

logger = logging.getLogger(__name__)

DEBIAN_FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"]
_NUM_CLASSES = 10
_FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
# Folder set from the config (DATASETS.FASHION_MNIST.ROOT); "" = automatic.
_ROOT = {"root": ""}


def set_fashion_mnist_root(root: str) -> None:
    """Use ``root`` for the IDX files ("" = automatic, see :func:`resolve_fashion_mnist_root`)."""
    _ROOT["root"] = root or ""


def resolve_fashion_mnist_root() -> str:
    """The folder of the IDX files: the configured one, else ``$DETECTRON2_DATASETS/fashion-mnist``
    if it exists, else Debian's ``/usr/share/datasets/fashion-mnist``."""
    if _ROOT["root"]:
        return _ROOT["root"]
    local = os.path.join(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")),
                         "fashion-mnist")
    return local if os.path.isdir(local) else DEBIAN_FASHION_MNIST_ROOT


def _idx_path(root: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}[.gz] not found in {root}. Install the data with "
        f"`apt-get install dataset-fashion-mnist` (files in {DEBIAN_FASHION_MNIST_ROOT}), or set "
        f"DATASETS.FASHION_MNIST.ROOT to the folder holding the IDX files")


def _read_idx(path: str, expected_ndim: int) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"cannot read the IDX file {path}: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    if ndim != expected_ndim:
        raise ValueError(f"{path}: expected {expected_ndim} dimensions, the header says {ndim}")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).copy()
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: the header announces shape {shape} "
                         f"({int(np.prod(shape))} bytes) but the file holds {body.size} bytes")
    return body.reshape(shape)


@lru_cache(maxsize=4)
def _load(root: str, train: bool) -> Tuple[np.ndarray, np.ndarray]:
    image_file, label_file = (_idx_path(root, s) for s in _FILES[train])
    images = _read_idx(image_file, 3)
    labels = _read_idx(label_file, 1).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{image_file} has {len(images)} images but {label_file} has "
                         f"{len(labels)} labels")
    bad = np.flatnonzero((labels < 0) | (labels >= _NUM_CLASSES))
    if len(bad):
        raise ValueError(f"{label_file}: label {labels[bad[0]]} of image {bad[0]} is out of "
                         f"range [0, {_NUM_CLASSES})")
    return images, labels


def load_fashion_mnist(root: str, train: bool) -> Tuple[np.ndarray, np.ndarray]:
    """(images [N, 28, 28] uint8, labels [N] int64) of the train or test IDX files in ``root``."""
    return _load(os.path.abspath(root), bool(train))


def fashion_mnist_lt_splits(labels: np.ndarray, imbalance_ratio: float, seed: int,
                            val_per_class: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train indices, val indices, class order) into the training pool (see module docstring).

    :func:`~.long_tailed.balanced_splits` first sets aside ``val_per_class`` images of every
    class (seeded), then :func:`~.long_tailed.long_tailed_indices` draws the long-tailed
    training split from the rest (seeded class order and images), so the two never share an
    image. ``class order[r]`` is the class of frequency rank r (0 = most frequent).
    """
    labels = np.asarray(labels, dtype=np.int64)
    pool_counts = np.bincount(labels, minlength=_NUM_CLASSES)
    if val_per_class < 0 or val_per_class >= pool_counts.min():
        raise ValueError(f"val_per_class must be in [0, {pool_counts.min()}) (the smallest class "
                         f"has {pool_counts.min()} training images), got {val_per_class}")
    pool, val, _ = balanced_splits(labels, _NUM_CLASSES, val_per_class, seed=seed)
    n_max = np.bincount(labels[pool], minlength=_NUM_CLASSES).min()  # every class can give it
    train = pool[long_tailed_indices(labels[pool], _NUM_CLASSES, imbalance_ratio, n_max=n_max,
                                     class_order_seed=seed, seed=seed)]
    order = np.random.RandomState(seed).permutation(_NUM_CLASSES)  # long_tailed_indices' ranks
    return np.sort(train), val, order


def register_fashion_mnist_lt(prefix: str, imbalance_ratio: float, seed: int,
                              val_per_class: int, root: Optional[str] = None) -> None:
    """Register ``<prefix>_train``, ``<prefix>_val`` and ``<prefix>_test``.

    The files are read when a split is first used, from ``root`` or, if None, the folder given by
    :func:`resolve_fashion_mnist_root` at that time.
    """

    def splits() -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        images, labels = load_fashion_mnist(root or resolve_fashion_mnist_root(), train=True)
        train_idx, val_idx, _ = fashion_mnist_lt_splits(labels, imbalance_ratio, seed,
                                                        val_per_class)
        return images, labels, train_idx, val_idx

    def train() -> List[Dict]:
        images, labels, idx, _ = splits()
        return array_dataset_dicts(images, labels, idx)

    def val() -> List[Dict]:
        images, labels, _, idx = splits()
        return array_dataset_dicts(images, labels, idx)

    def test() -> List[Dict]:
        return array_dataset_dicts(*load_fashion_mnist(root or resolve_fashion_mnist_root(),
                                                       train=False))

    common = dict(num_classes=_NUM_CLASSES, train_dataset=f"{prefix}_train",
                  class_names=FASHION_MNIST_CLASSES, imbalance_ratio=imbalance_ratio, seed=seed)
    for split, func in (("train", train), ("val", val), ("test", test)):
        register_classification_dataset(f"{prefix}_{split}", func, **common)
