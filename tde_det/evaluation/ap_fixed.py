"""AP-fixed (Dave, Dollar, Ramanan, Kirillov, Girshick 2021) beside the standard LVIS metrics.

The standard LVIS AP keeps the top 300 detections per image, so it rewards a change of how
scores compare across classes (what TDE changes) even when no class ranks its own detections
better. AP-fixed keeps, per category, the K = 10,000 highest-scored detections over the whole
split, with no per-image limit, and evaluates them with the LVIS API at ``max_dets = -1``.

:class:`APFixedLVISEvaluator` is the records LVIS evaluator (the standard metrics unchanged)
that also takes the candidates of :class:`~tde_det.evaluation.ap_fixed_inference.APFixedInference`,
keeps each class's top K over the split in a bounded heap
(:class:`~tde_det.evaluation.top_k_per_class.TopKPerClass`; per process, merged at
``evaluate``), computes masks only for candidates that enter it, and adds ``AP-fixed``,
``APr-fixed``, ``APc-fixed``, ``APf-fixed`` to each task's results.
"""
import json
import logging
import math
import os
from typing import Dict, List, Mapping

from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table

from .ap_fixed_inference import AP_FIXED_CANDIDATES, APFixedCandidates
from .lvis_records import RecordsLVISEvaluator, run_lvis_evaluation
from .per_class_ap import per_class_ap, write_per_class_ap
from .top_k_per_class import TopKPerClass, merge_top_k

__all__ = ["AP_FIXED_METRICS", "APFixedLVISEvaluator", "ap_fixed_csv_lines",
           "check_ap_fixed_settings"]

logger = logging.getLogger(__name__)
# LVIS metric -> its AP-fixed name in a task's results
AP_FIXED_METRICS = {m: f"{m}-fixed" for m in ("AP", "APr", "APc", "APf")}


def check_ap_fixed_settings(dets_per_class, dets_per_image, score_thresh) -> None:
    """Raise a ValueError naming the ``TEST.AP_FIXED`` key whose value cannot give AP-fixed."""
    if isinstance(dets_per_class, bool) or not isinstance(dets_per_class, int) \
            or dets_per_class <= 0:
        raise ValueError(f"TEST.AP_FIXED.DETS_PER_CLASS must be a positive integer (K, the "
                         f"protocol: 10000), got {dets_per_class!r}")
    if isinstance(dets_per_image, bool) or not isinstance(dets_per_image, int) \
            or not (dets_per_image == -1 or dets_per_image > 0):
        raise ValueError(f"TEST.AP_FIXED.DETS_PER_IMAGE must be -1 (no limit) or a positive "
                         f"integer, got {dets_per_image!r}")
    if isinstance(score_thresh, bool) or not isinstance(score_thresh, (int, float)) \
            or not math.isfinite(score_thresh):
        raise ValueError(f"TEST.AP_FIXED.SCORE_THRESH must be a finite number, got "
                         f"{score_thresh!r}")


