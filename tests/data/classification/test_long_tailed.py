"""Long-tailed counts and subsets, the validation split and the shot groups."""
import numpy as np
import pytest

from tde_det.data.classification import (
    balanced_splits,
    held_out_indices,
    long_tailed_counts,
    long_tailed_indices,
    shot_groups,
)


def test_cifar10_ratio_100_counts_are_the_official_ones():
    counts = long_tailed_counts(5000, 10, 100)
    assert counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(counts) == 12406


@pytest.mark.parametrize("n_max, classes, ratio, total", [
    (5000, 10, 50, 13996), (5000, 10, 10, 20431),
    (500, 100, 100, 10847), (500, 100, 50, 12608), (500, 100, 10, 19573),
])
def test_totals_of_the_other_cifar_lt_splits(n_max, classes, ratio, total):
    counts = long_tailed_counts(n_max, classes, ratio)
    assert sum(counts) == total and counts[0] == n_max and counts[-1] == n_max // ratio


def test_subset_keeps_the_first_images_of_each_class():
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])  # 4 per class; ratio 4: 4, 2, 1
    idx = long_tailed_indices(labels, 3, 4)
    assert idx.tolist() == [0, 1, 2, 3, 4, 6, 9]
    assert np.bincount(labels[idx]).tolist() == [4, 2, 1]
    assert long_tailed_indices(labels, 3, 4).tolist() == idx.tolist()  # deterministic


def test_seeded_class_order_permutes_which_class_is_frequent():
    labels = np.repeat(np.arange(5), 20)
    idx = long_tailed_indices(labels, 5, 10, class_order_seed=3)
    counts = np.bincount(labels[idx], minlength=5)
    perm = np.random.RandomState(3).permutation(5)
    assert counts[perm].tolist() == long_tailed_counts(20, 5, 10)
    assert sorted(counts.tolist(), reverse=True) == long_tailed_counts(20, 5, 10)


def test_too_small_pool_is_an_error():
    with pytest.raises(ValueError, match="class 0 has 3 images .* asks for 4"):
        long_tailed_indices([0, 0, 0, 1, 1], 2, 2, n_max=4)
    with pytest.raises(ValueError, match="imbalance ratio"):
        long_tailed_counts(10, 2, 0.5)


def test_held_out_validation_is_the_last_images_of_each_class():
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    assert held_out_indices(labels, 2, 1).tolist() == [6, 7]
    # Disjoint from the long-tailed subset except where a class keeps all its images.
    lt = long_tailed_indices(labels, 2, 4)  # keeps 4 of class 0, 1 of class 1
    assert set(lt) & set(held_out_indices(labels, 2, 1)) == {6}


def test_seeded_draw_of_the_kept_images():
    labels = np.repeat(np.arange(3), 40)
    first = long_tailed_indices(labels, 3, 4)
    a, b = (long_tailed_indices(labels, 3, 4, seed=s) for s in (1, 1))
    other = long_tailed_indices(labels, 3, 4, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, first) and not np.array_equal(a, other)
    # Same counts per class as the first-images draw, only other images.
    assert np.bincount(labels[a]).tolist() == np.bincount(labels[first]).tolist() == [40, 20, 10]


@pytest.mark.parametrize("seed", [None, 0, 5])
def test_balanced_splits_are_disjoint_for_every_class(seed):
    labels = np.random.RandomState(0).permutation(np.repeat(np.arange(4), 12))
    pool, val, test = balanced_splits(labels, 4, val_per_class=3, test_per_class=2, seed=seed)
    assert np.bincount(labels[val]).tolist() == [3] * 4
    assert np.bincount(labels[test]).tolist() == [2] * 4
    assert np.bincount(labels[pool]).tolist() == [7] * 4
    assert not (set(pool) & set(val) or set(pool) & set(test) or set(val) & set(test))
    assert len(pool) + len(val) + len(test) == len(labels)
    # The long-tailed subset drawn from the pool keeps the head class out of val and test.
    train = pool[long_tailed_indices(labels[pool], 4, 7)]
    assert not set(train) & (set(val) | set(test))
    assert np.bincount(labels[train]).max() == 7
    if seed is None:  # the last images of each class, val before test
        last = [np.flatnonzero(labels == c)[-5:] for c in range(4)]
        assert set(val) | set(test) == set(np.concatenate(last))


def test_balanced_splits_name_a_class_with_no_training_image():
    labels = np.array([0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="class 1 has 2 images: none would be left"):
        balanced_splits(labels, 2, val_per_class=1, test_per_class=1)


def test_shot_group_boundaries():
    counts = [101, 100, 20, 19, 0, 1280]
    assert shot_groups(counts) == ["many", "medium", "medium", "few", "few", "many"]
    assert shot_groups([5, 4, 3], many_threshold=4, few_threshold=4) == ["many", "medium", "few"]
    with pytest.raises(ValueError, match="overlap"):
        shot_groups([1], many_threshold=10, few_threshold=20)
