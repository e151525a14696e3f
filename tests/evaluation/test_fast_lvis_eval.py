"""FastLVISEval gives the LVIS API's LVISEval's numbers: the same precision and recall arrays,
bit for bit, and the same per-image results, on random federated data built to reach every
branch of the LVIS API's matching and accumulation."""
import copy
import logging

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from lvis import LVIS, LVISEval, LVISResults

from tde_det.evaluation.fast_lvis_eval import FastLVISEval

# ground-truth box sides spanning the small (< 32^2), medium and large (> 96^2) area ranges
SIDES = (6, 20, 31, 33, 60, 97, 140)


def _box_polygon(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _ground_truth(rng, num_images=12, num_categories=9, ignore=False) -> LVIS:
    """An ``LVIS`` object: per image a few categories with 1-4 instances (some overlapping,
    some duplicates), negative and not-exhaustive category lists; annotation ids with gaps."""
    cats = [{"id": 3 * k + 2, "name": f"c{k}", "frequency": "rcf"[k % 3]}
            for k in range(num_categories)]
    images, anns, ann_id = [], [], 1
    for i in range(num_images):
        w, h = 320, 240
        present = rng.choice(num_categories, size=rng.integers(0, 4), replace=False)
        others = [k for k in range(num_categories) if k not in present]
        neg = rng.choice(others, size=min(len(others), rng.integers(0, 3)), replace=False)
        not_exhaustive = [cats[k]["id"] for k in present if rng.random() < 0.3]
        images.append({"id": 100 + 7 * i, "width": w, "height": h,
                       "neg_category_ids": [cats[k]["id"] for k in neg],
                       "not_exhaustive_category_ids": not_exhaustive})
        for k in present:
            for _ in range(rng.integers(1, 5)):
                side = SIDES[rng.integers(len(SIDES))]
                bw, bh = side, max(2, int(side * rng.uniform(0.6, 1.4)))
                x, y = rng.integers(0, w - bw), rng.integers(0, max(1, h - bh))
                x, y = int(x), int(y)
                if anns and rng.random() < 0.15 and anns[-1]["image_id"] == images[-1]["id"]:
                    x, y, bw, bh = anns[-1]["bbox"]  # a duplicate: IoU ties
                ann = {"id": ann_id, "image_id": images[-1]["id"], "category_id": cats[k]["id"],
                       "bbox": [x, y, bw, bh], "area": float(bw * bh),
                       "segmentation": _box_polygon(x, y, bw, bh)}
                if ignore and rng.random() < 0.2:
                    ann["ignore"] = 1
                anns.append(ann)
                ann_id += int(rng.integers(1, 4))
    gt = LVIS.__new__(LVIS)
    gt.logger = logging.getLogger("lvis")
    gt.dataset = {"images": images, "annotations": anns, "categories": cats}
    gt._create_index()
    return gt


def _detections(rng, gt: LVIS, per_image=25, crowd=0):
    """Jittered copies of the ground truth (several per instance, so that ground truths compete
    and get matched at some thresholds only), exact copies, boxes of other categories (present,
    negative or unknown for the image) and random boxes; scores rounded to give ties. ``crowd``
    more jittered copies of each image's first ground truth: more tied scores in one pair than
    numpy's default sort keeps in order."""
    cat_ids = sorted(gt.cats)
    out = []
    for img in gt.dataset["images"]:
        w, h = img["width"], img["height"]
        dets = []
        for ann in gt.img_ann_map[img["id"]]:
            x, y, bw, bh = ann["bbox"]
            for _ in range(rng.integers(0, 4)):
                j = rng.integers(-4, 5, size=4) if rng.random() < 0.8 else np.zeros(4, int)
                dets.append((ann["category_id"], [x + j[0], y + j[1], max(2, bw + j[2]),
                                                  max(2, bh + j[3])]))
        if crowd and gt.img_ann_map[img["id"]]:  # one pair with many tied scores
            x, y, bw, bh = gt.img_ann_map[img["id"]][0]["bbox"]
            cat_id = gt.img_ann_map[img["id"]][0]["category_id"]
            for j in rng.integers(-8, 9, size=(crowd, 4)):
                dets.append((cat_id, [x + j[0], y + j[1], max(2, bw + j[2]), max(2, bh + j[3])]))
        while len(dets) < per_image + crowd:
            bw, bh = (int(v) for v in rng.integers(4, 120, size=2))
            box = [int(rng.integers(0, w - 4)), int(rng.integers(0, h - 4)), bw, bh]
            dets.append((int(rng.choice(cat_ids)), box))
        for cat_id, (x, y, bw, bh) in dets:
            x, y = float(np.clip(x, 0, w - 2)), float(np.clip(y, 0, h - 2))
            bw, bh = float(min(bw, w - x)), float(min(bh, h - y))
            rle = mask_utils.merge(mask_utils.frPyObjects(_box_polygon(x, y, bw, bh), h, w))
            rle["counts"] = rle["counts"].decode("utf-8")
            out.append({"image_id": img["id"], "category_id": int(cat_id),
                        "bbox": [x, y, bw, bh], "score": round(float(rng.random()), 1),
                        "segmentation": rle})
    return out


def _run(cls, gt, results, iou_type, max_dets):
    gt = copy.deepcopy(gt)  # the segm evaluation converts the ground truth to RLE in place
    results = copy.deepcopy(results)
    if iou_type == "segm":
        for r in results:
            r.pop("bbox")
    ev = cls(gt, LVISResults(gt, results, max_dets=max_dets), iou_type)
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
