"""LVIS-format detection data with annotation checks.

Detectron2 registers LVIS v0.5 / v1.0 under ``$DETECTRON2_DATASETS`` (default ``./datasets``)::

    $DETECTRON2_DATASETS/coco/{train2017,val2017}/*.jpg
    $DETECTRON2_DATASETS/lvis/lvis_v1_{train,val}.json, lvis_v0.5_{train,val}.json

(names ``lvis_v1_train``, ``lvis_v1_val``, ``lvis_v0.5_train``, ``lvis_v0.5_val``, ...). We keep
those names, paths and metadata, and only swap their loading function for
:func:`load_lvis_json_checked`, which reports bad annotations by image and annotation id instead of
failing on an ``assert`` (or, hours later, inside a data-loader worker). Users register their own
LVIS-format json + image root with :func:`register_lvis_dataset` (or the config keys
``DATASETS.LVIS_CUSTOM.*``, see :func:`register_lvis_datasets_from_config`).
"""
import json
import logging
import math
import os
from collections import Counter
from functools import partial
from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from detectron2.utils.file_io import PathManager

__all__ = ["INVALID_ANNOTATION_POLICIES", "InvalidAnnotationError", "load_lvis_json_checked",
           "register_lvis_dataset", "register_lvis_datasets_from_config",
           "set_invalid_annotation_policy", "use_checked_loader_for_builtin_lvis"]

logger = logging.getLogger(__name__)

INVALID_ANNOTATION_POLICIES = ("error", "skip")
# The policy used when a loader is called without one (set from the config by the trainer,
# with DATASETS.INVALID_ANNOTATIONS and DATASETS.CHECK_IMAGE_FILES).
_DEFAULTS = {"on_invalid": "error", "check_image_files": True}
# Detectron2's built-in LVIS splits that have annotations.
BUILTIN_LVIS = ("lvis_v1_train", "lvis_v1_val", "lvis_v0.5_train", "lvis_v0.5_val",
                "lvis_v0.5_val_rand_100")
_MAX_LISTED = 10


class InvalidAnnotationError(ValueError):
    """An LVIS-format file holds an annotation (or image) that cannot be trained on."""


def set_invalid_annotation_policy(on_invalid: str = "error", check_image_files: bool = True):
    """Set what the loaders of LVIS-format datasets do by default with invalid annotations."""
    if on_invalid not in INVALID_ANNOTATION_POLICIES:
        raise ValueError(f"DATASETS.INVALID_ANNOTATIONS must be one of "
                         f"{INVALID_ANNOTATION_POLICIES}, got {on_invalid!r}")
    _DEFAULTS.update(on_invalid=on_invalid, check_image_files=bool(check_image_files))


def _box_problem(bbox) -> Optional[str]:
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return f"bbox must be [x, y, w, h], got {bbox!r}"
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox):
        return f"bbox has a non-finite or non-numeric value: {bbox!r}"
    if bbox[2] <= 0 or bbox[3] <= 0:
        return f"degenerate bbox (width or height <= 0): {bbox!r}"
    return None


def _segmentation_problem(segm) -> Optional[str]:
    if isinstance(segm, dict):  # RLE: Detectron2 reads it as it is
        return None
    if not isinstance(segm, list) or len(segm) == 0:
        return "empty segmentation (no polygon)"
    for poly in segm:
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
            n = len(poly) if isinstance(poly, list) else poly
            return f"polygon with fewer than 3 points (or an odd coordinate count): {n!r} values"
    return None


def _image_path(image_root: str, img: Dict, prefer_coco_url: bool) -> str:
    if "coco_url" in img and (prefer_coco_url or "file_name" not in img):
        # LVIS images live in COCO's split folders: .../train2017/000000391895.jpg
        split_folder, file_name = img["coco_url"].split("/")[-2:]
        return os.path.join(image_root, split_folder, file_name)
    return os.path.join(image_root, img["file_name"])


