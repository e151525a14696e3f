"""LVIS-format loading: segmentations checked against INPUT.MASK_FORMAT / MODEL.MASK_ON, the
config keys of the invalid-annotation policy, and Detectron2's built-in LVIS names (coco_url)."""
import copy
import json
import logging
import os

import numpy as np
import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.structures import BitMasks
from PIL import Image
from pycocotools import mask as mask_util

from tde_det import add_tde_config
from tde_det.data.detection import (
    InvalidAnnotationError,
    load_lvis_json_checked,
    register_lvis_datasets_from_config,
    set_invalid_annotation_policy,
    use_checked_loader_for_builtin_lvis,
)
from tde_det.data.detection.lvis import BUILTIN_LVIS
from tde_det.data.detection.synthetic import write_tiny_lvis
from tde_det.engine import detection_task

from tests.helpers.lvis_json import edited_copy


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_lvis(str(tmp_path_factory.mktemp("lvis_masks")), num_train=10, num_val=2)


@pytest.fixture(autouse=True)
def default_policy():
    """Every test starts and ends with the default policy (it is global to the process)."""
    set_invalid_annotation_policy()
    yield
    set_invalid_annotation_policy()


@pytest.fixture
def tde_log(caplog):
    """caplog that sees tde_det's records even after Detectron2's ``setup_logger`` stopped
    their propagation (a handler on "tde_det" also makes ``Trainer`` leave logging alone)."""
    log = logging.getLogger("tde_det")
    log.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="tde_det")
    yield caplog
    log.removeHandler(caplog.handler)


def box_mask(ann, img):
    """A binary mask of the annotation's box (uint8, height x width)."""
    mask = np.zeros((img["height"], img["width"]), dtype=np.uint8)
    x, y, w, h = (int(round(v)) for v in ann["bbox"])
    mask[y:y + max(h, 1), x:x + max(w, 1)] = 1
    return mask


def compressed_rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def uncompressed_rle(mask):
    """COCO's uncompressed RLE: column-major run lengths, starting with a run of zeros."""
    flat = mask.flatten(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = np.diff(bounds).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + runs}


@pytest.fixture
def rle_json(tiny, tmp_path):
    """The train json with its first two annotations as compressed / uncompressed RLE."""
    def edit(d):
        images = {img["id"]: img for img in d["images"]}
        for ann, to_rle in zip(d["annotations"][:2], (compressed_rle, uncompressed_rle)):
            ann["segmentation"] = to_rle(box_mask(ann, images[ann["image_id"]]))

    return edited_copy(tiny["train"], tmp_path / "rle.json", edit)


def test_rle_with_polygon_mask_format_is_named_in_the_error(tiny, rle_json):
    path, data = rle_json
    with pytest.raises(InvalidAnnotationError) as err:
        load_lvis_json_checked(path, tiny["image_root"], "rle", mask_format="polygon")
    msg = str(err.value)
    for ann in data["annotations"][:2]:
        assert f"image id {ann['image_id']}" in msg and f"annotation id {ann['id']}" in msg
    assert "2 RLE segmentation with INPUT.MASK_FORMAT polygon" in msg
    assert "set INPUT.MASK_FORMAT bitmask" in msg
    # The same from the policy set by the config (Detectron2's default mask format).
    set_invalid_annotation_policy("error", True, mask_format="polygon", require_masks=True)
    with pytest.raises(InvalidAnnotationError, match="INPUT.MASK_FORMAT is 'polygon'"):
        load_lvis_json_checked(path, tiny["image_root"], "rle")


