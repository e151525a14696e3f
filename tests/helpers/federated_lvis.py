"""Random federated LVIS data for the evaluation tests: ground truth (``lvis.LVIS``) with
negative and not-exhaustive categories, duplicates and every area range, and detections with
tied scores, built to reach every branch of the LVIS API's matching and accumulation."""
import logging

import numpy as np
import pycocotools.mask as mask_utils
from lvis import LVIS

__all__ = ["SIDES", "box_polygon", "federated_detections", "federated_ground_truth"]

# ground-truth box sides spanning the small (< 32^2), medium and large (> 96^2) area ranges
SIDES = (6, 20, 31, 33, 60, 97, 140)


def box_polygon(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def federated_ground_truth(rng, num_images=12, num_categories=9, ignore=False) -> LVIS:
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
                       "segmentation": box_polygon(x, y, bw, bh)}
                if ignore and rng.random() < 0.2:
                    ann["ignore"] = 1
                anns.append(ann)
                ann_id += int(rng.integers(1, 4))
    gt = LVIS.__new__(LVIS)
    gt.logger = logging.getLogger("lvis")
    gt.dataset = {"images": images, "annotations": anns, "categories": cats}
    gt._create_index()
    return gt


def federated_detections(rng, gt: LVIS, per_image=25, crowd=0):
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
            rle = mask_utils.merge(mask_utils.frPyObjects(box_polygon(x, y, bw, bh), h, w))
            rle["counts"] = rle["counts"].decode("utf-8")
            out.append({"image_id": img["id"], "category_id": int(cat_id),
                        "bbox": [x, y, bw, bh], "score": round(float(rng.random()), 1),
                        "segmentation": rle})
    return out