def load_lvis_json_checked(json_file: str, image_root: str, dataset_name: Optional[str] = None,
                           *, on_invalid: Optional[str] = None,
                           check_image_files: Optional[bool] = None,
                           prefer_coco_url: bool = False,
                           category_id_to_contiguous: Optional[Dict[int, int]] = None
                           ) -> List[Dict]:
    """Load an LVIS-format json into Detectron2 dicts, checking every annotation.

    Checked: the category id is one of the file's categories; the box has width and height
    > 0; the segmentation has at least one polygon and each polygon >= 3 points; the image
    file exists (``check_image_files``). ``on_invalid`` "error" raises
    :class:`InvalidAnnotationError` naming the images and annotations (all problems are listed,
    up to ten, with their count); "skip" drops bad annotations and missing images and logs the
    counts. None: the policy of :func:`set_invalid_annotation_policy`.

    Category ids map to contiguous ids with ``category_id_to_contiguous`` (default: the file's
    category ids in sorted order, i.e. id - 1 for LVIS's 1..C). Records keep
    ``not_exhaustive_category_ids`` and ``neg_category_ids`` (the file's ids), like Detectron2.
    """
    on_invalid = _DEFAULTS["on_invalid"] if on_invalid is None else on_invalid
    check_files = _DEFAULTS["check_image_files"] if check_image_files is None \
        else check_image_files
    if on_invalid not in INVALID_ANNOTATION_POLICIES:
        raise ValueError(f"on_invalid must be one of {INVALID_ANNOTATION_POLICIES}, "
                         f"got {on_invalid!r}")
    name = dataset_name or json_file
    with PathManager.open(json_file, "r") as f:
        data = json.load(f)
    if category_id_to_contiguous is None:
        category_id_to_contiguous = {c["id"]: i for i, c in
                                     enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
    anns_per_image: Dict[int, List[Dict]] = {}
    for ann in data.get("annotations", []):
        anns_per_image.setdefault(ann["image_id"], []).append(ann)
    known_images = {img["id"] for img in data["images"]}
    problems: List[str] = []
    counts: Counter = Counter()
    for image_id in sorted(set(anns_per_image) - known_images):
        for ann in anns_per_image[image_id]:
            problems.append(f"annotation id {ann.get('id')}: image id {image_id} is not in "
                            f"'images'")
            counts["unknown image id"] += 1

    dataset_dicts = []
    for img in sorted(data["images"], key=lambda i: i["id"]):
        file_name = _image_path(image_root, img, prefer_coco_url)
        where = f"image id {img['id']} ({file_name})"
        if check_files and not PathManager.isfile(file_name):
            problems.append(f"{where}: image file not found")
            counts["missing image file"] += 1
            continue
        record = {"file_name": file_name, "height": img["height"], "width": img["width"],
                  "image_id": img["id"],
                  "not_exhaustive_category_ids": img.get("not_exhaustive_category_ids", []),
                  "neg_category_ids": img.get("neg_category_ids", [])}
        objs = []
        for ann in anns_per_image.get(img["id"], []):
            if ann.get("category_id") not in category_id_to_contiguous:
                problem, kind = (f"unknown category id {ann.get('category_id')!r} (not in "
                                 f"'categories')", "unknown category id")
            else:
                problem = _box_problem(ann.get("bbox"))
                kind = "degenerate bbox"
                if problem is None:
                    problem, kind = _segmentation_problem(ann.get("segmentation")), "bad polygon"
            if problem is not None:
                problems.append(f"{where}, annotation id {ann.get('id')}: {problem}")
                counts[kind] += 1
                continue
            objs.append({"bbox": ann["bbox"], "bbox_mode": BoxMode.XYWH_ABS,
                         "category_id": category_id_to_contiguous[ann["category_id"]],
                         "segmentation": ann["segmentation"]})
        record["annotations"] = objs
        dataset_dicts.append(record)

    if problems:
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        listed = "\n  ".join(problems[:_MAX_LISTED])
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED \
            else ""
        if on_invalid == "error":
            raise InvalidAnnotationError(
                f"Dataset '{name}' ({json_file}) has {len(problems)} invalid entries ({summary}):"
                f"\n  {listed}{more}\nFix the file, or set DATASETS.INVALID_ANNOTATIONS skip to "
                f"drop them (DATASETS.CHECK_IMAGE_FILES False skips the file check).")
        logger.warning(f"Dataset '{name}': skipped {len(problems)} invalid entries ({summary}):"
                       f"\n  {listed}{more}")
    logger.info(f"Loaded {len(dataset_dicts)} images in the LVIS format from {json_file}")
    return dataset_dicts


def register_lvis_dataset(name: str, json_file: str, image_root: str,
                          metadata: Optional[Dict] = None) -> None:
    """Register a user's LVIS-format dataset (json + image root) as ``name``, evaluated by
    ``LVISEvaluator``. Metadata: ``thing_classes`` (category names, sorted by id) and
    ``thing_dataset_id_to_contiguous_id`` (so the evaluator maps results back to the file's
    ids), read from the json's categories."""
    with PathManager.open(json_file, "r") as f:
        categories = sorted(json.load(f)["categories"], key=lambda c: c["id"])
    id_map = {c["id"]: i for i, c in enumerate(categories)}
    DatasetCatalog.register(name, partial(load_lvis_json_checked, json_file, image_root, name,
                                          category_id_to_contiguous=id_map))
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="lvis",
        thing_classes=[c.get("synonyms", [c["name"]])[0] if c.get("synonyms") else c["name"]
                       for c in categories],
        thing_dataset_id_to_contiguous_id=id_map, **(metadata or {}))


