"""The LVIS API's evaluation (``lvis.LVISEval``) with the same numbers, computed only where there
is something to evaluate.

``LVISEval.evaluate`` calls ``compute_iou`` for every (image, category) pair and
``evaluate_img`` for every (category, area range, image): on LVIS v1 val, 19,809 images x 1203
categories, that is 24 million and 95 million Python calls, almost all of them for a pair with
neither ground truth nor detections. Where a pair has something, ``evaluate_img`` matches each
detection against each ground truth at each of the ten IoU thresholds in a Python loop, and
``accumulate`` takes the precision envelope in another.

:class:`FastLVISEval` keeps the LVIS API's ``_prepare``, ``summarize`` and ``print_results``
and replaces the two loops over everything:

- ``evaluate`` visits only the pairs that have ground truth or detections, in the order
  ``accumulate`` reads them (category, then image: image order breaks score ties there), and
  computes their IoUs as ``compute_iou`` does, with the detections sorted once per pair;
- a detection whose IoU with every ground truth is below a threshold cannot match at that
  threshold, so it is not looked at there; the others are matched as the LVIS API matches them
  (greedy by score: the highest IoU among the unmatched ground truths, the last one on a tie,
  ground truths outside the area range only when no other matches);
- the four area ranges of a pair share the matching when they ignore the same ground truths;
- ``accumulate`` takes the envelope with ``np.maximum.accumulate``.

``eval_imgs`` is a dict ``{(category index, area index): [per-image results]}`` instead of the
LVIS API's list with ``None`` for the empty pairs; each per-image result is the dict the LVIS API
makes, with the same values. The precision and recall arrays, and so every metric, are equal to
the LVIS API's (``tests/evaluation/test_fast_lvis_eval.py`` compares them on random data).

AP-fixed's protocol (no per-image limit: ``LVISResults(..., max_dets=-1)`` and ``params.max_dets
= -1``) needs nothing more: the limit is ``LVISResults``'s, and the LVIS API reads
``params.max_dets`` only in ``summarize`` and ``print_results`` (the "AR@-1" names), which this
class inherits; equal to the LVIS API there too (tested with more than 300 detections per image).
"""
import datetime
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_utils
from lvis import LVISEval

__all__ = ["FastLVISEval"]


