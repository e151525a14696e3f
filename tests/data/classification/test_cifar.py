"""CIFAR-10-LT from CIFAR-format pickles: splits, counts, errors."""
import pickle

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from tde_det.data.classification import (
    load_cifar,
    long_tailed_counts,
    register_cifar_lt,
    train_class_counts,
)


def test_splits_and_train_counts(tiny_cifar_root):
    register_cifar_lt("tiny_c10_r10", str(tiny_cifar_root), "cifar10", 10, val_per_class=5)
    train = DatasetCatalog.get("tiny_c10_r10_train")
    counts = np.bincount([d["label"] for d in train], minlength=10)
    assert counts.tolist() == long_tailed_counts(60, 10, 10)
    assert train_class_counts("tiny_c10_r10_test").tolist() == counts.tolist()
    images, labels = load_cifar(str(tiny_cifar_root), "cifar10", train=True)
    # The first images of each class in file order, as 32x32x3 uint8 RGB arrays.
    first_of_class_9 = np.flatnonzero(labels == 9)[: counts[9]]
    kept_9 = [d["image_id"] for d in train if d["label"] == 9]
    assert kept_9 == first_of_class_9.tolist()
    assert train[0]["image"].shape == (32, 32, 3) and train[0]["image"].dtype == np.uint8
    assert np.array_equal(train[0]["image"], images[train[0]["image_id"]])
    val = DatasetCatalog.get("tiny_c10_r10_val")
    assert np.bincount([d["label"] for d in val]).tolist() == [5] * 10
    test = DatasetCatalog.get("tiny_c10_r10_test")
    assert len(test) == 100 and np.bincount([d["label"] for d in test]).tolist() == [10] * 10
    meta = MetadataCatalog.get("tiny_c10_r10_test")
    assert meta.num_classes == 10 and meta.thing_classes[0] == "airplane"
    assert meta.evaluator_type == "classification"


def test_python2_pickles_with_bytes_keys(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 4), ("test", 2)):
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": np.zeros((n, 3072), np.uint8),
                         b"fine_labels": [0, 99] * (n // 2)}, f)
    images, labels = load_cifar(str(tmp_path), "cifar100", train=True)
    assert images.shape == (4, 32, 32, 3) and labels.tolist() == [0, 99, 0, 99]


def test_missing_and_malformed_pickles_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        load_cifar(str(tmp_path), "cifar10", train=True)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    with open(folder / "test", "wb") as f:
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "fine_labels": [0, 1]}, f)
    with pytest.raises(ValueError, match="test: expected 'data' of shape"):
        load_cifar(str(tmp_path), "cifar100", train=False)
    with open(folder / "train", "wb") as f:
        pickle.dump({"data": np.zeros((1, 3072), np.uint8), "fine_labels": [100]}, f)
    with pytest.raises(ValueError, match="label 100 .* out of range"):
        load_cifar(str(tmp_path), "cifar100", train=True)