class APFixedLVISEvaluator(RecordsLVISEvaluator):
    """:class:`RecordsLVISEvaluator` that also reports AP-fixed from the
    :data:`AP_FIXED_CANDIDATES` of its outputs (or :meth:`process_candidates`).

    ``dets_per_class`` K, ``dets_per_image`` (candidates per image, -1: all) and
    ``score_thresh`` (candidates need a score above it): ``TEST.AP_FIXED.*``. Writes the kept
    detections to ``lvis_ap_fixed_results.json`` beside ``lvis_instances_results.json``.
    ``mask_rows`` / ``candidates``: detections given masks / candidates seen, in this process.
    """

    def __init__(self, *args, dets_per_class: int = 10000, dets_per_image: int = -1,
                 score_thresh: float = 0.0, **kwargs):
        check_ap_fixed_settings(dets_per_class, dets_per_image, score_thresh)
        self._k, self._per_image = dets_per_class, dets_per_image
        self._score_thresh = float(score_thresh)
        super().__init__(*args, **kwargs)
        self._num_classes = len(self._metadata.thing_classes)

    def reset(self) -> None:
        super().reset()
        self._top_k = TopKPerClass(len(self._metadata.thing_classes), self._k)
        self._fixed_images = 0
        self._gathered = None
        self.mask_rows = self.candidates = 0

    def process(self, inputs: List[Dict], outputs: List[Dict]) -> None:
        super().process(inputs, outputs)
        candidates = outputs[0].get(AP_FIXED_CANDIDATES) if outputs else None
        if candidates is not None:
            self.process_candidates(inputs, candidates)

    def process_candidates(self, inputs: List[Dict], candidates: APFixedCandidates) -> None:
        """Enter one batch's candidates into the per-class top K; the records (with masks) of
        those still kept after the batch are computed and stored; then the batch's features
        are released."""
        if len(candidates) != len(inputs):
            raise ValueError(f"AP-fixed candidates of {len(candidates)} images for "
                             f"{len(inputs)} inputs")
        admitted = []
        for i in range(len(inputs)):
            scores, classes = candidates.scores(i), candidates.classes(i)
            rows = (scores > self._score_thresh).nonzero().flatten().cpu()
            if self._per_image > 0:
                rows = rows[:self._per_image]  # sorted by score: the best ones
            self.candidates += len(rows)
            tickets = self._top_k.admit(classes[rows.to(classes.device)],
                                        scores[rows.to(scores.device)])
            admitted.append((rows, tickets))
        kept = []  # after the whole batch: the rows still in their class's top K
        for rows, tickets in admitted:
            entered = tickets >= 0
            rows, tickets = rows[entered], tickets[entered]
            alive = self._top_k.alive(tickets)
            kept.append((rows[alive], tickets[alive]))
        before = candidates.mask_rows
        records = candidates.records([rows for rows, _ in kept])
        self.mask_rows += candidates.mask_rows - before
        for (_, tickets), image_records in zip(kept, records):
            self._top_k.store(tickets.tolist(), image_records)
        candidates.release()
        self._fixed_images += len(inputs)

    def evaluate(self):
        # every process hands over its top K (a collective, before the standard gather)
        mine = (self._top_k.entries(), self._fixed_images)
        if comm.get_world_size() > 1 and getattr(self, "_distributed", True):
            comm.synchronize()
            self._gathered = comm.gather(mine, dst=0)
        else:
            self._gathered = [mine]
        return super().evaluate()

    def _eval_predictions(self, predictions: List[Dict]) -> None:
        super()._eval_predictions(predictions)
        if self._do_evaluation:
            self._eval_ap_fixed(len(predictions))

    def _eval_ap_fixed(self, num_images: int) -> None:
        parts, self._gathered = self._gathered or [], None
        images = sum(p[1] for p in parts)
        if images == 0:
            self._logger.warning(
                "TEST.AP_FIXED.ENABLED but no AP-fixed candidates reached the evaluator: the "
                "model must run wrapped in APFixedInference (Trainer.test does it); AP-fixed "
                "is not reported")
            return
        if images != num_images:
            raise RuntimeError(f"AP-fixed candidates came for {images} of the {num_images} "
                               f"images evaluated: every image must run through "
                               f"APFixedInference")
        merged = merge_top_k([p[0] for p in parts], self._k)
        short = [len(c) for c in merged if len(c) < self._k]
        if short:
            self._logger.warning(
                f"AP-fixed: {len(short)} of {len(merged)} classes have fewer than "
                f"K = {self._k} detections over the split ({short.count(0)} have none); a "
                f"lower MODEL.ROI_HEADS.SCORE_THRESH_TEST gives them more candidates")
        records = self._json_records([{"instances": [e[2] for c in merged for e in c]}])
        self._logger.info(f"AP-fixed: {len(records)} detections kept (at most {self._k} per "
                          f"class, no per-image limit)")
        if self._output_dir:
            path = os.path.join(self._output_dir, "lvis_ap_fixed_results.json")
            self._logger.info(f"Saving AP-fixed results to {path}")
            with PathManager.open(path, "w") as f:
                f.write(json.dumps(records))
        for task in list(self._results):
            if not records:
                fixed = {name: float("nan") for name in AP_FIXED_METRICS.values()}
            else:
                self._logger.info(f"Evaluating {task} AP-fixed (max_dets -1)")
                evaluation = run_lvis_evaluation(self._lvis_api, records, task, -1,
                                                 self._fast_eval)
                evaluation.print_results()
                results = evaluation.get_results()
                fixed = {name: float(results[m] * 100) for m, name in AP_FIXED_METRICS.items()}
                self._add_per_class_ap_fixed(task, per_class_ap(evaluation))
            self._logger.info(f"AP-fixed results for {task}: \n" + create_small_table(fixed))
            self._results[task].update(fixed)


    def _add_per_class_ap_fixed(self, task: str, fixed_rows: List[Dict]) -> None:
        """The per-class AP-fixed as an "AP-fixed" column of the task's per-class rows (and
        files), beside the standard AP of the same category."""
        rows = self.per_class_rows.get(task)
        if rows is None:
            return
        fixed = {r["id"]: r["AP"] for r in fixed_rows}
        for row in rows:
            row["AP-fixed"] = fixed.get(row["id"], float("nan"))
        if self.per_class_dir and comm.is_main_process():
            write_per_class_ap(rows, self.per_class_dir, task)


def ap_fixed_csv_lines(results: Mapping) -> List[str]:
    """The "copypaste" lines of the AP-fixed metrics of ``results`` (``{task: {metric: v}}``;
    Detectron2's ``print_csv_format`` leaves out names with "-"): per task with AP-fixed,
    "Task: <task>_fixed", the names, the values."""
    lines = []
    for task, metrics in results.items():
        if not isinstance(metrics, Mapping):
            continue
        names = [n for n in AP_FIXED_METRICS.values() if n in metrics]
        if names:
            lines += [f"copypaste: Task: {task}_fixed", "copypaste: " + ",".join(names),
                      "copypaste: " + ",".join(f"{metrics[n]:.4f}" for n in names)]
    return lines
