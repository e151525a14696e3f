"""Fashion-MNIST-LT-Det on small generated IDX files: LVIS checks and API, masks vs boxes,
the declared frequency profile, item provenance, registration through DATASETS.LVIS_CUSTOM."""
import json

import numpy as np
import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image
from pycocotools import mask as mask_util

from tde_det import add_tde_config
from tde_det.data.classification.fashion_mnist import load_fashion_mnist
from tde_det.data.classification.long_tailed import long_tailed_counts
from tde_det.data.classification.synthetic import write_fashion_mnist_idx
from tde_det.data.detection import (check_lvis_api_fields, register_lvis_datasets_from_config,
                                    set_invalid_annotation_policy)
from tde_det.data.detection.canvases import item_mask
from tde_det.data.detection.fashion_mnist_lt import frequency_of, write_fashion_mnist_lt_det

# Image counts 12, 9, 7, 5, 3, 3, 2, 1, 1, 1: 4 frequent (> 3), 3 common (2-3), 3 rare (1).
OPTIONS = dict(head_images=12, ratio=12.0, eval_images=3, rare_max=1, common_max=3)
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fmdet")
    root = write_fashion_mnist_idx(str(folder / "fm"), per_class=30, test_per_class=14)
    paths = write_fashion_mnist_lt_det(str(folder / "data"), seed=3, root=root, **OPTIONS)
    data = {s: json.loads(open(paths[s]).read()) for s in SPLITS}
    return root, paths, data


def test_passes_the_projects_lvis_checks_and_loads_in_the_lvis_api(generated):
    from lvis import LVIS

    _, paths, data = generated
    for split in SPLITS:
        check_lvis_api_fields(paths[split], f"split {split}", masks=True)
        api = LVIS(paths[split])
        assert len(api.get_img_ids()) == len(data[split]["images"]) > 0
        assert len(api.get_ann_ids()) == len(data[split]["annotations"]) > 0
        for img in data[split]["images"]:
            present = {a["category_id"] for a in data[split]["annotations"]
                       if a["image_id"] == img["id"]}
            assert img["not_exhaustive_category_ids"] == []
            assert set(img["neg_category_ids"]) == set(range(1, 11)) - present


def test_boxes_are_the_visible_masks_extent_and_masks_are_disjoint(generated):
    _, paths, data = generated
    for split in SPLITS:
        by_image = {}
        for a in data[split]["annotations"]:
            m = mask_util.decode(a["segmentation"]).astype(bool)
            assert m.sum() == a["area"] > 0
            ys, xs = np.nonzero(m)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                 ys.max() - ys.min() + 1]
            assert list(mask_util.toBbox(a["segmentation"])) == a["bbox"]
            by_image.setdefault(a["image_id"], []).append(m)
        for masks in by_image.values():
            assert np.stack(masks).sum(0).max() == 1  # each pixel belongs to one instance


def test_training_image_counts_follow_the_declared_profile(generated):
    _, paths, data = generated
    assert paths["dropped"]["train"] == [0] * 10  # nothing failed to fit at these sizes
    expected = np.zeros(10, dtype=int)
    expected[paths["class_order"]] = long_tailed_counts(12, 10, 12.0)
    anns = data["train"]["annotations"]
    for c in data["train"]["categories"]:
        images = {a["image_id"] for a in anns if a["category_id"] == c["id"]}
        assert c["image_count"] == len(images) == expected[c["id"] - 1]
        assert c["instance_count"] == sum(a["category_id"] == c["id"] for a in anns)
        assert c["frequency"] == frequency_of(c["image_count"], 1, 3)
    assert sorted(c["frequency"] for c in data["train"]["categories"]) == \
        sorted("ffffcccrrr")
    for split in ("val", "test"):  # the training frequencies, on balanced canvases
        assert data[split]["categories"] == data["train"]["categories"]
        assert paths["dropped"][split] == [0] * 10
        for k in range(1, 11):
            assert len({a["image_id"] for a in data[split]["annotations"]
                        if a["category_id"] == k}) == OPTIONS["eval_images"]