def test_bitmask_accepts_rle_and_polygons_and_the_mapper_reads_them(tiny, rle_json):
    path, data = rle_json
    set_invalid_annotation_policy(mask_format="bitmask")
    dicts = load_lvis_json_checked(path, tiny["image_root"], "rle")
    assert sum(len(d["annotations"]) for d in dicts) == len(data["annotations"])
    images = {img["id"]: img for img in data["images"]}
    first = [d for d in dicts if d["image_id"] == data["annotations"][0]["image_id"]][0]
    objs = [o for d in dicts for o in d["annotations"] if isinstance(o["segmentation"], dict)]
    assert len(objs) == 2  # the uncompressed one is compressed for Detectron2's mapper
    for obj, ann in zip(objs, data["annotations"][:2]):
        assert np.array_equal(mask_util.decode(obj["segmentation"]),
                              box_mask(ann, images[ann["image_id"]]))
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.MODEL.MASK_ON, cfg.INPUT.MASK_FORMAT = True, "bitmask"
    out = DatasetMapper(cfg, is_train=True)(copy.deepcopy(first))
    masks = out["instances"].gt_masks
    assert isinstance(masks, BitMasks) and len(masks) == len(first["annotations"])
    # What the check prevents: Detectron2's polygon mapper fails on RLE (in a loader worker).
    cfg.INPUT.MASK_FORMAT = "polygon"
    with pytest.raises(ValueError, match="mask_format=='polygon'"):
        DatasetMapper(cfg, is_train=True)(copy.deepcopy(first))


@pytest.mark.parametrize("rle, problem", [
    ({"counts": "abc"}, "without 'size' and 'counts'"),
    ({"size": [3, 4], "counts": "abc"}, "is not the image's [height, width]"),
    ("uncompressed short", "do not sum to height * width"),
])
def test_bitmask_rejects_a_broken_rle(tiny, tmp_path, rle, problem):
    def edit(d):
        ann, img = d["annotations"][0], d["images"][0]
        assert ann["image_id"] == img["id"]
        ann["segmentation"] = rle if isinstance(rle, dict) else \
            {"size": [img["height"], img["width"]], "counts": [5, 7]}

    path, data = edited_copy(tiny["train"], tmp_path / "bad_rle.json", edit)
    ann = data["annotations"][0]
    with pytest.raises(InvalidAnnotationError) as err:
        load_lvis_json_checked(path, tiny["image_root"], "bad", mask_format="bitmask")
    msg = str(err.value)
    assert problem in msg and "1 bad RLE" in msg
    assert f"image id {ann['image_id']}" in msg and f"annotation id {ann['id']}" in msg


def test_boxes_only_needs_no_segmentation(tiny, tmp_path, tde_log):
    def edit(d):
        d["annotations"][0].pop("segmentation")
        d["annotations"][1]["segmentation"] = []

    path, data = edited_copy(tiny["train"], tmp_path / "boxes.json", edit)
    with pytest.raises(InvalidAnnotationError, match="2 bad polygon"):
        load_lvis_json_checked(path, tiny["image_root"], "boxes")
    set_invalid_annotation_policy(require_masks=False)
    dicts = load_lvis_json_checked(path, tiny["image_root"], "boxes")
    objs = {(d["image_id"], tuple(o["bbox"])): o for d in dicts for o in d["annotations"]}
    assert len(objs) == len(data["annotations"])
    for i, ann in enumerate(data["annotations"]):
        obj = objs[ann["image_id"], tuple(ann["bbox"])]
        assert ("segmentation" in obj) == (i >= 2)  # valid polygons are kept
    assert "2 annotations have no usable segmentation" in tde_log.text


def test_policy_values_are_validated():
    set_invalid_annotation_policy("skip", False)  # the positional form still works
    with pytest.raises(ValueError, match="INPUT.MASK_FORMAT .* got 'rle'"):
        set_invalid_annotation_policy(mask_format="rle")
    with pytest.raises(ValueError, match="MODEL.MASK_ON .* got 'yes'"):
        set_invalid_annotation_policy(require_masks="yes")
    with pytest.raises(ValueError, match="DATASETS.CHECK_IMAGE_FILES .* got 'False'"):
        set_invalid_annotation_policy("skip", "False")
    with pytest.raises(ValueError, match="DATASETS.INVALID_ANNOTATIONS .* got 'drop'"):
        set_invalid_annotation_policy("drop")
    with pytest.raises(ValueError, match="INPUT.MASK_FORMAT"):
        load_lvis_json_checked("unused.json", "unused", mask_format="polygons")


# --- the config keys, through detection_task / DatasetCatalog ---

@pytest.fixture
def bad_json(tiny, tmp_path):
    """The train json with an unknown category id and an image whose file is missing."""
    def edit(d):
        d["annotations"][0]["category_id"] = 999
        d["images"][-1]["file_name"] = "missing.png"

    return edited_copy(tiny["train"], tmp_path / "bad.json", edit)


