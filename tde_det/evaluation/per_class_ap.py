"""Per-class AP of a run LVIS evaluation, and its files (CSV, JSON, a plot against the training
image count).

The LVIS API's headline AP (``LVISEval._summarize``) is the mean of the elements > -1 of
``eval["precision"]`` (IoU thresholds x recall thresholds x categories x area ranges) for the
area range "all"; APr, APc and APf take the categories of one frequency group. A category has
either all its elements > -1 (it has ground truth in the evaluated images) or none (LVIS leaves
it out), so a row's AP, the mean of its category's elements, gives the headline: AP, APr, APc
and APf are the means of the rows' APs (all, or one group), the NaN rows left out.
"""
import csv
import io
import json
import logging
import math
import numbers
import os
from typing import Dict, List, Optional

import numpy as np
from detectron2.utils.file_io import PathManager

__all__ = ["PER_CLASS_COLUMNS", "per_class_ap", "per_class_columns", "write_per_class_ap"]

logger = logging.getLogger(__name__)
# the fields of per_class_ap's rows; a caller may add others (e.g. another metric)
PER_CLASS_COLUMNS = ("id", "name", "frequency", "image_count", "instances", "AP")
FREQUENCY_COLOURS = {"r": "tab:red", "c": "tab:orange", "f": "tab:blue"}


def per_class_ap(evaluation) -> List[Dict]:
    """One row per category of ``evaluation.params.cat_ids`` (an ``lvis.LVISEval`` after
    ``run``): "id", "name", "frequency" (r/c/f), "image_count" (the json category's count of
    training images; None without one), "instances" (its ground-truth annotations in the
    evaluated images) and "AP" (%, area "all": the mean of its precision elements > -1 over
    IoU and recall thresholds; NaN where LVIS leaves the category out)."""
    precision = getattr(evaluation, "eval", {}).get("precision")
    params = evaluation.params
    if precision is None:
        raise ValueError("per-class AP needs a run LVIS evaluation: eval['precision'] is empty "
                         "(call run(), or evaluate() and accumulate(), first)")
    if not params.use_cats or precision.shape[2] != len(params.cat_ids):
        raise ValueError(f"per-class AP needs one precision column per category: params."
                         f"use_cats {params.use_cats}, {precision.shape[2]} columns for "
                         f"{len(params.cat_ids)} categories")
    ground_truth = evaluation.lvis_gt
    instances = dict.fromkeys(params.cat_ids, 0)
    for img_id in params.img_ids:
        for ann in ground_truth.img_ann_map.get(img_id, ()):
            if ann["category_id"] in instances:
                instances[ann["category_id"]] += 1
    area = params.area_rng_lbl.index("all")
    rows = []
    for k, cat_id in enumerate(params.cat_ids):
        elements = precision[:, :, k, area]
        elements = elements[elements > -1]
        category = ground_truth.cats[cat_id]
        rows.append({
            "id": int(cat_id), "name": category.get("name", ""),
            "frequency": category.get("frequency"), "image_count": category.get("image_count"),
            "instances": instances[cat_id],
            "AP": float(np.mean(elements) * 100) if elements.size else float("nan"),
        })
    return rows


def per_class_columns(rows: List[Dict]) -> List[str]:
    """Every key of ``rows``: those of :data:`PER_CLASS_COLUMNS` first, then the others in the
    order they first appear (all of :data:`PER_CLASS_COLUMNS` when there are no rows)."""
    if not rows:
        return list(PER_CLASS_COLUMNS)
    keys = [c for c in PER_CLASS_COLUMNS if any(c in r for r in rows)]
    for row in rows:
        keys += [k for k in row if k not in keys]
    return keys


def _missing(value) -> bool:
    return value is None or (isinstance(value, numbers.Real) and math.isnan(value))


def _cell(value):
    """``value`` for the CSV and JSON: None for NaN or None, numpy scalars as Python's."""
    if _missing(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def write_per_class_ap(rows: List[Dict], folder: str, task: str, metric: str = "AP") -> List[str]:
    """Write ``per_class_<task>.csv`` and ``.json`` (every key of the rows, see
    :func:`per_class_columns`; a NaN or None value is an empty cell, JSON null) and
    ``per_class_<task>.png`` (``metric`` against the training image count) to ``folder``.
    Returns the paths written."""
    if rows and not any(metric in r for r in rows):
        raise ValueError(f"no per-class row has the metric {metric!r} to plot; the rows have "
                         f"{per_class_columns(rows)}")
    PathManager.mkdirs(folder)
    columns = per_class_columns(rows)
    table = [{c: _cell(r.get(c)) for c in columns} for r in rows]
    stem = os.path.join(folder, f"per_class_{task}")
    with PathManager.open(stem + ".csv", "w") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)
    with PathManager.open(stem + ".json", "w") as f:
        json.dump(table, f, indent=1, allow_nan=False)
    image, figure = io.BytesIO(), _plot(rows, task, metric)
    figure.savefig(image, format="png", dpi=90)
    import matplotlib.pyplot as plt

    plt.close(figure)
    with PathManager.open(stem + ".png", "wb") as f:
        f.write(image.getvalue())
    logger.info(f"Wrote the per-class {task} {metric} of {len(rows)} categories to "
                f"{stem}.{{csv,json,png}}")
    return [stem + ".csv", stem + ".json", stem + ".png"]


def _plot(rows: List[Dict], task: str, metric: str):
    """``metric`` against the training image count (log x), one colour per frequency group;
    the rows without ``metric`` or without an image count > 0 are left out and counted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown, no_metric, no_count = [], [], []
    for r in rows:
        count = r.get("image_count")
        if _missing(r.get(metric)):
            no_metric.append(r)
        elif isinstance(count, bool) or not isinstance(count, numbers.Real) or not count > 0:
            no_count.append(r)
        else:
            shown.append(r)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for group in sorted({r.get("frequency") for r in shown}, key=_group_order):
        points = [r for r in shown if r.get("frequency") == group]
        ax.scatter([r["image_count"] for r in points], [r[metric] for r in points], s=12,
                   alpha=0.7, color=FREQUENCY_COLOURS.get(group, "0.5"),
                   label=f"{group} ({len(points)})")
    if shown:
        ax.set_xscale("log")
        ax.legend(title="frequency", fontsize=8)
    left_out = [f"{len(no_metric)} without {metric} (LVIS leaves them out)"] if no_metric else []
    if no_count:
        left_out.append(f"{len(no_count)} without a training image count > 0")
    ax.set_title(f"per-class {task} {metric}: {len(shown)} of {len(rows)} categories shown"
                 + ("\nnot shown: " + "; ".join(left_out) if left_out else ""), fontsize=9)
    ax.set_xlabel("training images of the category (image_count, log scale)")
    ax.set_ylabel(f"{metric} (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _group_order(group: Optional[str]):
    return ("r", "c", "f").index(group) if group in ("r", "c", "f") else 3, str(group)
