"""Per-class AP: its rows give the headline AP, APr, APc and APf (with FastLVISEval and the LVIS
API's LVISEval), the NaN classes are those LVIS leaves out, and the files hold every row and
column."""
import copy
import csv
import json
import math

import numpy as np
import pytest
from lvis import LVISEval, LVISResults

from tde_det.evaluation.fast_lvis_eval import FastLVISEval
from tde_det.evaluation.per_class_ap import (PER_CLASS_COLUMNS, _plot, per_class_ap,
                                             per_class_columns, write_per_class_ap)
from tests.helpers.federated_lvis import federated_detections, federated_ground_truth


def _evaluation(cls, seed, iou_type="bbox", max_dets=300):
    """A run evaluation of random federated data; the categories have training image counts
    (but one), and some have no (or only ignored) ground truth."""
    rng = np.random.default_rng(seed)
    gt = federated_ground_truth(rng, num_images=10, num_categories=12, ignore=seed % 2 == 1)
    for k, cat in enumerate(gt.dataset["categories"]):
        if k != 4:
            cat["image_count"] = int(3 ** (k % 6))
    results = federated_detections(rng, gt, crowd=20 if seed == 2 else 0)
    if iou_type == "segm":
        for r in results:
            r.pop("bbox")
    ev = cls(gt, LVISResults(gt, results, max_dets=max_dets), iou_type)
    ev.run()
    return ev, gt


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("cls", [FastLVISEval, LVISEval])
@pytest.mark.parametrize("seed", range(4))
def test_headline_metrics_are_the_means_of_the_rows(seed, cls, iou_type):
    ev, gt = _evaluation(cls, seed, iou_type, max_dets=300 if seed < 3 else 15)
    rows = per_class_ap(ev)
    assert [r["id"] for r in rows] == sorted(gt.cats) and list(rows[0]) == list(PER_CLASS_COLUMNS)
    groups = {"AP": "rcf", "APr": "r", "APc": "c", "APf": "f"}
    for metric, group in groups.items():
        values = [r["AP"] for r in rows if r["frequency"] in group and not math.isnan(r["AP"])]
        if values:
            assert np.isclose(np.mean(values), ev.results[metric] * 100, rtol=1e-12, atol=0)
        else:  # LVIS's -1 for a group without ground truth
            assert ev.results[metric] == -1
    assert sum(math.isnan(r["AP"]) for r in rows) >= 1  # some class left out
    assert any(r["AP"] > 0 for r in rows)
    # NaN exactly for the classes without a ground truth LVIS counts (not ignored)
    counted = {a["category_id"] for a in gt.anns.values() if not a.get("ignore")}
    assert {r["id"] for r in rows if math.isnan(r["AP"])} == set(gt.cats) - counted
    for r in rows:
        cat = gt.cats[r["id"]]
        assert (r["name"], r["frequency"], r["image_count"]) == (
            cat["name"], cat["frequency"], cat.get("image_count"))
        assert r["instances"] == sum(a["category_id"] == r["id"] for a in gt.anns.values())


def test_the_rows_equal_for_both_evaluations():
    fast, lvis_api = (per_class_ap(_evaluation(cls, 5, "segm")[0])
                      for cls in (FastLVISEval, LVISEval))
    assert json.dumps(fast) == json.dumps(lvis_api)


def test_an_evaluation_that_has_not_run_is_refused():
    ev, gt = _evaluation(FastLVISEval, 0)
    fresh = FastLVISEval(gt, ev.lvis_dt, "bbox")
    with pytest.raises(ValueError, match="run"):
        per_class_ap(fresh)
    fresh.params.use_cats = 0  # one column for all categories (LVIS's summarize fails then)
    fresh.evaluate()
    fresh.accumulate()
    with pytest.raises(ValueError, match="use_cats"):
        per_class_ap(fresh)


def _rows():
    return [
        {"id": 1, "name": "a", "frequency": "r", "image_count": 3, "instances": 2, "AP": 12.5},
        {"id": 2, "name": "b", "frequency": "c", "image_count": 40, "instances": 0,
         "AP": float("nan"), "AP-fixed": float("nan")},
        {"id": 3, "name": "c,d", "frequency": "f", "image_count": None, "instances": 5,
         "AP": 50.0, "AP-fixed": 51.25},
        {"id": 4, "name": "e", "frequency": "f", "image_count": np.int64(900), "instances": 7,
         "AP": 1 / 3, "AP-fixed": np.float32(0.5)},
        {"id": 5, "name": "g", "frequency": "r", "image_count": 2, "instances": 1,
         "AP": 0.0, "AP-fixed": np.float32("nan")},
    ]


def test_files_hold_every_row_and_column(tmp_path):
    rows = _rows()
    before = copy.deepcopy(rows)
    paths = write_per_class_ap(rows, str(tmp_path / "out"), "segm")
    stem = tmp_path / "out" / "per_class_segm"
    assert paths == [f"{stem}.csv", f"{stem}.json", f"{stem}.png"]
    columns = [*PER_CLASS_COLUMNS, "AP-fixed"]
    with open(f"{stem}.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == columns and len(table) == 6
    assert table[1] == ["1", "a", "r", "3", "2", "12.5", ""]  # no AP-fixed: empty
    assert table[2][5:] == ["", ""] and table[3][1] == "c,d" and table[3][3] == ""
    assert float(table[4][5]) == 1 / 3  # full precision
    data = json.load(open(f"{stem}.json"))
    assert [list(r) for r in data] == [columns] * 5
    assert data[1]["AP"] is None and data[0]["AP-fixed"] is None and data[2]["image_count"] is None
    assert data[3]["AP"] == 1 / 3 and data[2]["AP-fixed"] == 51.25
    assert data[3]["image_count"] == 900 and data[3]["AP-fixed"] == 0.5  # numpy scalars
    assert data[4]["AP"] == 0.0 and data[4]["AP-fixed"] is None and table[5][6] == ""
    assert open(f"{stem}.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert repr(rows) == repr(before)  # not modified (NaN != NaN: compared as text)
    # another metric plotted: it must be in the rows
    write_per_class_ap(rows, str(tmp_path / "fixed"), "bbox", metric="AP-fixed")
    assert (tmp_path / "fixed" / "per_class_bbox.png").is_file()
    with pytest.raises(ValueError, match="'APx'"):
        write_per_class_ap(rows, str(tmp_path / "bad"), "bbox", metric="APx")


def test_the_plot_leaves_out_and_counts_the_classes_without_values():
    fig = _plot(_rows(), "bbox", "AP")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    shown = {c.get_label(): len(c.get_offsets()) for c in ax.collections}
    assert shown == {"r (2)": 2, "f (1)": 1}  # NaN AP (class 2) and no image count (class 3)
    title = ax.get_title()
    assert "3 of 5 categories shown" in title and "1 without AP" in title
    assert "1 without a training image count" in title
    empty = _plot([], "bbox", "AP").axes[0]
    assert "0 of 0" in empty.get_title()


def test_columns_of_no_rows():
    assert per_class_columns([]) == list(PER_CLASS_COLUMNS)
