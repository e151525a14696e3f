"""A tiny generated long-tailed dataset, for tests and for trying the workflows without
downloading anything::

    python -m tde_det.data.classification.synthetic --out datasets_tiny

writes, under ``--out``:
- ``cifar-10-batches-py/`` (and ``cifar-100-python/`` with ``--cifar100``): CIFAR-format
  pickles with ``--per-class`` training and ``--test-per-class`` test images per class, so that
  ``DETECTRON2_DATASETS=<out>`` serves ``cifar10_lt_r{10,50,100}_*``;
- ``folder/``: the long-tailed subset (ratio ``--ratio``) as PNG files with
  ``train.txt`` / ``val.txt`` / ``test.txt`` split files (for ``DATASETS.SPLIT_FILE``);
- ``fashion-mnist/``: Fashion-MNIST-format gzipped IDX files (28x28 grey), so that
  ``DATASETS.FASHION_MNIST.ROOT <out>/fashion-mnist`` stands in for the real data.
Images are 32x32: a class-specific colour and stripe pattern plus noise (learnable); the grey
28x28 ones are their centre crops averaged over the colour channels.
"""
import argparse
import gzip
import os
import pickle
import struct
from typing import Tuple

import numpy as np
from PIL import Image

from .long_tailed import long_tailed_indices

__all__ = ["make_images", "write_cifar_pickles", "write_fashion_mnist_idx", "write_idx",
           "write_image_folder", "write_tiny_datasets"]


def make_images(labels: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """[N, 32, 32, 3] uint8 images whose colour and stripes depend on the label."""
    rng = np.random.RandomState(seed)
    palette = np.random.RandomState(1234).randint(40, 216, size=(num_classes, 3))
    yy = np.arange(32)[:, None]
    images = np.empty((len(labels), 32, 32, 3), dtype=np.uint8)
    for i, c in enumerate(labels):
        stripes = ((yy + np.arange(32)[None, :] * (c % 3)) // (2 + c % 5)) % 2
        img = palette[c][None, None, :] + 30 * stripes[..., None] + rng.normal(0, 20, (32, 32, 3))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images


def _labels(per_class: int, num_classes: int, seed: int) -> np.ndarray:
    labels = np.repeat(np.arange(num_classes), per_class)
    return labels[np.random.RandomState(seed).permutation(len(labels))]


def write_cifar_pickles(root: str, kind: str = "cifar10", per_class: int = 60,
                        test_per_class: int = 10, seed: int = 0) -> Tuple[str, np.ndarray]:
    """Write CIFAR-format pickles (str keys) under ``root``; return (folder, train labels)."""
    num_classes = 10 if kind == "cifar10" else 100
    folder = os.path.join(root, "cifar-10-batches-py" if kind == "cifar10" else "cifar-100-python")
    os.makedirs(folder, exist_ok=True)
    key = "labels" if kind == "cifar10" else "fine_labels"
    train = _labels(per_class, num_classes, seed)
    test = _labels(test_per_class, num_classes, seed + 1)

    def dump(name, labels, s):
        data = make_images(labels, num_classes, s).transpose(0, 3, 1, 2).reshape(len(labels), -1)
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({"data": data, key: labels.tolist()}, f)

    if kind == "cifar10":
        parts = np.array_split(np.arange(len(train)), 5)
        for i, idx in enumerate(parts):
            dump(f"data_batch_{i + 1}", train[idx], seed + 10 + i)
        dump("test_batch", test, seed + 20)
    else:
        dump("train", train, seed + 10)
        dump("test", test, seed + 20)
    return folder, train


def write_image_folder(root: str, num_classes: int = 10, per_class: int = 60, ratio: float = 10,
                       val_per_class: int = 5, test_per_class: int = 10, seed: int = 0) -> str:
    """Long-tailed train split + balanced val/test splits as PNGs and split files in ``root``."""
    os.makedirs(root, exist_ok=True)
    pool = _labels(per_class, num_classes, seed)
    splits = {
        "train": pool[long_tailed_indices(pool, num_classes, ratio)],
        "val": _labels(val_per_class, num_classes, seed + 1),
        "test": _labels(test_per_class, num_classes, seed + 2),
    }
    for s, (split, labels) in enumerate(splits.items()):
        images = make_images(labels, num_classes, seed + 30 + s)
        lines = []
        for i, (img, c) in enumerate(zip(images, labels)):
            rel = os.path.join(split, f"class_{c:03d}", f"{i:05d}.png")
            os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
            Image.fromarray(img).save(os.path.join(root, rel))
            lines.append(f"{rel} {c}\n")
        with open(os.path.join(root, f"{split}.txt"), "w") as f:
            f.writelines(lines)
    return root


def write_idx(path: str, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (the MNIST / Fashion-MNIST format)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def write_fashion_mnist_idx(root: str, per_class: int = 130, test_per_class: int = 10,
                            seed: int = 0) -> str:
    """Write Fashion-MNIST-format IDX files (10 classes, 28x28 grey) under ``root``."""
    os.makedirs(root, exist_ok=True)
    for prefix, n, s in (("train", per_class, seed), ("t10k", test_per_class, seed + 1)):
        labels = _labels(n, 10, s)
        grey = make_images(labels, 10, s)[:, 2:30, 2:30].mean(axis=3).round().astype(np.uint8)
        write_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"), grey)
        write_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz"), labels)
    return root


def write_tiny_datasets(out: str, per_class: int = 60, test_per_class: int = 10,
                        ratio: float = 10, cifar100: bool = False) -> None:
    write_cifar_pickles(out, "cifar10", per_class, test_per_class)
    if cifar100:
        write_cifar_pickles(out, "cifar100", per_class, test_per_class)
    write_image_folder(os.path.join(out, "folder"), 10, per_class, ratio,
                       test_per_class=test_per_class)
    write_fashion_mnist_idx(os.path.join(out, "fashion-mnist"), per_class + 100, test_per_class)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--per-class", type=int, default=60)
    p.add_argument("--test-per-class", type=int, default=10)
    p.add_argument("--ratio", type=float, default=10)
    p.add_argument("--cifar100", action="store_true")
    a = p.parse_args(argv)
    write_tiny_datasets(a.out, a.per_class, a.test_per_class, a.ratio, a.cifar100)
    print(f"wrote tiny long-tailed datasets to {a.out}")


if __name__ == "__main__":
    main()