class FastLVISEval(LVISEval):
    """``lvis.LVISEval`` (same constructor, ``run``, ``results`` and ``eval``), evaluating only
    the (image, category) pairs with ground truth or detections. With ``params.use_cats`` off it
    is the LVIS API's evaluation unchanged."""

    def evaluate(self) -> None:
        if not self.params.use_cats:
            return super().evaluate()
        self.logger.info("Running per image evaluation.")
        self.logger.info("Evaluate annotation type *{}*".format(self.params.iou_type))
        self.params.img_ids = list(np.unique(self.params.img_ids))
        self._prepare()

        image_index = {img_id: i for i, img_id in enumerate(self.params.img_ids)}
        category_index = {cat_id: k for k, cat_id in enumerate(self.params.cat_ids)}
        pairs = {pair for table in (self._gts, self._dts) for pair, anns in table.items()
                 if anns and pair[0] in image_index and pair[1] in category_index}
        pairs = sorted(pairs, key=lambda p: (category_index[p[1]], image_index[p[0]]))

        self.ious = {}
        self.eval_imgs = {}
        for img_id, cat_id in pairs:
            k = category_index[cat_id]
            for a, result in enumerate(self._evaluate_pair(img_id, cat_id)):
                self.eval_imgs.setdefault((k, a), []).append(result)

    def _evaluate_pair(self, img_id: int, cat_id: int) -> List[Dict]:
        """The LVIS API's ``compute_iou`` (into ``self.ious``) and its ``evaluate_img`` result
        for each area range of ``params.area_rng``, sorting the detections once."""
        gt = self._gts.get((img_id, cat_id), [])
        dt = self._dts.get((img_id, cat_id), [])
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in order]
        geometry = "segmentation" if self.params.iou_type == "segm" else "bbox"
        ious = mask_utils.iou([d[geometry] for d in dt], [g[geometry] for g in gt],
                              [0] * len(gt))  # [] when either side is empty
        self.ious[img_id, cat_id] = ious
        dt_ids = [d["id"] for d in dt]
        dt_scores = [d["score"] for d in dt]
        dt_area = np.array([d["area"] for d in dt], dtype=np.float64)
        # every detection of the pair has its image and category: one answer for all of them
        not_exhaustive = cat_id in self.img_nel[img_id]

        results, matchings = [], {}
        for area_rng in self.params.area_rng:
            gt_ignore = [1 if g["ignore"] or g["area"] < area_rng[0] or g["area"] > area_rng[1]
                         else 0 for g in gt]
            key = tuple(gt_ignore)
            if key not in matchings:
                matchings[key] = self._match(gt, dt_ids, ious, gt_ignore)
            gt_order, dt_m, gt_m, dt_ig = matchings[key]
            if not_exhaustive:
                unmatched_ignored = dt_m == 0
            else:
                out_of_range = (dt_area < area_rng[0]) | (dt_area > area_rng[1])
                unmatched_ignored = (dt_m == 0) & out_of_range[None, :]
            results.append({
                "image_id": img_id,
                "category_id": cat_id,
                "area_rng": area_rng,
                "dt_ids": dt_ids,
                "gt_ids": [gt[i]["id"] for i in gt_order],
                "dt_matches": dt_m,
                "gt_matches": gt_m,
                "dt_scores": dt_scores,
                "gt_ignore": np.array([gt_ignore[i] for i in gt_order]),
                "dt_ignore": np.logical_or(dt_ig, unmatched_ignored),
            })
        return results

    def _match(self, gt: List[Dict], dt_ids: List[int], ious, gt_ignore: List[int]):
        """The LVIS API's greedy matching of one pair at every IoU threshold, for ground truths
        ignored as ``gt_ignore`` says. Returns the ground truths' order (kept ones first), the
        matched ground truth's id per detection, the matched detection's id per ground truth,
        and whether each detection matched an ignored ground truth (thresholds x detections)."""
        gt_order = ([i for i, ig in enumerate(gt_ignore) if not ig]
                    + [i for i, ig in enumerate(gt_ignore) if ig])
        thresholds = self.params.iou_thrs
        dt_m = np.zeros((len(thresholds), len(dt_ids)))
        gt_m = np.zeros((len(thresholds), len(gt)))
        dt_ig = np.zeros((len(thresholds), len(dt_ids)))
        if len(ious) == 0:  # no detection or no ground truth
            return gt_order, dt_m, gt_m, dt_ig
        ious = np.asarray(ious)[:, gt_order]
        kept = len(gt) - sum(gt_ignore)
        gt_ids = [gt[i]["id"] for i in gt_order]
        ignored = [gt_ignore[i] for i in gt_order]
        rows = ious.tolist()
        # A detection whose IoUs are all below a threshold matches nothing there. NaN IoUs
        # stay in: the LVIS API's "iou < threshold" test lets them through.
        top = ious.max(axis=1).tolist()
        thresholds = [min(t, 1 - 1e-10) for t in thresholds]
        lowest = min(thresholds)
        reaching = [d for d, v in enumerate(top) if not v < lowest]
        for t, threshold in enumerate(thresholds):
            if not reaching:
                break
            matched = [False] * len(gt)
            for d in [d for d in reaching if not top[d] < threshold]:
                row, best, m = rows[d], threshold, -1
                for g in range(kept):  # the kept ground truths first ...
                    if not matched[g] and not row[g] < best:
                        best, m = row[g], g
                if m == -1:  # ... the ignored ones only when none of them matches
                    for g in range(kept, len(gt)):
                        if not matched[g] and not row[g] < best:
                            best, m = row[g], g
                if m == -1:
                    continue
                dt_ig[t, d] = ignored[m]
                dt_m[t, d] = gt_ids[m]
                gt_m[t, m] = dt_ids[d]
                matched[m] = dt_ids[d] > 0  # the LVIS API's test: a nonzero detection id
        return gt_order, dt_m, gt_m, dt_ig

    def accumulate(self) -> None:
        if not self.params.use_cats:
            return super().accumulate()
        self.logger.info("Accumulating evaluation results.")
        if not self.eval_imgs:
            self.logger.warning("Please run evaluate first.")
        p = self.params
        num_thrs, num_recalls = len(p.iou_thrs), len(p.rec_thrs)
        num_cats, num_areas = len(p.cat_ids), len(p.area_rng)
        precision = -np.ones((num_thrs, num_recalls, num_cats, num_areas))
        recall = -np.ones((num_thrs, num_cats, num_areas))
        dt_pointers = {k: {a: {} for a in range(num_areas)} for k in range(num_cats)}

        for (k, a), per_image in self.eval_imgs.items():
            gt_ig = np.concatenate([e["gt_ignore"] for e in per_image])
            num_gt = np.count_nonzero(gt_ig == 0)
            if num_gt == 0:
                continue
            dt_scores = np.concatenate([e["dt_scores"] for e in per_image], axis=0)
            order = np.argsort(-dt_scores, kind="mergesort")
            dt_ids = np.concatenate([e["dt_ids"] for e in per_image], axis=0)[order]
            dt_m = np.concatenate([e["dt_matches"] for e in per_image], axis=1)[:, order]
            dt_ig = np.concatenate([e["dt_ignore"] for e in per_image], axis=1)[:, order]
            tps = np.logical_and(dt_m, np.logical_not(dt_ig))
            fps = np.logical_and(np.logical_not(dt_m), np.logical_not(dt_ig))
            dt_pointers[k][a] = {"dt_ids": dt_ids, "tps": tps, "fps": fps}
            precision[:, :, k, a], recall[:, k, a] = _precision_recall(
                np.cumsum(tps, axis=1).astype(np.float64),
                np.cumsum(fps, axis=1).astype(np.float64), num_gt, p.rec_thrs)

        self.eval = {
            "params": p,
            "counts": [num_thrs, num_recalls, num_cats, num_areas],
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
            "precision": precision,
            "recall": recall,
            "dt_pointers": dt_pointers,
        }


def _precision_recall(tp: np.ndarray, fp: np.ndarray, num_gt: int,
                      rec_thrs: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """Interpolated precision at each recall threshold (thresholds x recalls) and final recall
    (thresholds) from cumulative true and false positives (thresholds x detections), as the LVIS
    API's ``accumulate``: precision made non-increasing from the right; 0 past the last recall
    reached."""
    num_dets = tp.shape[1]
    rc = tp / num_gt
    pr = tp / (fp + tp + np.spacing(1))
    envelope = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
    precision = np.zeros((tp.shape[0], len(rec_thrs)))
    for t in range(tp.shape[0]):
        index = np.searchsorted(rc[t], rec_thrs, side="left")
        reached = index < num_dets
        precision[t, reached] = envelope[t, index[reached]]
    final = rc[:, -1] if num_dets else np.zeros(tp.shape[0])
    return precision, final

