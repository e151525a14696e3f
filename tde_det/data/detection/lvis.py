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
from typing import Any, Dict, List, Optional, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from detectron2.utils.file_io import PathManager

__all__ = ["INVALID_ANNOTATION_POLICIES", "MASK_FORMATS", "InvalidAnnotationError",
           "check_invalid_annotation_policy",
           "load_lvis_json_checked", "read_json", "register_lvis_dataset",
           "register_lvis_datasets_from_config",
           "set_invalid_annotation_policy", "use_checked_loader_for_builtin_lvis"]

logger = logging.getLogger(__name__)

INVALID_ANNOTATION_POLICIES = ("error", "skip")
# Detectron2's INPUT.MASK_FORMAT values.
MASK_FORMATS = ("polygon", "bitmask")
# The policy used when a loader is called without one (set from the config by the trainer,
# with DATASETS.INVALID_ANNOTATIONS, DATASETS.CHECK_IMAGE_FILES, INPUT.MASK_FORMAT and
# MODEL.MASK_ON).
_DEFAULTS: Dict[str, Any] = {"on_invalid": "error", "check_image_files": True,
                             "mask_format": "polygon", "require_masks": True}
# Detectron2's built-in LVIS splits that have annotations.
BUILTIN_LVIS = ("lvis_v1_train", "lvis_v1_val", "lvis_v0.5_train", "lvis_v0.5_val",
                "lvis_v0.5_val_rand_100")
_MAX_LISTED = 10


class InvalidAnnotationError(ValueError):
    """An LVIS-format file holds an annotation (or image) that cannot be trained on."""


def read_json(json_file: str) -> Any:
    """The parsed ``json_file``; ``json.JSONDecodeError`` naming the file, line and column when
    it is not valid JSON."""
    with PathManager.open(json_file, "r") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise json.JSONDecodeError(f"{json_file} is not valid JSON (a truncated or partly "
                                       f"written file?): {e.msg}", e.doc, e.pos) from None


def _flag(key: str, value: Any) -> bool:
    if isinstance(value, str) or value not in (True, False):
        raise ValueError(f"{key} must be True or False, got {value!r}")
    return bool(value)


def check_invalid_annotation_policy(value: str,
                                    key: str = "DATASETS.INVALID_ANNOTATIONS") -> str:
    """``value`` if it is one of :data:`INVALID_ANNOTATION_POLICIES`, else ``ValueError``
    naming ``key``."""
    if value not in INVALID_ANNOTATION_POLICIES:
        raise ValueError(f"{key} must be one of {INVALID_ANNOTATION_POLICIES}, got {value!r}")
    return value


def _policy(on_invalid: str, check_image_files: Any, mask_format: str,
            require_masks: Any) -> Dict[str, Any]:
    """The validated policy; errors name the config key each value comes from."""
    check_invalid_annotation_policy(on_invalid, "DATASETS.INVALID_ANNOTATIONS (on_invalid)")
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"INPUT.MASK_FORMAT (mask_format) must be one of {MASK_FORMATS}, "
                         f"got {mask_format!r}")
    return {"on_invalid": on_invalid,
            "check_image_files": _flag("DATASETS.CHECK_IMAGE_FILES (check_image_files)",
                                       check_image_files),
            "mask_format": mask_format,
            "require_masks": _flag("MODEL.MASK_ON (require_masks)", require_masks)}


def set_invalid_annotation_policy(on_invalid: str = "error", check_image_files: bool = True, *,
                                  mask_format: str = "polygon",
                                  require_masks: bool = True) -> None:
    """Set what the loaders of LVIS-format datasets do by default with invalid annotations.

    Every call sets the whole policy (arguments left out take their defaults; a call without
    arguments restores the defaults). ``mask_format`` is the mask format the data is trained with
    (``INPUT.MASK_FORMAT``): "polygon" rejects RLE segmentations; ``require_masks``
    (``MODEL.MASK_ON``) False trains boxes only, so segmentations are not checked.
    """
    _DEFAULTS.update(_policy(on_invalid, check_image_files, mask_format, require_masks))


