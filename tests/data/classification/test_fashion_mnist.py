"""Fashion-MNIST-LT: IDX reading, the long-tailed / validation / test splits, registration."""
import gzip

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

import tde_det  # noqa: F401  (registration)
from tde_det.data.classification import (
    fashion_mnist_lt_splits,
    load_fashion_mnist,
    register_fashion_mnist_lt,
    set_fashion_mnist_root,
    train_class_counts,
)
from tde_det.data.classification.fashion_mnist import resolve_fashion_mnist_root
from tde_det.data.classification.synthetic import write_fashion_mnist_idx, write_idx


@pytest.fixture(scope="module")
def idx_root(tmp_path_factory):
    return write_fashion_mnist_idx(str(tmp_path_factory.mktemp("fm")), per_class=130,
                                   test_per_class=7)


def test_reads_idx_files(idx_root):
    images, labels = load_fashion_mnist(idx_root, train=True)
    assert images.shape == (1300, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [130] * 10
    test_images, test_labels = load_fashion_mnist(idx_root, train=False)
    assert test_images.shape == (70, 28, 28) and np.bincount(test_labels).tolist() == [7] * 10


def test_counts_follow_the_cifar_lt_formula_on_a_seeded_class_order():
    # The real pool: 6,000 training images per class.
    labels = np.repeat(np.arange(10), 6000)
    train, val, order = fashion_mnist_lt_splits(labels, 100, seed=3, val_per_class=100)
    counts = np.bincount(labels[train], minlength=10)
    by_rank = counts[order]
    # int(5900 * 0.01 ** (r / 9)): the profile on the 5,900 images left after validation.
    expected = [int(5900 * 0.01 ** (r / 9)) for r in range(10)]
    assert by_rank.tolist() == expected and by_rank[0] == 5900 and by_rank[-1] == 59
    assert np.bincount(labels[val], minlength=10).tolist() == [100] * 10
    assert not set(train) & set(val)  # validation images are never training images
    # The class order is a seeded permutation, not the label order, and differs across seeds.
    assert sorted(order) == list(range(10)) and list(order) != list(range(10))
    _, _, order_other = fashion_mnist_lt_splits(labels, 100, seed=4, val_per_class=100)
    assert list(order_other) != list(order)


def test_splits_are_deterministic_by_seed():
    labels = np.random.RandomState(0).randint(0, 10, 3000)
    a = fashion_mnist_lt_splits(labels, 50, seed=1, val_per_class=20)
    b = fashion_mnist_lt_splits(labels, 50, seed=1, val_per_class=20)
    c = fashion_mnist_lt_splits(labels, 50, seed=2, val_per_class=20)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_registered_splits_and_shot_counts(idx_root):
    register_fashion_mnist_lt("fm_test_r10_s0", 10, seed=0, val_per_class=10, root=idx_root)
    train = DatasetCatalog.get("fm_test_r10_s0_train")
    val = DatasetCatalog.get("fm_test_r10_s0_val")
    test = DatasetCatalog.get("fm_test_r10_s0_test")
    assert len(test) == 70 and len(val) == 100
    assert not {d["image_id"] for d in train} & {d["image_id"] for d in val}
    counts = train_class_counts("fm_test_r10_s0_test")
    assert sorted(counts.tolist(), reverse=True)[0] == 120 and counts.min() == 12  # 120 / 10
    assert MetadataCatalog.get("fm_test_r10_s0_val").thing_classes[8] == "Bag"
    assert train[0]["image"].shape == (28, 28)


def test_builtin_names_use_the_configured_root(idx_root):
    assert "fashion_mnist_lt_r100_s2_val" in DatasetCatalog.list()
    set_fashion_mnist_root(idx_root)
    try:
        assert resolve_fashion_mnist_root() == idx_root
        assert len(DatasetCatalog.get("fashion_mnist_lt_r100_s2_test")) == 70
        # 130 images per class leave 30 for training next to 100 validation images.
        assert len(DatasetCatalog.get("fashion_mnist_lt_r100_s2_val")) == 1000
    finally:
        set_fashion_mnist_root("")


def test_missing_folder_names_the_path_and_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(str(tmp_path / "nowhere"), train=True)


def test_corrupt_files_are_named(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    with gzip.open(root / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"not an idx file")
    write_idx(str(root / "train-labels-idx1-ubyte.gz"), np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz.*magic"):
        load_fashion_mnist(str(root), train=True)
    write_idx(str(root / "train-images-idx3-ubyte.gz"), np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="4 images but .* 3 labels"):
        load_fashion_mnist(str(root), train=True)
    write_idx(str(root / "t10k-images-idx3-ubyte.gz"), np.zeros((2, 28, 28), np.uint8))
    write_idx(str(root / "t10k-labels-idx1-ubyte.gz"), np.array([1, 10], np.uint8))
    with pytest.raises(ValueError, match="label 10 of image 1 is out of range"):
        load_fashion_mnist(str(root), train=False)
    with gzip.open(root / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2]))  # announces 9 labels, holds 2
    with pytest.raises(ValueError, match="announces shape"):
        load_fashion_mnist(str(root), train=False)


def test_validation_size_must_leave_training_images():
    labels = np.repeat(np.arange(10), 50)
    with pytest.raises(ValueError, match="val_per_class must be in"):
        fashion_mnist_lt_splits(labels, 10, seed=0, val_per_class=50)
