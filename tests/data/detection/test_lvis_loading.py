"""LVIS-format loading with annotation checks, and registration of a user's dataset."""
import json
import logging
import os

import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from tde_det import add_tde_config
from tde_det.data.detection import (
    InvalidAnnotationError,
    load_lvis_json_checked,
    register_lvis_dataset,
    register_lvis_datasets_from_config,
)
from tde_det.data.detection.synthetic import TINY_CATEGORIES, write_tiny_lvis

from tests.helpers.lvis_json import edited_copy


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_lvis(str(tmp_path_factory.mktemp("lvis")), num_train=10, num_val=6)


def corrupt(tiny, tmp_path, edit):
    """A copy of the train json with ``edit(data)`` applied; returns (path, data)."""
    return edited_copy(tiny["train"], tmp_path / "bad.json", edit)


def first_ann(data):
    return data["annotations"][0]


BAD = {
    "unknown category id": lambda d: first_ann(d).update(category_id=999),
    "degenerate bbox": lambda d: first_ann(d).update(bbox=[3.0, 4.0, 0.0, 5.0]),
    "empty segmentation": lambda d: first_ann(d).update(segmentation=[]),
    "fewer than 3 points": lambda d: first_ann(d).update(segmentation=[[1.0, 2, 3, 4]]),
}


def test_load_tiny_dataset(tiny):
    dicts = load_lvis_json_checked(tiny["train"], tiny["image_root"], "t", on_invalid="error")
    assert len(dicts) == 10
    cats = {a["category_id"] for d in dicts for a in d["annotations"]}
    assert cats <= set(range(len(TINY_CATEGORIES)))
    assert all(os.path.isfile(d["file_name"]) for d in dicts)
    assert all("neg_category_ids" in d and "not_exhaustive_category_ids" in d for d in dicts)


@pytest.mark.parametrize("problem", sorted(BAD))
def test_invalid_annotation_is_named_in_the_error(tiny, tmp_path, problem):
    path, data = corrupt(tiny, tmp_path, BAD[problem])
    ann = first_ann(data)
    with pytest.raises(InvalidAnnotationError) as err:
        load_lvis_json_checked(path, tiny["image_root"], "bad", on_invalid="error")
    msg = str(err.value)
    assert f"image id {ann['image_id']}" in msg and f"annotation id {ann['id']}" in msg
    assert problem in msg and "DATASETS.INVALID_ANNOTATIONS skip" in msg


def test_skip_drops_bad_annotations_and_missing_images_with_a_count(tiny, tmp_path, caplog):
    def edit(d):
        for i, problem in enumerate(BAD.values()):  # four annotations made invalid
            problem({"annotations": [d["annotations"][i]]})
        d["images"][-1]["file_name"] = "missing.png"

    path, data = corrupt(tiny, tmp_path, edit)
    with pytest.raises(InvalidAnnotationError, match="image file not found"):
        load_lvis_json_checked(path, tiny["image_root"], "bad")
    with caplog.at_level(logging.WARNING, logger="tde_det"):
        dicts = load_lvis_json_checked(path, tiny["image_root"], "bad", on_invalid="skip")
    assert "skipped 5 invalid entries" in caplog.text
    assert "1 missing image file" in caplog.text and "1 unknown category id" in caplog.text
    missing_id = data["images"][-1]["id"]
    assert len(dicts) == 9 and missing_id not in {d["image_id"] for d in dicts}
    kept = sum(len(d["annotations"]) for d in dicts)
    lost = sum(a["image_id"] == missing_id for a in data["annotations"])
    assert kept == len(data["annotations"]) - 4 - lost
    # Without the file check the missing image is kept.
    dicts = load_lvis_json_checked(path, tiny["image_root"], "bad", on_invalid="skip",
                                   check_image_files=False)
    assert len(dicts) == 10


def test_register_user_dataset_and_config(tiny):
    register_lvis_dataset("tiny_lvis_test_reg", tiny["val"], tiny["image_root"])
    meta = MetadataCatalog.get("tiny_lvis_test_reg")
    assert meta.evaluator_type == "lvis"
    assert meta.thing_classes == [c[1] for c in TINY_CATEGORIES]
    assert meta.thing_dataset_id_to_contiguous_id == {c[0]: i for i, c in
                                                      enumerate(TINY_CATEGORIES)}
    assert len(DatasetCatalog.get("tiny_lvis_test_reg")) == 6

    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.DATASETS.LVIS_CUSTOM.NAMES = ("tiny_lvis_test_cfg", "tiny_lvis_test_reg")
    cfg.DATASETS.LVIS_CUSTOM.JSON_FILES = (tiny["train"], tiny["val"])
    cfg.DATASETS.LVIS_CUSTOM.IMAGE_ROOTS = (tiny["image_root"],) * 2
    register_lvis_datasets_from_config(cfg)
    register_lvis_datasets_from_config(cfg)  # idempotent
    assert len(DatasetCatalog.get("tiny_lvis_test_cfg")) == 10
    cfg.DATASETS.LVIS_CUSTOM.JSON_FILES = (tiny["val"], tiny["val"])
    with pytest.raises(ValueError, match="already registered"):
        register_lvis_datasets_from_config(cfg)
    cfg.DATASETS.LVIS_CUSTOM.IMAGE_ROOTS = ()
    with pytest.raises(ValueError, match="same length"):
        register_lvis_datasets_from_config(cfg)


