"""What the LVIS API (``lvis.LVIS`` and ``LVISEval``, behind Detectron2's ``LVISEvaluator``)
reads from a ground-truth json, checked before training rather than at the first evaluation.

The API indexes images and annotations by "id" (a repeated id silently loses entries) and reads
each category's "frequency" ("r", "c" or "f": the groups of APr, APc and APf), each image's
"neg_category_ids" and "not_exhaustive_category_ids" (LVIS's federated evaluation), "height" and
"width" (masks), and each annotation's "area" (the area ranges) and, for mask AP,
"segmentation". Without one of them it fails with a bare ``KeyError`` after the whole inference
pass. It does not read the categories' "image_count" or "instance_count".
"""
import numbers
from typing import Dict, List

from .lvis import _MAX_LISTED, read_json, repeated_ids

__all__ = ["FREQUENCIES", "check_lvis_api_fields", "lvis_api_problems"]

# LVIS's frequency groups: rare (1-10 training images), common (11-100), frequent (> 100).
FREQUENCIES = ("r", "c", "f")


def _line(what: str, bad: List[str]) -> List[str]:
    """[``"<count> <what>: <up to ten of bad>"``], or [] when nothing is bad."""
    if not bad:
        return []
    more = f", ... and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
    return [f"{len(bad)} {what}: {', '.join(bad[:_MAX_LISTED])}{more}"]


def _frequency(category: Dict) -> str:
    return repr(category["frequency"]) if "frequency" in category else "none"


def _size_ok(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def lvis_api_problems(data, masks: bool = True) -> List[str]:
    """What the LVIS API would fail on (or silently lose) in the parsed json ``data``: one line
    per kind of problem, with its count and up to ten of its entries. ``masks``: mask AP is
    evaluated too (each annotation needs a "segmentation")."""
    lists = ("images", "annotations", "categories")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in lists):
        return [f"no top-level lists {', '.join(repr(k) for k in lists)}"]
    images, anns = data["images"], data["annotations"]
    problems = _line(
        "categories without a 'frequency' of 'r', 'c' or 'f' (rare, common, frequent: the "
        "groups of APr, APc, APf)",
        [f"id {c.get('id')} {c.get('name')!r} ({_frequency(c)})" for c in data["categories"]
         if c.get("frequency") not in FREQUENCIES])
    problems += _line("image ids used by more than one image",
                      [f"{i} ({len(e)} times)" for i, e in repeated_ids(images)])
    for field in ("neg_category_ids", "not_exhaustive_category_ids"):
        problems += _line(f"images without a list {field!r} (category ids)",
                          [f"image id {img.get('id')}" for img in images
                           if not isinstance(img.get(field), list)])
    problems += _line("images without an integer 'height' and 'width' > 0",
                      [f"image id {img.get('id')}" for img in images
                       if not (_size_ok(img.get("height")) and _size_ok(img.get("width")))])
    problems += _line("annotations without an 'id'",
                      [f"an annotation of image id {a.get('image_id')}" for a in anns
                       if "id" not in a])
    problems += _line("annotation ids used by more than one annotation",
                      [f"{i} ({len(e)} times)" for i, e in
                       repeated_ids([a for a in anns if "id" in a])])
    problems += _line("annotations without a numeric 'area'",
                      [f"annotation id {a.get('id')}" for a in anns
                       if not isinstance(a.get("area"), numbers.Real)
                       or isinstance(a.get("area"), bool)])
    if masks:
        problems += _line("annotations without a 'segmentation' (mask AP is evaluated: "
                          "MODEL.MASK_ON)",
                          [f"annotation id {a.get('id')}" for a in anns
                           if not isinstance(a.get("segmentation"), (list, dict))])
    return problems


def check_lvis_api_fields(json_file: str, where: str, masks: bool = True) -> None:
    """Raise ``ValueError`` naming ``where`` (the config key and dataset), ``json_file`` and
    every problem of :func:`lvis_api_problems` when the LVIS API could not evaluate on it."""
    problems = lvis_api_problems(read_json(json_file), masks)
    if problems:
        raise ValueError(
            f"{where}: {json_file} cannot be evaluated with the LVIS API (its evaluation would "
            f"fail after the inference pass):\n  " + "\n  ".join(problems) +
            "\nLVIS's own files have all of these fields; add them to the file (see "
            "tde_det/data/detection/lvis_api_fields.py).")
