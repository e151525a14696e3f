"""Detectron2's ``LVISEvaluator``, able to take detections already in their json form, to share
its ground truth with other evaluators of the same dataset, and spared three copies that grow
with the dataset.

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
  This evaluator hands the evaluation one-level copies of its records, :class:`LVISRecord`,
  whose own deep copy is again one level deep: about 17 s (0.6 s + 1.1 s for 600,000).
- twice per evaluation (boxes, masks), ``LVISResults`` deep-copies the ground truth's whole
  ``dataset`` only to replace its annotations with the results: 8.1 s with polygons, 4.0 s once
  they are RLE. This evaluator hands the evaluation its ground truth without the list of
  annotations, which the evaluation reads through the LVIS API's indexes: 0.16 s.
"""
import copy
from typing import Dict, List, Optional

from detectron2.evaluation import LVISEvaluator
from lvis import LVIS

__all__ = ["LVISRecord", "RecordsLVISEvaluator", "without_annotation_list"]


class LVISRecord(dict):
    """A detection's json record (``instances_to_coco_json``'s dict) whose deep copy copies only
    the record: a plain ``dict`` with the same keys, sharing the values. The LVIS evaluation
    reads the values (the RLE mask, the box) and writes only keys of its own records ("area",
    "id", a box derived from the mask)."""

    __slots__ = ()

    def __deepcopy__(self, memo) -> Dict:
        return dict(self)


def without_annotation_list(ground_truth: LVIS) -> LVIS:
    """``ground_truth`` sharing its indexes (annotations by id and by image, images,
    categories), whose ``dataset`` lacks only the list of annotations. ``LVISResults``
    deep-copies the ground truth's ``dataset`` and replaces its annotations with the results;
    ``LVISEval`` reads the ground-truth annotations through the indexes."""
    view = copy.copy(ground_truth)
    view.dataset = dict(ground_truth.dataset, annotations=[])
    return view


class RecordsLVISEvaluator(LVISEvaluator):
    """``LVISEvaluator`` (the same ``process``, ``evaluate`` and results) with
    :meth:`process_records`, :meth:`sharing_ground_truth` and :meth:`dataset_records`. It
    evaluates copies of its records, as :class:`LVISRecord`; what it holds and saves are plain
    dicts."""

    def _eval_predictions(self, predictions: List[Dict]) -> None:
        # Detectron2 0.6's step after saving instances_predictions.pth. One level of copy per
        # record: the evaluation writes keys ("category_id" mapped to the dataset's ids,
        # "area", "id") into these copies, not into the held records.
        records = [dict(p, instances=[LVISRecord(r) for r in p["instances"]])
                   if "instances" in p else p for p in predictions]
        ground_truth = self._lvis_api
        self._lvis_api = without_annotation_list(ground_truth)  # what the evaluation gets
        try:
            super()._eval_predictions(records)
        finally:
            self._lvis_api = ground_truth

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

    def dataset_records(self) -> List[Dict]:
        """The detections this process has processed, as LVIS-format records with the json's
        category ids (Detectron2's convention: the metadata's
        ``thing_dataset_id_to_contiguous_id`` inverted, or contiguous id + 1): what
        ``evaluate`` evaluates, in new dicts."""
        id_map = getattr(self._metadata, "thing_dataset_id_to_contiguous_id", None)
        to_json = {v: k for k, v in id_map.items()} if id_map is not None else None
        return [dict(r, category_id=to_json[r["category_id"]] if to_json is not None
                     else r["category_id"] + 1)
                for p in self._predictions for r in p.get("instances", [])]

    def sharing_ground_truth(self, output_dir: Optional[str] = None) -> "RecordsLVISEvaluator":
        """A new evaluator of the same dataset, tasks and settings, with no predictions and its
        own ``output_dir`` ("" or None: it writes no files), that shares this one's ground truth
        (the LVIS API object) instead of parsing the json again."""
        twin = copy.copy(self)  # Detectron2 0.6's attributes, the LVIS API object shared
        twin._output_dir = output_dir
        twin.reset()
        return twin