def _box_problem(bbox) -> Optional[str]:
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return f"bbox must be [x, y, w, h], got {bbox!r}"
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox):
        return f"bbox has a non-finite or non-numeric value: {bbox!r}"
    if bbox[2] <= 0 or bbox[3] <= 0:
        return f"degenerate bbox (width or height <= 0): {bbox!r}"
    return None


def _rle_problem(rle: Dict, height: int, width: int) -> Optional[str]:
    size, counts = rle.get("size"), rle.get("counts")
    if size is None or counts is None:
        return f"RLE segmentation without 'size' and 'counts': keys {sorted(rle)}"
    if not isinstance(size, (list, tuple)) or list(size) != [height, width]:
        return f"RLE size {size!r} is not the image's [height, width] [{height}, {width}]"
    if isinstance(counts, list):  # uncompressed RLE: run lengths covering the image
        if not all(isinstance(c, int) and c >= 0 for c in counts) \
                or sum(counts) != height * width:
            return f"uncompressed RLE counts do not sum to height * width = {height * width}"
    elif not isinstance(counts, (str, bytes)):
        return f"RLE counts must be a string or a list, got {type(counts).__name__}"
    return None


def _segmentation_problem(segm, mask_format: str, height: int,
                          width: int) -> Optional[Tuple[str, str]]:
    """(kind, message) of what makes ``segm`` unusable with ``mask_format``, or None."""
    if isinstance(segm, dict):
        if mask_format == "polygon":
            return ("RLE segmentation with INPUT.MASK_FORMAT polygon",
                    "RLE segmentation (a dict) but INPUT.MASK_FORMAT is 'polygon': set "
                    "INPUT.MASK_FORMAT bitmask, or convert the masks to polygons")
        problem = _rle_problem(segm, height, width)
        return None if problem is None else ("bad RLE", problem)
    if not isinstance(segm, list) or len(segm) == 0:
        return "bad polygon", "missing or empty segmentation (no polygon)"
    for poly in segm:
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
            n = len(poly) if isinstance(poly, list) else poly
            return ("bad polygon", f"polygon with fewer than 3 points (or an odd coordinate "
                                   f"count): {n!r} values")
    return None


def _as_trained(segm, height: int, width: int):
    """The segmentation as Detectron2's mapper reads it: uncompressed RLE is compressed."""
    if isinstance(segm, dict) and isinstance(segm["counts"], list):
        from pycocotools import mask as mask_util

        return mask_util.frPyObjects(segm, height, width)
    return segm


def _image_path(image_root: str, img: Dict, prefer_coco_url: bool) -> str:
    if "coco_url" in img and (prefer_coco_url or "file_name" not in img):
        # LVIS images live in COCO's split folders: .../train2017/000000391895.jpg
        split_folder, file_name = img["coco_url"].split("/")[-2:]
        return os.path.join(image_root, split_folder, file_name)
    return os.path.join(image_root, img["file_name"])


def _annotation_problem(ann: Dict,
                        category_id_to_contiguous: Dict[int, int]) -> Optional[Tuple[str, str]]:
    """(kind, message) of what is wrong with an annotation's category or box, or None."""
    if ann.get("category_id") not in category_id_to_contiguous:
        return ("unknown category id",
                f"unknown category id {ann.get('category_id')!r} (not in 'categories')")
    problem = _box_problem(ann.get("bbox"))
    return None if problem is None else ("degenerate bbox", problem)


def _listed(lines: List[str]) -> str:
    """The first :data:`_MAX_LISTED` of ``lines``, one an indented line, and how many more."""
    more = f"\n  ... and {len(lines) - _MAX_LISTED} more" if len(lines) > _MAX_LISTED else ""
    return "\n  ".join(lines[:_MAX_LISTED]) + more


def repeated_ids(entries: List[Dict]) -> List[Tuple[Any, List[Dict]]]:
    """(id, the entries with it) for every "id" that more than one of ``entries`` has, in the
    order of first use."""
    with_id: Dict[Any, List[Dict]] = {}
    for entry in entries:
        with_id.setdefault(entry.get("id"), []).append(entry)
    return [(i, e) for i, e in with_id.items() if len(e) > 1]


