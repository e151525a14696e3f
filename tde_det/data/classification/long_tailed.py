"""Long-tailed subsets, shot groups and dataset registration shared by all classification data.

A classification dataset dict has "label" (int in [0, C)), "image_id", and either "file_name"
(an image file) or "image" (an HxW or HxWxC uint8 array, RGB). Its metadata holds
``num_classes``, ``evaluator_type="classification"``, ``train_dataset`` (the split whose
per-class counts define the many/medium/few groups) and optionally ``thing_classes`` (class
names; Detectron2's metadata name for them).
"""
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = [
    "long_tailed_counts",
    "long_tailed_indices",
    "held_out_indices",
    "balanced_splits",
    "array_dataset_dicts",
    "register_classification_dataset",
    "train_class_counts",
    "shot_groups",
    "SHOT_GROUPS",
    "datasets_root",
]

SHOT_GROUPS = ("many", "medium", "few")


def datasets_root() -> str:
    """``$DETECTRON2_DATASETS`` (default ``./datasets``) as set now: built-in datasets resolve
    their files when loaded, so the variable may be set after import."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def long_tailed_counts(n_max: float, num_classes: int, imbalance_ratio: float) -> List[int]:
    """Images kept per class: ``int(n_max * (1 / ratio) ** (i / (C - 1)))`` for class i.

    The exponential profile of the official CIFAR-LT code (class 0 keeps n_max, the last class
    n_max / ratio). CIFAR-10, n_max 5000, ratio 100: 5000, 2997, 1796, 1077, 645, 387, 232, 139,
    83, 50 (12,406 images).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if not imbalance_ratio >= 1:
        raise ValueError(f"imbalance ratio must be >= 1 (n_max / n_min), got {imbalance_ratio}")
    if num_classes == 1:
        return [int(n_max)]
    factor = 1.0 / imbalance_ratio
    return [int(n_max * factor ** (i / (num_classes - 1.0))) for i in range(num_classes)]


def long_tailed_indices(labels: Sequence[int], num_classes: int, imbalance_ratio: float,
                        n_max: Optional[float] = None,
                        class_order_seed: Optional[int] = None,
                        seed: Optional[int] = None) -> np.ndarray:
    """Indices (in the pool's order) of a long-tailed subset of a labelled pool.

    Class i keeps ``long_tailed_counts(n_max, C, ratio)[rank(i)]`` images of the pool: its
    *first* ones (deterministic) when ``seed`` is None, else ones drawn at random with
    ``np.random.RandomState(seed)``. ``n_max`` defaults to ``len(labels) / C`` (official code).
    ``rank(i) = i`` unless ``class_order_seed`` is given: then the classes are ranked by a
    permutation drawn with ``np.random.RandomState(class_order_seed)`` (which class is frequent
    is then random but reproducible).
    """
    labels = np.asarray(labels, dtype=np.int64)
    if n_max is None:
        n_max = len(labels) / num_classes
    counts = long_tailed_counts(n_max, num_classes, imbalance_ratio)
    order = np.arange(num_classes)
    if class_order_seed is not None:
        order = np.random.RandomState(class_order_seed).permutation(num_classes)
    rng = None if seed is None else np.random.RandomState(seed)
    keep = []
    for rank, cls in enumerate(order):
        idx = np.flatnonzero(labels == cls)
        if len(idx) < counts[rank]:
            raise ValueError(f"class {cls} has {len(idx)} images in the pool, but the long-tailed "
                             f"profile (n_max={n_max}, ratio={imbalance_ratio}) asks for "
                             f"{counts[rank]}")
        if rng is not None:
            idx = rng.permutation(idx)
        keep.append(idx[: counts[rank]])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def balanced_splits(labels: Sequence[int], num_classes: int, val_per_class: int,
                    test_per_class: int = 0, seed: Optional[int] = None
                    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train pool, val, test): sorted, pairwise disjoint indices into ``labels``.

    Every class gives ``val_per_class`` images to val and ``test_per_class`` to test (balanced
    splits) and the rest to the train pool, from which :func:`long_tailed_indices` then draws
    the long-tailed training split (``pool[long_tailed_indices(labels[pool], ...)]``): no
    validation or test image is ever a training image, the head class included. Which images
    go where: the last ones of each class (val before test) when ``seed`` is None, else a
    permutation drawn with ``np.random.RandomState(seed)``. A class with no image left for the
    pool is an error naming it.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if val_per_class < 0 or test_per_class < 0:
        raise ValueError(f"val_per_class and test_per_class must be >= 0, got {val_per_class} "
                         f"and {test_per_class}")
    rng = None if seed is None else np.random.RandomState(seed)
    held = val_per_class + test_per_class
    pool, val, test = [], [], []
    for cls in range(num_classes):
        idx = np.flatnonzero(labels == cls)
        if len(idx) <= held:
            raise ValueError(f"class {cls} has {len(idx)} images: none would be left for "
                             f"training after {val_per_class} validation and {test_per_class} "
                             f"test images")
        if rng is not None:
            idx = rng.permutation(idx)
        n = len(idx) - held
        pool.append(idx[:n])
        val.append(idx[n:n + val_per_class])
        test.append(idx[n + val_per_class:])
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in (pool, val, test))