def register_lvis_datasets_from_config(cfg) -> None:
    """Register ``DATASETS.LVIS_CUSTOM.{NAMES, JSON_FILES, IMAGE_ROOTS}`` (skipping names that
    are already registered with the same files) and apply ``DATASETS.INVALID_ANNOTATIONS`` /
    ``DATASETS.CHECK_IMAGE_FILES`` to every LVIS-format loader."""
    set_invalid_annotation_policy(cfg.DATASETS.INVALID_ANNOTATIONS, cfg.DATASETS.CHECK_IMAGE_FILES)
    c = cfg.DATASETS.LVIS_CUSTOM
    if not len(c.NAMES) == len(c.JSON_FILES) == len(c.IMAGE_ROOTS):
        raise ValueError(f"DATASETS.LVIS_CUSTOM.NAMES, JSON_FILES and IMAGE_ROOTS must have the "
                         f"same length, got {len(c.NAMES)}, {len(c.JSON_FILES)} and "
                         f"{len(c.IMAGE_ROOTS)}")
    for name, json_file, image_root in zip(c.NAMES, c.JSON_FILES, c.IMAGE_ROOTS):
        if name in DatasetCatalog.list():
            meta = MetadataCatalog.get(name)
            if getattr(meta, "json_file", None) == json_file \
                    and getattr(meta, "image_root", None) == image_root:
                continue
            raise ValueError(f"DATASETS.LVIS_CUSTOM: dataset name {name!r} is already "
                             f"registered (with other files); pick another name")
        register_lvis_dataset(name, json_file, image_root)


def use_checked_loader_for_builtin_lvis() -> None:
    """Load Detectron2's built-in LVIS splits (same names, files and metadata) with
    :func:`load_lvis_json_checked` instead of Detectron2's loader."""
    for name in BUILTIN_LVIS:
        if name not in DatasetCatalog.list():
            continue
        meta = MetadataCatalog.get(name)
        DatasetCatalog.remove(name)
        DatasetCatalog.register(name, partial(load_lvis_json_checked, meta.json_file,
                                              meta.image_root, name, prefer_coco_url=True))