def _check_unique_image_ids(images: List[Dict], name: str, json_file: str,
                            describe) -> None:
    """Raise :class:`InvalidAnnotationError` listing the image ids that more than one entry of
    ``images`` has, each with its entries (``describe(img)``), whatever the policy: which of
    the pictures an annotation of such an id shows cannot be told, so none can be skipped."""
    repeated = repeated_ids(images)
    if repeated:
        lines = [f"image id {i}: {len(e)} entries ({', '.join(describe(img) for img in e)})"
                 for i, e in repeated]
        raise InvalidAnnotationError(
            f"Dataset '{name}' ({json_file}) has {len(repeated)} image ids used by more than one "
            f"entry of 'images':\n  {_listed(lines)}\nAn image id must name one picture: the "
            f"annotations of a repeated id would go to every picture of that id, so "
            f"DATASETS.INVALID_ANNOTATIONS skip cannot choose one. Give each image its own id.")


def load_lvis_json_checked(json_file: str, image_root: str, dataset_name: Optional[str] = None,
                           *, on_invalid: Optional[str] = None,
                           check_image_files: Optional[bool] = None,
                           mask_format: Optional[str] = None,
                           require_masks: Optional[bool] = None,
                           prefer_coco_url: bool = False,
                           category_id_to_contiguous: Optional[Dict[int, int]] = None
                           ) -> List[Dict]:
    """Load an LVIS-format json into Detectron2 dicts, checking every annotation.

    Checked: every image id names one entry of "images" (a repeated id is an error under
    either policy: its annotations cannot be given to one picture); annotation ids are unique
    ("skip" keeps the first annotation of an id); the category id is one of the file's
    categories; the box has width and height
    > 0; the image file exists (``check_image_files``); with ``require_masks`` (masks are
    trained), the segmentation is usable with ``mask_format``: polygons (at least one, each
    >= 3 points) for "polygon"; polygons or RLE (``size`` = [height, width], ``counts``) for
    "bitmask". Without ``require_masks`` (boxes only) a missing or unusable segmentation is no
    problem: the record then has no "segmentation" for that annotation.

    ``on_invalid`` "error" raises :class:`InvalidAnnotationError` naming the images and
    annotations (all problems are listed, up to ten, with their count); "skip" drops bad
    annotations and missing images and logs the counts. Arguments left at None take the policy
    of :func:`set_invalid_annotation_policy`. ``prefer_coco_url``: the image lives at
    ``image_root/<split folder>/<file>`` of its "coco_url" (LVIS v1 has no "file_name"; also
    used when an image has no "file_name").

    Category ids map to contiguous ids with ``category_id_to_contiguous`` (default: the file's
    category ids in sorted order, i.e. id - 1 for LVIS's 1..C). Records keep
    ``not_exhaustive_category_ids`` and ``neg_category_ids`` (the file's ids), like Detectron2.
    """
    given = {"on_invalid": on_invalid, "check_image_files": check_image_files,
             "mask_format": mask_format, "require_masks": require_masks}
    policy = _policy(**{k: _DEFAULTS[k] if v is None else v for k, v in given.items()})
    on_invalid, mask_format = policy["on_invalid"], policy["mask_format"]
    name = dataset_name or json_file
    data = read_json(json_file)
    if category_id_to_contiguous is None:
        category_id_to_contiguous = {c["id"]: i for i, c in
                                     enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
    _check_unique_image_ids(data["images"], name, json_file,
                            lambda img: _image_path(image_root, img, prefer_coco_url))
    problems: List[str] = []
    counts: Counter = Counter()
    anns_per_image: Dict[int, List[Dict]] = {}
    image_of_ann: Dict[Any, Any] = {}  # annotation id -> image id of its first annotation
    for ann in data.get("annotations", []):
        ann_id = ann.get("id")
        if ann_id is not None and ann_id in image_of_ann:
            problems.append(f"annotation id {ann_id} (image id {ann['image_id']}): the id of an "
                            f"earlier annotation (of image id {image_of_ann[ann_id]})")
            counts["duplicate annotation id"] += 1
            continue
        image_of_ann[ann_id] = ann["image_id"]
        anns_per_image.setdefault(ann["image_id"], []).append(ann)
    known_images = {img["id"] for img in data["images"]}
    for image_id in sorted(set(anns_per_image) - known_images):
        for ann in anns_per_image[image_id]:
            problems.append(f"annotation id {ann.get('id')}: image id {image_id} is not in "
                            f"'images'")
            counts["unknown image id"] += 1

    dataset_dicts, boxes_only = [], 0
    for img in sorted(data["images"], key=lambda i: i["id"]):
        file_name = _image_path(image_root, img, prefer_coco_url)
        where = f"image id {img['id']} ({file_name})"
        if policy["check_image_files"] and not PathManager.isfile(file_name):
            problems.append(f"{where}: image file not found")
            counts["missing image file"] += 1
            continue
        record = {"file_name": file_name, "height": img["height"], "width": img["width"],
                  "image_id": img["id"],
                  "not_exhaustive_category_ids": img.get("not_exhaustive_category_ids", []),
                  "neg_category_ids": img.get("neg_category_ids", [])}
        objs = []
        for ann in anns_per_image.get(img["id"], []):
            segm = ann.get("segmentation")
            segm_problem = _segmentation_problem(segm, mask_format, img["height"], img["width"])
            problem = _annotation_problem(ann, category_id_to_contiguous) \
                or (segm_problem if policy["require_masks"] else None)
            if problem is not None:
                problems.append(f"{where}, annotation id {ann.get('id')}: {problem[1]}")
                counts[problem[0]] += 1
                continue
            obj = {"bbox": ann["bbox"], "bbox_mode": BoxMode.XYWH_ABS,
                   "category_id": category_id_to_contiguous[ann["category_id"]]}
            if segm_problem is None:
                obj["segmentation"] = _as_trained(segm, img["height"], img["width"])
            else:  # boxes only (require_masks False): the segmentation is not used
                boxes_only += 1
            objs.append(obj)
        record["annotations"] = objs
        dataset_dicts.append(record)

    if problems:
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        if on_invalid == "error":
            raise InvalidAnnotationError(
                f"Dataset '{name}' ({json_file}) has {len(problems)} invalid entries ({summary}):"
                f"\n  {_listed(problems)}\nFix the file, or set DATASETS.INVALID_ANNOTATIONS "
                f"skip to drop them (DATASETS.CHECK_IMAGE_FILES False skips the file check).")
        logger.warning(f"Dataset '{name}': skipped {len(problems)} invalid entries ({summary}):"
                       f"\n  {_listed(problems)}")
    if boxes_only:
        logger.info(f"Dataset '{name}': {boxes_only} annotations have no usable segmentation "
                    f"(kept as boxes; masks are not trained)")
    logger.info(f"Loaded {len(dataset_dicts)} images in the LVIS format from {json_file}")
    return dataset_dicts


def register_lvis_dataset(name: str, json_file: str, image_root: str,
                          metadata: Optional[Dict] = None) -> None:
    """Register a user's LVIS-format dataset (json + image root) as ``name``, evaluated by
    ``LVISEvaluator``. Metadata: ``thing_classes`` (category names, sorted by id) and
    ``thing_dataset_id_to_contiguous_id`` (so the evaluator maps results back to the file's
    ids), read from the json's categories. ``ValueError`` naming the file when it has no
    top-level "categories" list of objects with an "id"."""
    data = read_json(json_file)
    categories = data.get("categories") if isinstance(data, dict) else None
    if not isinstance(categories, list) or not all(isinstance(c, dict) and "id" in c
                                                   for c in categories):
        raise ValueError(f"{json_file}: no top-level 'categories' list of objects with an 'id' "
                         f"(is it an LVIS- or COCO-format json?)")
    categories = sorted(categories, key=lambda c: c["id"])
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
    are already registered with the same files) and apply ``DATASETS.INVALID_ANNOTATIONS``,
    ``DATASETS.CHECK_IMAGE_FILES``, ``INPUT.MASK_FORMAT`` and ``MODEL.MASK_ON`` to every
    LVIS-format loader."""
    set_invalid_annotation_policy(cfg.DATASETS.INVALID_ANNOTATIONS, cfg.DATASETS.CHECK_IMAGE_FILES,
                                  mask_format=cfg.INPUT.MASK_FORMAT,
                                  require_masks=cfg.MODEL.MASK_ON)
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
