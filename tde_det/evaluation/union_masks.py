"""The mask head once per distinct box of the alphas' detections.

Detectron2's mask head predicts every class's mask of a box and keeps the channel of the
detection's class. Under the alphas of a sweep, the same box recurs with several classes (a
proposal scores under more than one class, and alpha moves which ones survive), so the sweep
runs the mask head's layers once per distinct box of an image and takes each (box, class)
detection's channel from there. Each row of the pooler and of the layers is computed from that
row alone, so the masks are those of ``heads.forward_with_given_boxes`` on the detections, up to
how a convolution library rounds for another batch size: bit for bit on the tiny dataset's
sweep (tested against ``--eval-only``), within 1e-6 for batches of 1 or 2 boxes on the CPU
(tested), not yet checked with cuDNN. ``DetectionAlphaSweep(share_masks=False)`` keeps
``--eval-only``'s batches.
"""
from typing import Dict, List, Tuple

import torch
from detectron2.modeling.roi_heads import StandardROIHeads
from detectron2.modeling.roi_heads.mask_head import BaseMaskRCNNHead, mask_rcnn_inference
from detectron2.structures import Boxes, Instances

__all__ = ["predict_masks"]


def _shares_boxes(heads: StandardROIHeads) -> bool:
    """Whether the heads' inference masks are Detectron2's: a pooler, then a mask head whose
    ``forward`` is ``layers`` and ``mask_rcnn_inference``; and no keypoint head."""
    head = getattr(heads, "mask_head", None)
    return bool(getattr(heads, "mask_on", False)) and heads.mask_pooler is not None \
        and not getattr(heads, "keypoint_on", False) and isinstance(head, BaseMaskRCNNHead) \
        and type(head).forward is BaseMaskRCNNHead.forward


def predict_masks(heads: StandardROIHeads, features: Dict[str, torch.Tensor],
                  instances: List[Instances], chunk: int) -> Tuple[List[Instances], int]:
    """``heads.forward_with_given_boxes(features, instances)`` (each detection's
    ``pred_masks``), with the mask head's layers run once per distinct box of each image, in
    batches of at most ``chunk`` boxes (bounding their all-class logits). Returns the instances
    and the number of rows the mask head ran on. Heads whose masks come otherwise (or with a
    keypoint head) get ``forward_with_given_boxes`` itself."""
    if not _shares_boxes(heads):
        return heads.forward_with_given_boxes(features, instances), \
            sum(len(i) for i in instances) if getattr(heads, "mask_on", False) else 0
    distinct, rows, offset = [], [], 0
    for image in instances:
        boxes, inverse = torch.unique(image.pred_boxes.tensor, dim=0, return_inverse=True)
        distinct.append(Boxes(boxes))
        rows.append(inverse + offset)
        offset += len(boxes)
    pooled = heads.mask_pooler([features[f] for f in heads.mask_in_features], distinct)
    logits = torch.cat([heads.mask_head.layers(x) for x in pooled.split(max(chunk, 1))]) \
        if len(pooled) else heads.mask_head.layers(pooled)
    rows = torch.cat(rows)
    if logits.shape[1] > 1:  # class-specific masks: each detection's class channel
        classes = torch.cat([image.pred_classes for image in instances])
        logits = logits[rows, classes][:, None]
    else:
        logits = logits[rows]
    mask_rcnn_inference(logits, instances)  # one channel each: the sigmoid, per image
    return instances, offset
