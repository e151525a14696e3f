"""FastLVISEval gives the LVIS API's LVISEval's numbers: the same precision and recall arrays,
bit for bit, and the same per-image results, on random federated data built to reach every
branch of the LVIS API's matching and accumulation."""
import copy
from collections import Counter

import numpy as np
import pytest
from lvis import LVISEval, LVISResults

from tde_det.evaluation.fast_lvis_eval import FastLVISEval
from tde_det.evaluation.lvis_records import run_lvis_evaluation
from tests.helpers.federated_lvis import federated_detections as _detections
from tests.helpers.federated_lvis import federated_ground_truth as _ground_truth


def _run(cls, gt, results, iou_type, max_dets):
    gt = copy.deepcopy(gt)  # the segm evaluation converts the ground truth to RLE in place
    results = copy.deepcopy(results)
    if iou_type == "segm":
        for r in results:
            r.pop("bbox")
    ev = cls(gt, LVISResults(gt, results, max_dets=max_dets), iou_type)
    ev.params.max_dets = max_dets  # as AP-fixed's reference code sets -1; names "AR@<n>"
    ev.run()
    return ev


def _assert_same(ref: LVISEval, fast: FastLVISEval):
    np.testing.assert_array_equal(fast.eval["precision"], ref.eval["precision"])
    np.testing.assert_array_equal(fast.eval["recall"], ref.eval["recall"])
    assert fast.results == ref.results  # -1 for a metric without categories, never NaN
    assert list(fast.results) == list(ref.results)
    num_images = len(ref.params.img_ids)
    num_areas = len(ref.params.area_rng)
    expected = {}
    for n, e in enumerate(ref.eval_imgs):
        if e is not None:
            k, rest = divmod(n, num_areas * num_images)
            expected.setdefault((k, rest // num_images), []).append(e)
    assert sorted(fast.eval_imgs) == sorted(expected)
    for key, per_image in expected.items():
        assert len(fast.eval_imgs[key]) == len(per_image)
        for a, b in zip(fast.eval_imgs[key], per_image):
            assert set(a) == set(b)
            for field in b:
                np.testing.assert_array_equal(np.asarray(a[field]), np.asarray(b[field]),
                                              err_msg=f"{key} {field}")
    for k, by_area in ref.eval["dt_pointers"].items():
        for a, pointers in by_area.items():
            assert set(fast.eval["dt_pointers"][k][a]) == set(pointers)
            for field, value in pointers.items():
                np.testing.assert_array_equal(fast.eval["dt_pointers"][k][a][field], value)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed", range(6))
def test_equals_lvis_api(seed, iou_type):
    rng = np.random.default_rng(seed)
    gt = _ground_truth(rng, ignore=seed % 2 == 1)
    results = _detections(rng, gt, crowd=40 if seed in (2, 3) else 0)
    max_dets = 300 if seed < 4 else 12  # LVISResults keeps each image's top scores
    ref = _run(LVISEval, gt, results, iou_type, max_dets)
    fast = _run(FastLVISEval, gt, results, iou_type, max_dets)
    assert np.any(ref.eval["precision"] > 0)  # something matched
    _assert_same(ref, fast)


def _unlimited_data(seed):
    """Ground truth and more than 300 detections per image (ties, negative, not-exhaustive and
    unknown categories), the images' detections interleaved: with no per-image limit
    ``LVISResults`` numbers them in the order given."""
    rng = np.random.default_rng(100 + seed)
    gt = _ground_truth(rng, num_images=6, ignore=seed % 2 == 1)
    results = _detections(rng, gt, per_image=310, crowd=40)
    results = [results[i] for i in rng.permutation(len(results))]
    assert min(Counter(r["image_id"] for r in results).values()) > 300
    return gt, results


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed", range(2))
def test_no_detection_limit_equals_lvis_api(seed, iou_type):
    """AP-fixed's protocol (``LVISResults(gt, results, max_dets=-1)``, ``params.max_dets =
    -1``): every detection evaluated, FastLVISEval equal to the LVIS API."""
    gt, results = _unlimited_data(seed)
    ref = _run(LVISEval, gt, results, iou_type, -1)
    fast = _run(FastLVISEval, gt, results, iou_type, -1)
    assert len(ref.lvis_dt.anns) == len(results)  # nothing dropped
    assert "AR@-1" in ref.results and np.any(ref.eval["precision"] > 0)
    _assert_same(ref, fast)
    def evaluated(ev):  # detections matched or counted, area "all"
        return sum(len(e["dt_ids"]) for (k, a), es in ev.eval_imgs.items() if a == 0
                   for e in es)

    assert evaluated(_run(FastLVISEval, gt, results, iou_type, 300)) < evaluated(fast)
    limited = _run(FastLVISEval, gt, results, iou_type, 100)
    assert not np.array_equal(limited.eval["precision"], fast.eval["precision"])


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_run_lvis_evaluation_without_limit(iou_type):
    """``run_lvis_evaluation(..., max_dets=-1)``: params.max_dets -1, every record kept, the
    LVIS API's numbers with FastLVISEval and with LVISEval; the records not modified."""
    gt, results = _unlimited_data(0)
    before = copy.deepcopy(results)
    ref = _run(LVISEval, gt, results, iou_type, -1)
    for fast in (True, False):
        ev = run_lvis_evaluation(copy.deepcopy(gt), results, iou_type, -1, fast)
        assert type(ev) is (FastLVISEval if fast else LVISEval)
        assert ev.params.max_dets == -1 and len(ev.lvis_dt.anns) == len(results)
        np.testing.assert_array_equal(ev.eval["precision"], ref.eval["precision"])
        np.testing.assert_array_equal(ev.eval["recall"], ref.eval["recall"])
        assert ev.results == ref.results and list(ev.results) == list(ref.results)
    assert results == before


def test_matching_branches_are_reached():
    """The data above reach the branches that decide a match: a detection matching at some
    thresholds and not others, a detection matching an ignored (out of range) ground truth, an
    unmatched detection ignored for a not-exhaustive category or its area, and a ground truth
    taken by a higher-scored detection."""
    rng = np.random.default_rng(0)
    gt = _ground_truth(rng)
    ev = _run(LVISEval, gt, _detections(rng, gt), "bbox", 300)
    partial = ignored_match = unmatched_ignored = 0
    for e in ev.eval_imgs:
        if e is None or not len(e["dt_ids"]):
            continue
        matched = e["dt_matches"] > 0
        partial += int(np.any(matched.any(axis=0) & ~matched.all(axis=0)))
        ignored_match += int(np.any(e["dt_ignore"] & matched))
        unmatched_ignored += int(np.any(e["dt_ignore"] & ~matched))
    assert partial and ignored_match and unmatched_ignored


def test_empty_and_single_pairs():
    """Images without ground truth or detections, a pair with detections only (a negative
    category) and a pair with ground truth only: equal to the LVIS API."""
    rng = np.random.default_rng(3)
    gt = _ground_truth(rng, num_images=4, num_categories=3)
    gt.dataset["images"][0]["neg_category_ids"] = [2]
    results = [{"image_id": gt.dataset["images"][0]["id"], "category_id": 2,
                "bbox": [1.0, 2.0, 30.0, 40.0], "score": 0.5}]
    for iou_type in ("bbox",):
        _assert_same(_run(LVISEval, gt, results, iou_type, 300),
                     _run(FastLVISEval, gt, results, iou_type, 300))


def test_use_cats_off_is_the_lvis_api():
    rng = np.random.default_rng(1)
    gt = _ground_truth(rng, num_images=3, num_categories=3)
    results = _detections(rng, gt, per_image=4)
    ev = FastLVISEval(gt, LVISResults(gt, copy.deepcopy(results)), "bbox")
    ev.params.use_cats = 0
    ev.evaluate()
    assert isinstance(ev.eval_imgs, list)  # the LVIS API's own evaluation
