"""Detectron2's ``LVISEvaluator``, able to take detections already in their json form, to share
its ground truth with other evaluators of the same dataset, evaluating with
:class:`~tde_det.evaluation.fast_lvis_eval.FastLVISEval` (the LVIS API's numbers, faster), and
spared three copies that grow with the dataset.

The alpha sweep scores several alphas from one inference pass; most detections recur under
several alphas with only their score changed. Encoding each alpha's masks to RLE again (what
``process`` does) costs time, and every alpha's evaluator keeps its own copy of the strings until
it evaluates. :meth:`RecordsLVISEvaluator.process_records` takes the records that
``instances_to_coco_json`` makes, so the sweep encodes each distinct mask once and the alphas'
records share it.

Measured with a synthetic json of LVIS v1 val's size (19,809 images, 244,707 polygon
annotations, 1203 categories; 2-core CPU machine), Detectron2's evaluation pays:

- per evaluator, a parse of the json into its own ground truth: 5.8 s and 0.85 GB resident.
  :meth:`RecordsLVISEvaluator.sharing_ground_truth` gives another evaluator that shares it.
  The LVIS API writes to the ground truth only what every evaluation writes alike: it converts
  the polygons to RLE in place when it first evaluates masks, and sets ignore flags before it
  reads them.
- per evaluation, a deep copy of every record, only to drop "bbox" from the copies before the
  mask AP: about 43 s at 300 detections per image (4.1-4.5 s for 600,000 records, scaled).
  This evaluator hands each task one-level copies of its records instead (the LVIS API writes
  "area", "id" and a box into them; the values, masks and boxes, are shared and only read).
- twice per evaluation (boxes, masks), ``LVISResults`` deep-copies the ground truth's whole
  ``dataset`` only to replace its annotations with the results: 8.1 s with polygons, 4.0 s once
  they are RLE. This evaluator hands the evaluation its ground truth without the list of
  annotations, which the evaluation reads through the LVIS API's indexes: 0.16 s.
"""
import copy
import json
import logging
import os
from typing import Dict, List, Optional, Tuple

from detectron2.evaluation import LVISEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table
from lvis import LVIS, LVISEval, LVISResults

from .fast_lvis_eval import FastLVISEval
from .per_class_ap import per_class_ap, write_per_class_ap

__all__ = ["LVIS_METRICS", "RecordsLVISEvaluator", "evaluate_lvis_records",
           "lvis_metrics_and_evaluation", "lvis_results", "run_lvis_evaluation",
           "without_annotation_list"]

# what Detectron2's LVISEvaluator reports per task, in this order
LVIS_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")

logger = logging.getLogger(__name__)


def without_annotation_list(ground_truth: LVIS) -> LVIS:
    """``ground_truth`` sharing its indexes (annotations by id and by image, images,
    categories), whose ``dataset`` lacks only the list of annotations. ``LVISResults``
    deep-copies the ground truth's ``dataset`` and replaces its annotations with the results;
    ``LVISEval`` reads the ground-truth annotations through the indexes."""
    view = copy.copy(ground_truth)
    view.dataset = dict(ground_truth.dataset, annotations=[])
    return view


def lvis_results(ground_truth: LVIS, records: List[Dict], iou_type: str,
                 max_dets: int) -> LVISResults:
    """``LVISResults`` of one-level copies of ``records`` (json category ids), for the task
    ``iou_type``. ``LVISResults`` writes "area", "id" and, from a mask, a box into the copies.

    For "segm" the copies lack "bbox" (as Detectron2 evaluates masks), so that ``LVISResults``
    takes each area and box from the mask and the area ranges use the mask's area. It calls
    pycocotools once per record: ``mask.area`` of more than 255 masks in one call fails under
    numpy >= 2."""
    if iou_type == "segm":
        copies = [{k: v for k, v in r.items() if k != "bbox"} for r in records]
    else:
        copies = [dict(r) for r in records]
    return LVISResults(without_annotation_list(ground_truth), copies, max_dets=max_dets)


def run_lvis_evaluation(ground_truth: LVIS, records: List[Dict], iou_type: str, max_dets: int,
                        fast: bool = True) -> LVISEval:
    """The LVIS evaluation of ``records`` (non-empty; json category ids; not modified) for the
    task ``iou_type``, run (``eval`` and ``results`` filled): :class:`FastLVISEval` if
    ``fast``, else the LVIS API's ``LVISEval`` (the same numbers). ``max_dets`` -1: no
    per-image limit, also set as ``params.max_dets`` (AP-fixed, as its reference code)."""
    evaluation = (FastLVISEval if fast else LVISEval)(
        ground_truth, lvis_results(ground_truth, records, iou_type, max_dets), iou_type)
    if max_dets < 0:
        evaluation.params.max_dets = max_dets
    evaluation.run()
    return evaluation


def lvis_metrics_and_evaluation(ground_truth: LVIS, records: List[Dict], iou_type: str,
                                max_dets: Optional[int] = None, fast: bool = True
                                ) -> Tuple[Dict[str, float], Optional[LVISEval]]:
    """:func:`evaluate_lvis_records`'s metrics and the run evaluation they come from (its
    precision array gives :func:`~tde_det.evaluation.per_class_ap.per_class_ap`); None for the
    evaluation when there are no records."""
    if not records:
        logger.warning("No predictions from the model! Every %s metric is NaN.", iou_type)
        return {m: float("nan") for m in LVIS_METRICS}, None
    max_dets = 300 if max_dets is None else max_dets
    limit = "no limit" if max_dets < 0 else max_dets
    logger.info(f"Evaluating {iou_type} with max detections per image = {limit}")
    evaluation = run_lvis_evaluation(ground_truth, records, iou_type, max_dets, fast)
    evaluation.print_results()
    metrics = {m: float(evaluation.get_results()[m] * 100) for m in LVIS_METRICS}
    logger.info(f"Evaluation results for {iou_type}: \n" + create_small_table(metrics))
    return metrics, evaluation