def lvis_cfg(name, json_file, image_root, tmp_path, **keys):
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 6
    cfg.DATASETS.LVIS_CUSTOM.NAMES = (name,)
    cfg.DATASETS.LVIS_CUSTOM.JSON_FILES = (json_file,)
    cfg.DATASETS.LVIS_CUSTOM.IMAGE_ROOTS = (image_root,)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (name,), ()
    cfg.DATALOADER.NUM_WORKERS, cfg.SOLVER.IMS_PER_BATCH = 0, 2
    for key, value in keys.items():
        node, attr = cfg, key.split(".")
        for a in attr[:-1]:
            node = node[a]
        node[attr[-1]] = value
    return cfg


def test_config_skip_drops_bad_entries_and_logs_counts(tiny, bad_json, tmp_path, tde_log):
    path, data = bad_json
    name = "lvis_cfg_keys_skip"
    cfg = lvis_cfg(name, path, tiny["image_root"], tmp_path,
                   **{"DATASETS.INVALID_ANNOTATIONS": "skip"})
    register_lvis_datasets_from_config(cfg)
    loader = detection_task.build_train_loader(cfg)
    assert "skipped 2 invalid entries (1 missing image file, 1 unknown category id)" \
        in tde_log.text
    batch = next(iter(loader))
    assert len(batch) == 2 and all("instances" in d for d in batch)
    dicts = DatasetCatalog.get(name)
    assert {d["image_id"] for d in dicts} == {img["id"] for img in data["images"][:-1]}
    kept = sum(len(d["annotations"]) for d in dicts)
    lost = sum(a["image_id"] == data["images"][-1]["id"] for a in data["annotations"])
    assert kept == len(data["annotations"]) - 1 - lost


def test_config_error_names_image_and_annotation(tiny, bad_json, tmp_path):
    path, data = bad_json
    name = "lvis_cfg_keys_error"
    cfg = lvis_cfg(name, path, tiny["image_root"], tmp_path)
    assert cfg.DATASETS.INVALID_ANNOTATIONS == "error"  # the default
    register_lvis_datasets_from_config(cfg)
    with pytest.raises(InvalidAnnotationError) as err:
        DatasetCatalog.get(name)
    msg, ann = str(err.value), data["annotations"][0]
    assert f"image id {ann['image_id']}" in msg and f"annotation id {ann['id']}" in msg
    assert f"image id {data['images'][-1]['id']}" in msg and "image file not found" in msg
    with pytest.raises(InvalidAnnotationError, match=f"Dataset '{name}'"):
        detection_task.build_train_loader(cfg)


def test_config_without_image_file_check(tiny, bad_json, tmp_path):
    path, data = bad_json
    name = "lvis_cfg_keys_nocheck"
    cfg = lvis_cfg(name, path, tiny["image_root"], tmp_path,
                   **{"DATASETS.CHECK_IMAGE_FILES": False})
    register_lvis_datasets_from_config(cfg)
    with pytest.raises(InvalidAnnotationError) as err:
        DatasetCatalog.get(name)
    assert "1 invalid entries (1 unknown category id)" in str(err.value)
    assert "image file not found" not in str(err.value)
    cfg.DATASETS.INVALID_ANNOTATIONS = "skip"
    register_lvis_datasets_from_config(cfg)
    assert len(DatasetCatalog.get(name)) == len(data["images"])


def test_config_mask_keys_reach_the_loader(tiny, rle_json, tmp_path):
    path, data = rle_json
    name = "lvis_cfg_keys_masks"
    cfg = lvis_cfg(name, path, tiny["image_root"], tmp_path)
    register_lvis_datasets_from_config(cfg)
    with pytest.raises(InvalidAnnotationError, match="INPUT.MASK_FORMAT bitmask"):
        DatasetCatalog.get(name)
    cfg.INPUT.MASK_FORMAT = "bitmask"
    register_lvis_datasets_from_config(cfg)
    assert sum(len(d["annotations"]) for d in DatasetCatalog.get(name)) \
        == len(data["annotations"])
    cfg.INPUT.MASK_FORMAT, cfg.MODEL.MASK_ON = "polygon", False  # boxes only: RLE not used
    register_lvis_datasets_from_config(cfg)
    objs = [o for d in DatasetCatalog.get(name) for o in d["annotations"]]
    assert len(objs) == len(data["annotations"])
    assert sum("segmentation" not in o for o in objs) == 2
    cfg.INPUT.MASK_FORMAT = "polygons"
    with pytest.raises(ValueError, match="INPUT.MASK_FORMAT"):
        register_lvis_datasets_from_config(cfg)