def test_builtin_lvis_names_keep_detectron2_paths_and_metadata():
    meta = MetadataCatalog.get("lvis_v1_val")
    assert meta.evaluator_type == "lvis" and len(meta.thing_classes) == 1203
    assert meta.json_file.endswith(os.path.join("lvis", "lvis_v1_val.json"))
    assert "lvis_v0.5_train" in DatasetCatalog.list()
    assert len(MetadataCatalog.get("lvis_v0.5_train").thing_classes) == 1230


@pytest.mark.parametrize("keep", [0.5, 0.99])  # categories lost (registration) / kept (loading)
def test_truncated_json_is_named_with_line_and_column(tiny, tmp_path, keep):
    raw = open(tiny["train"], "rb").read()
    path = tmp_path / "cut.json"
    path.write_bytes(raw[:int(len(raw) * keep)])
    with pytest.raises(json.JSONDecodeError, match=rf"{path} is not valid JSON .*line 1 column"):
        register_lvis_dataset(f"tiny_lvis_cut_{keep}", str(path), tiny["image_root"])
        DatasetCatalog.get(f"tiny_lvis_cut_{keep}")


@pytest.mark.parametrize("text", ['{"images": []}', '{"categories": {"id": 1}}',
                                  '{"categories": [1, 2]}', '[]'])
def test_registering_a_json_without_categories_names_the_file(tmp_path, text):
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"c\.json: no top-level 'categories' list"):
        register_lvis_dataset("tiny_lvis_no_categories", str(path), str(tmp_path))
    with pytest.raises(FileNotFoundError):
        register_lvis_dataset("tiny_lvis_missing", str(tmp_path / "missing.json"), str(tmp_path))
    assert "tiny_lvis_no_categories" not in DatasetCatalog.list()


@pytest.mark.parametrize("on_invalid", ["error", "skip"])
def test_repeated_image_id_is_an_error_under_either_policy(tiny, tmp_path, on_invalid):
    def edit(d):  # image 2 becomes a second "image 1" of the same size
        first, second = d["images"][:2]
        second.update(id=first["id"], width=first["width"], height=first["height"])

    path, data = corrupt(tiny, tmp_path, edit)
    with pytest.raises(InvalidAnnotationError) as err:
        load_lvis_json_checked(path, tiny["image_root"], "dup", on_invalid=on_invalid)
    msg = str(err.value)
    first, second = data["images"][:2]
    assert f"({path}) has 1 image ids used by more than one entry" in msg
    assert f"image id {first['id']}: 2 entries" in msg
    assert first["file_name"] in msg and second["file_name"] in msg
    assert "skip cannot choose one" in msg


def test_repeated_image_ids_are_listed_up_to_ten_with_their_count(tiny, tmp_path):
    def edit(d):
        d["images"] += [dict(img) for img in d["images"]] + [dict(d["images"][0])]

    path, _ = corrupt(tiny, tmp_path, edit)
    with pytest.raises(InvalidAnnotationError, match=r"has 10 image ids used by more than one"):
        load_lvis_json_checked(path, tiny["image_root"], "dup")
    with pytest.raises(InvalidAnnotationError, match="image id 1: 3 entries"):
        load_lvis_json_checked(path, tiny["image_root"], "dup")

    def more(d):
        edit(d)
        d["images"] += [dict(img, id=img["id"] + 100) for img in d["images"][:4] * 2]

    path, _ = corrupt(tiny, tmp_path, more)
    with pytest.raises(InvalidAnnotationError, match=r"has 14 image ids (.|\n)*\.\.\. and 4 more"):
        load_lvis_json_checked(path, tiny["image_root"], "dup")


def test_repeated_annotation_id_is_an_error_or_a_logged_skip(tiny, tmp_path, caplog):
    def edit(d):
        d["annotations"][5]["id"] = d["annotations"][2]["id"]

    path, data = corrupt(tiny, tmp_path, edit)
    anns = data["annotations"]
    with pytest.raises(InvalidAnnotationError) as err:
        load_lvis_json_checked(path, tiny["image_root"], "dup")
    msg = str(err.value)
    assert "1 duplicate annotation id" in msg and "DATASETS.INVALID_ANNOTATIONS skip" in msg
    assert (f"annotation id {anns[2]['id']} (image id {anns[5]['image_id']}): the id of an "
            f"earlier annotation (of image id {anns[2]['image_id']})") in msg
    with caplog.at_level(logging.WARNING, logger="tde_det"):
        dicts = load_lvis_json_checked(path, tiny["image_root"], "dup", on_invalid="skip")
    assert "skipped 1 invalid entries (1 duplicate annotation id)" in caplog.text
    assert sum(len(d["annotations"]) for d in dicts) == len(anns) - 1