def evaluate_lvis_records(ground_truth: LVIS, records: List[Dict], iou_type: str,
                          max_dets: Optional[int] = None, fast: bool = True) -> Dict[str, float]:
    """Detectron2's LVIS metrics (:data:`LVIS_METRICS`, in %) of ``records`` (LVIS-format
    detections with the json's category ids; not modified) for the task ``iou_type`` ("bbox"
    or "segm"), at most ``max_dets`` per image (None: LVIS's 300; -1: no limit). ``fast``:
    :class:`FastLVISEval`, else the LVIS API's ``LVISEval`` (the same numbers). NaN for every
    metric when there are no records, with a warning, as Detectron2."""
    return lvis_metrics_and_evaluation(ground_truth, records, iou_type, max_dets, fast)[0]


class RecordsLVISEvaluator(LVISEvaluator):
    """``LVISEvaluator`` (the same ``process``, ``evaluate``, files and results) with
    :meth:`process_records`, :meth:`sharing_ground_truth` and :meth:`dataset_records`.
    ``fast_eval`` (config ``TEST.FAST_LVIS_EVAL``): evaluate with :class:`FastLVISEval`, else
    with the LVIS API's ``LVISEval``. The records it holds and saves are never modified, so it
    can evaluate them again.

    Each evaluated task also writes its per-class AP (``per_class_<task>.{csv,json,png}``,
    :mod:`~tde_det.evaluation.per_class_ap`) to ``per_class_dir``: None (default) for
    ``output_dir``, "" for no files; it may name a folder while ``output_dir`` is "" (no
    predictions saved). The rows are kept as ``per_class_rows[task]`` after ``evaluate``."""

    def __init__(self, *args, fast_eval: bool = True, per_class_dir: Optional[str] = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self._fast_eval = fast_eval
        self._per_class_dir = per_class_dir
        self.per_class_rows: Dict[str, List[Dict]] = {}

    @property
    def per_class_dir(self) -> str:
        """Where the per-class files go ("": nowhere)."""
        return (self._output_dir or "") if self._per_class_dir is None else self._per_class_dir

    def _eval_predictions(self, predictions: List[Dict]) -> None:
        # Detectron2 0.6's step after saving instances_predictions.pth, on new records
        self._logger.info("Preparing results in the LVIS format ...")
        records = self._json_records(predictions)
        tasks = self._tasks or self._tasks_from_predictions(records)
        if self._output_dir:
            path = os.path.join(self._output_dir, "lvis_instances_results.json")
            self._logger.info(f"Saving results to {path}")
            with PathManager.open(path, "w") as f:
                f.write(json.dumps(records))
        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return
        self._logger.info("Evaluating predictions ...")
        self.per_class_rows = {}
        for task in sorted(tasks):
            self._results[task], evaluation = lvis_metrics_and_evaluation(
                self._lvis_api, records, task, self._max_dets_per_image, self._fast_eval)
            if evaluation is None:
                self._logger.warning(f"No per-class {task} AP: there are no detections")
                continue
            self.per_class_rows[task] = per_class_ap(evaluation)
            if self.per_class_dir and comm.is_main_process():
                write_per_class_ap(self.per_class_rows[task], self.per_class_dir, task)

    def process_records(self, inputs: List[Dict], records: List[List[Dict]]) -> None:
        """As ``process(inputs, outputs)`` for outputs whose instances
        ``detectron2.evaluation.coco_evaluation.instances_to_coco_json`` gave ``records`` (one
        list per input image). Records may share their "segmentation" and "bbox" values: the
        evaluation only reads them."""
        if len(records) != len(inputs):
            raise ValueError(f"one list of records per input image: {len(inputs)} images, "
                             f"{len(records)} lists")
        for image, image_records in zip(inputs, records):
            self._predictions.append({"image_id": image["image_id"],
                                      "instances": image_records})

    @property
    def ground_truth(self) -> LVIS:
        """The dataset's ground truth (the LVIS API object), shared with the evaluators from
        :meth:`sharing_ground_truth`."""
        return self._lvis_api

    def _json_records(self, predictions: List[Dict]) -> List[Dict]:
        """The records of ``predictions`` in new dicts, with the json's category ids
        (Detectron2's convention: the metadata's ``thing_dataset_id_to_contiguous_id``
        inverted, or contiguous id + 1)."""
        id_map = getattr(self._metadata, "thing_dataset_id_to_contiguous_id", None)
        to_json = {v: k for k, v in id_map.items()} if id_map is not None else None
        return [dict(r, category_id=to_json[r["category_id"]] if to_json is not None
                     else r["category_id"] + 1)
                for p in predictions for r in p.get("instances", [])]

    def dataset_records(self) -> List[Dict]:
        """The detections this process has processed, as LVIS-format records with the json's
        category ids: what ``evaluate`` evaluates, in new dicts."""
        return self._json_records(self._predictions)

    def sharing_ground_truth(self, output_dir: Optional[str] = None,
                             per_class_dir: Optional[str] = None) -> "RecordsLVISEvaluator":
        """A new evaluator of the same dataset, tasks and settings, with no predictions and its
        own ``output_dir`` ("" or None: it writes no predictions) and ``per_class_dir`` (None:
        ``output_dir``; "": no per-class files), that shares this one's ground truth (the LVIS
        API object) instead of parsing the json again."""
        twin = copy.copy(self)  # Detectron2 0.6's attributes, the LVIS API object shared
        twin._output_dir = output_dir
        twin._per_class_dir = per_class_dir
        twin.per_class_rows = {}
        twin.reset()
        return twin