# --- Detectron2's built-in LVIS names: coco_url image paths, the swapped loader ---

@pytest.fixture
def coco_like(tmp_path):
    """<tmp>/coco/val2017/{1,2}.jpg and an LVIS v1-like json whose images only have
    "coco_url" (image 3's file is missing)."""
    folder = tmp_path / "coco" / "val2017"
    folder.mkdir(parents=True)
    images, annotations = [], []
    for i in (1, 2, 3):
        if i < 3:
            Image.new("RGB", (40, 30), (i * 40, 90, 120)).save(folder / f"{i:012d}.jpg")
        images.append({"id": i, "width": 40, "height": 30, "neg_category_ids": [],
                       "not_exhaustive_category_ids": [],
                       "coco_url": f"http://images.cocodataset.org/val2017/{i:012d}.jpg"})
        annotations.append({"id": 10 + i, "image_id": i, "category_id": 1 + i % 3,
                            "bbox": [5.0, 5.0, 10.0, 8.0], "area": 80.0,
                            "segmentation": [[5.0, 5.0, 15.0, 5.0, 15.0, 13.0, 5.0, 13.0]]})
    categories = [{"id": c, "name": f"c{c}", "synonyms": [f"c{c}"], "frequency": f}
                  for c, f in ((1, "f"), (2, "c"), (3, "r"))]
    path = tmp_path / "lvis" / "lvis_v1_val.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": categories}))
    return str(path), str(tmp_path / "coco") + os.sep


def test_coco_url_images_of_lvis_v1(coco_like):
    path, image_root = coco_like
    with pytest.raises(InvalidAnnotationError) as err:
        load_lvis_json_checked(path, image_root, prefer_coco_url=True)
    missing = os.path.join(image_root, "val2017", f"{3:012d}.jpg")
    assert f"image id 3 ({missing}): image file not found" in str(err.value)
    dicts = load_lvis_json_checked(path, image_root, prefer_coco_url=True, on_invalid="skip")
    assert [d["file_name"] for d in dicts] == [
        os.path.join(image_root, "val2017", f"{i:012d}.jpg") for i in (1, 2)]
    assert all(os.path.isfile(d["file_name"]) for d in dicts)
    assert [d["annotations"][0]["category_id"] for d in dicts] == [1, 2]  # LVIS id - 1


def test_builtin_lvis_names_use_the_checked_loader(coco_like, monkeypatch):
    path, image_root = coco_like
    # Swapped when tde_det.data.detection is imported.
    loader = DatasetCatalog["lvis_v1_val"]
    assert loader.func is load_lvis_json_checked and loader.keywords["prefer_coco_url"]
    assert loader.args == (MetadataCatalog.get("lvis_v1_val").json_file,
                           MetadataCatalog.get("lvis_v1_val").image_root, "lvis_v1_val")
    # Swapping again reads the (here: test's) metadata; monkeypatch restores both catalogs
    # (their ``data`` dicts: the catalogs' own ``get`` differs from a dict's).
    for name in BUILTIN_LVIS:
        if name in DatasetCatalog:
            monkeypatch.setitem(DatasetCatalog.data, name, DatasetCatalog[name])
    monkeypatch.setitem(MetadataCatalog.data, "lvis_v1_val", Metadata(
        name="lvis_v1_val", json_file=path, image_root=image_root, evaluator_type="lvis"))
    use_checked_loader_for_builtin_lvis()
    with pytest.raises(InvalidAnnotationError, match="(?s)Dataset 'lvis_v1_val'.*image id 3"):
        DatasetCatalog.get("lvis_v1_val")
    set_invalid_annotation_policy("skip")
    dicts = DatasetCatalog.get("lvis_v1_val")
    assert [d["file_name"] for d in dicts] == [
        os.path.join(image_root, "val2017", f"{i:012d}.jpg") for i in (1, 2)]