def held_out_indices(labels: Sequence[int], num_classes: int, per_class: int) -> np.ndarray:
    """Indices of the *last* ``per_class`` images of each class (a balanced validation split).

    Disjoint from :func:`long_tailed_indices` for every class whose kept count plus
    ``per_class`` fits in the pool; a class that keeps all its images (class 0 keeps n_max)
    shares them. :func:`balanced_splits` gives splits that are disjoint for every class.
    """
    labels = np.asarray(labels, dtype=np.int64)
    keep = [np.flatnonzero(labels == c)[-per_class:] for c in range(num_classes)] \
        if per_class > 0 else []
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def array_dataset_dicts(images: np.ndarray, labels: Sequence[int],
                        indices: Optional[Sequence[int]] = None) -> List[Dict]:
    """Dataset dicts for in-memory images (``images[i]``: HxW or HxWxC uint8, RGB)."""
    indices = range(len(labels)) if indices is None else indices
    return [{"image": images[i], "label": int(labels[i]), "image_id": int(i)} for i in indices]


def register_classification_dataset(name: str, func: Callable[[], List[Dict]], *,
                                    num_classes: int, train_dataset: Optional[str] = None,
                                    class_names: Optional[Sequence[str]] = None,
                                    **metadata) -> None:
    """Register ``func`` in ``DatasetCatalog`` with the metadata the classification code reads.

    ``train_dataset``: the split whose per-class counts define the shot groups (default: itself).
    """
    DatasetCatalog.register(name, func)
    meta = dict(num_classes=int(num_classes), evaluator_type="classification",
                train_dataset=train_dataset or name, **metadata)
    if class_names is not None:
        if len(class_names) != num_classes:
            raise ValueError(f"{name}: {len(class_names)} class names for {num_classes} classes")
        meta["thing_classes"] = list(class_names)  # Detectron2's name for class names
    MetadataCatalog.get(name).set(**meta)


def train_class_counts(dataset_name: str) -> np.ndarray:
    """[C] training images per class for the shot groups of ``dataset_name``.

    Read from the metadata ``train_class_counts`` if set, else counted from the labels of the
    metadata's ``train_dataset``.
    """
    meta = MetadataCatalog.get(dataset_name)
    if hasattr(meta, "train_class_counts"):
        return np.asarray(meta.train_class_counts, dtype=np.int64)
    train_name = meta.get("train_dataset", dataset_name)
    num_classes = MetadataCatalog.get(train_name).get("num_classes", meta.get("num_classes"))
    labels = np.asarray([d["label"] for d in DatasetCatalog.get(train_name)], dtype=np.int64)
    return np.bincount(labels, minlength=num_classes)


def shot_groups(counts: Sequence[int], many_threshold: int = 100,
                few_threshold: int = 20) -> List[str]:
    """Per class: "many" (n > many_threshold), "few" (n < few_threshold) or "medium" (paper:
    > 100, < 20, 20-100 training images)."""
    if few_threshold > many_threshold + 1:
        raise ValueError(f"few threshold {few_threshold} exceeds many threshold "
                         f"{many_threshold} + 1: the groups would overlap")
    return ["many" if n > many_threshold else "few" if n < few_threshold else "medium"
            for n in counts]
