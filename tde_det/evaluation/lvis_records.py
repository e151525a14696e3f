"""Detectron2's ``LVISEvaluator``, able to take detections already in its json form.

The alpha sweep scores several alphas from one inference pass; most detections recur under
several alphas with only their score changed. Encoding each alpha's masks to RLE again (what
``process`` does) costs time, and every alpha's evaluator keeps its own copy of the strings until
it evaluates. :meth:`RecordsLVISEvaluator.process_records` takes the records that
``instances_to_coco_json`` makes, so the sweep encodes each distinct mask once and the alphas'
records share it.
"""
from typing import Dict, List

from detectron2.evaluation import LVISEvaluator

__all__ = ["RecordsLVISEvaluator"]


class RecordsLVISEvaluator(LVISEvaluator):
    """``LVISEvaluator`` (the same ``process``, ``evaluate`` and results) with
    :meth:`process_records`."""

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