def test_items_come_from_the_right_sets_once(generated):
    root, paths, data = generated
    sources = {s: [a["fashion_mnist_index"] for a in data[s]["annotations"]] for s in SPLITS}
    for s in SPLITS:
        assert len(set(sources[s])) == len(sources[s])
    assert not set(sources["val"]) & set(sources["test"])
    for split, train in (("train", True), ("val", False), ("test", False)):
        images, labels = load_fashion_mnist(root, train=train)
        file_of = {i["id"]: i["file_name"] for i in data[split]["images"]}
        matched = 0
        for a in data[split]["annotations"]:
            assert labels[a["fashion_mnist_index"]] == a["category_id"] - 1
            canvas = np.asarray(Image.open(f"{paths['image_root']}/{file_of[a['image_id']]}"))
            visible = mask_util.decode(a["segmentation"]).astype(bool)
            assert canvas[visible].min() > 64  # only the item's pixels above the threshold
            matched += _unoccluded_copy(canvas, visible, images[a["fashion_mnist_index"]])
        # the instances nothing covers are exact scaled copies of their source item
        assert matched >= len(data[split]["annotations"]) // 2


def _unoccluded_copy(canvas, visible, item) -> bool:
    """Whether ``visible`` is the whole mask of ``item`` scaled to some side, with the item's
    pixels, somewhere on ``canvas``."""
    ys, xs = np.nonzero(visible)
    for side in range(28, 71):
        scaled, mask = item_mask(item, side, 64)
        my, mx = np.nonzero(mask)
        if len(my) != len(ys) or my.max() - my.min() != ys.max() - ys.min() \
                or mx.max() - mx.min() != xs.max() - xs.min():
            continue
        oy, ox = ys.min() - my.min(), xs.min() - mx.min()
        if np.array_equal(np.sort(ys * 1000 + xs), np.sort((my + oy) * 1000 + mx + ox)) \
                and np.array_equal(canvas[my + oy, mx + ox], scaled[my, mx]):
            return True
    return False


def test_seeded_class_order_and_reproducible(tmp_path, generated):
    root, paths, data = generated
    again = write_fashion_mnist_lt_det(str(tmp_path / "again"), seed=3, root=root, **OPTIONS)
    assert json.loads(open(again["train"]).read()) == data["train"]
    other = write_fashion_mnist_lt_det(str(tmp_path / "other"), seed=4, root=root, **OPTIONS)
    assert other["class_order"] != paths["class_order"]


def test_registered_through_lvis_custom(generated):
    _, paths, data = generated
    cfg = get_cfg()
    add_tde_config(cfg)
    names = tuple(f"fmdet_test_{s}" for s in SPLITS)
    cfg.merge_from_list(["INPUT.MASK_FORMAT", "bitmask",
                         "DATASETS.LVIS_CUSTOM.NAMES", str(names),
                         "DATASETS.LVIS_CUSTOM.JSON_FILES", str(tuple(paths[s] for s in SPLITS)),
                         "DATASETS.LVIS_CUSTOM.IMAGE_ROOTS", str((paths["image_root"],) * 3)])
    register_lvis_datasets_from_config(cfg)
    try:
        records = DatasetCatalog.get(names[0])
        assert len(records) == len(data["train"]["images"])
        assert sum(len(r["annotations"]) for r in records) == len(data["train"]["annotations"])
    finally:
        set_invalid_annotation_policy()  # the defaults, for the other tests
        for n in names:
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)


def test_too_few_categories_in_a_group_is_an_error(tmp_path, generated):
    root = generated[0]
    with pytest.raises(ValueError, match=r"groups \['r'\].*rare_max 0"):
        write_fashion_mnist_lt_det(str(tmp_path / "bad"), root=root,
                                   **dict(OPTIONS, rare_max=0))
