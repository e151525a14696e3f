"""One image's detections under several alphas, merged so that each distinct detection gets its
mask once.

A detection's mask (the mask head on its box, the channel of its class, pasted into the image)
depends only on its box and its class: alpha changes which (box, class) pairs survive and their
scores, not the pair's mask. Neighbouring alphas keep mostly the same pairs (on the tiny
detector, each distinct pair appears under about 6 of 10 alphas), so the sweep pastes (and
encodes) masks once for the union of the alphas' detections -- the mask head itself runs once
per distinct box, see :mod:`.union_masks` -- then gives each alpha its own rows, in its own
order, with its own scores. Pasting is per row, so a pair's pasted mask is the one that pasting
that alpha's detections alone gives.
"""
from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.structures import Boxes, Instances

__all__ = ["MergedDetections"]

_ROW = "union_row"  # the field that carries each union row's index through post-processing


class MergedDetections:
    """The union of one image's detections under several alphas.

    ``union`` has each distinct (box, class) pair once, with ``pred_boxes``, ``pred_classes``,
    placeholder ``scores`` and a ``union_row`` index; run the mask head and the post-processing
    on it, then ``of_alpha(k, output)`` gives the ``k``-th alpha's detections from the output
    (or ``records_of_alpha`` their json records, from those of the output).
    """

    def __init__(self, per_alpha: Sequence[Instances]):
        if not per_alpha:
            raise ValueError("merging detections needs the detections of at least one alpha")
        boxes = [d.pred_boxes.tensor for d in per_alpha]
        box_dtype = boxes[0].dtype
        # Float64 holds float16/32 coordinates and class ids exactly, so equal keys mean
        # bit-equal boxes (up to the sign of a zero, which gives the same mask) and one class.
        keys = torch.cat([torch.cat([b.double(), d.pred_classes[:, None].double()], dim=1)
                          for b, d in zip(boxes, per_alpha)])
        unique, inverse = torch.unique(keys, dim=0, return_inverse=True)
        counts = [len(d) for d in per_alpha]
        self._rows: List[torch.Tensor] = list(torch.split(inverse, counts))
        self._scores: List[torch.Tensor] = [d.scores for d in per_alpha]
        self.union = Instances(per_alpha[0].image_size)
        self.union.pred_boxes = Boxes(unique[:, :4].to(box_dtype))
        self.union.pred_classes = unique[:, 4].long()
        self.union.scores = torch.zeros(len(unique), dtype=self._scores[0].dtype,
                                        device=unique.device)
        self.union.set(_ROW, torch.arange(len(unique), device=unique.device))

    def __len__(self) -> int:
        return len(self.union)

    @property
    def num_detections(self) -> int:
        """Detections over all alphas, counting a pair once per alpha that keeps it."""
        return sum(len(r) for r in self._rows)

    def rows_of_alpha(self, k: int, output: Instances) -> Tuple[torch.Tensor, torch.Tensor]:
        """The ``k``-th alpha's detections in ``output`` -- ``union`` after the mask head and
        post-processing, which may have dropped rows (boxes empty after rescaling; the same
        rows are dropped from the alpha's) -- as (their rows of ``output`` in the alpha's order,
        their scores under the alpha)."""
        present = output.get(_ROW)
        position = torch.full((len(self.union),), -1, dtype=torch.long, device=present.device)
        position[present] = torch.arange(len(present), device=present.device)
        at = position[self._rows[k].to(present.device)]
        kept = at >= 0
        return at[kept], self._scores[k].to(present.device)[kept]

    def of_alpha(self, k: int, output: Instances) -> Instances:
        """The ``k``-th alpha's detections, in its order and with its scores, taken from
        ``output`` (see :meth:`rows_of_alpha`)."""
        rows, scores = self.rows_of_alpha(k, output)
        detections = output[rows]
        detections.scores = scores
        detections.remove(_ROW)
        return detections

    def records_of_alpha(self, k: int, output: Instances, records: List[Dict]) -> List[Dict]:
        """The ``k``-th alpha's detections as json records (what ``instances_to_coco_json``
        gives for :meth:`of_alpha`), from ``records``, those of ``output``: each a copy with
        the alpha's score, sharing the record's "bbox" and "segmentation"."""
        rows, scores = self.rows_of_alpha(k, output)
        return [dict(records[r], score=s) for r, s in zip(rows.tolist(), scores.tolist())]
