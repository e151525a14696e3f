"""Inference for AP-fixed: the standard results and, from the same pass, every candidate.

Detectron2's box inference runs NMS per class on the detections above the score threshold and
keeps the first ``TEST.DETECTIONS_PER_IMAGE`` of the result, sorted by score
(``fast_rcnn_inference``: ``keep[:topk]``). The same call without the limit gives a longer list
whose first ``TEST.DETECTIONS_PER_IMAGE`` rows are the standard detections, bit for bit. So
:class:`APFixedInference` runs the network once per batch, takes the standard detections as that
prefix (their masks and post-processing as ``GeneralizedRCNN.inference``) and hands the whole
list to the evaluator as :class:`APFixedCandidates`; the evaluator
(:class:`~tde_det.evaluation.ap_fixed.APFixedLVISEvaluator`) decides which candidates can be in
their class's top K over the split, and only those get masks.
"""
import copy
from typing import Dict, List, Optional

import torch
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.modeling import GeneralizedRCNN
from detectron2.structures import Boxes, Instances
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .union_masks import predict_masks

__all__ = ["AP_FIXED_CANDIDATES", "APFixedCandidates", "APFixedInference",
           "candidates_and_standard", "detection_limit", "without_detection_limit"]

# the key of each output dict of APFixedInference that holds its batch's APFixedCandidates
AP_FIXED_CANDIDATES = "ap_fixed_candidates"


def _predictors(heads) -> List:
    predictors = getattr(heads, "box_predictor", None)
    predictors = list(predictors) if isinstance(predictors, nn.ModuleList) else [predictors]
    if not all(hasattr(p, "test_topk_per_image") for p in predictors):
        raise ValueError(f"TEST.AP_FIXED.ENABLED: AP-fixed inference needs ROI heads with "
                         f"Detectron2's FastRCNNOutputLayers box predictors (StandardROIHeads, "
                         f"CascadeROIHeads, TDECascadeROIHeads); got {type(heads).__name__}")
    return predictors


def detection_limit(heads) -> int:
    """The heads' detections per image (``TEST.DETECTIONS_PER_IMAGE``; -1: no limit)."""
    return int(_predictors(heads)[-1].test_topk_per_image)


def without_detection_limit(heads):
    """A view of ``heads`` whose box predictors keep every detection of an image (no
    ``test_topk_per_image`` limit): a shallow copy sharing every parameter, buffer and
    submodule, with shallow copies of the predictors. ``heads`` is not changed."""
    _predictors(heads)
    view = copy.copy(heads)
    view._modules = dict(heads._modules)

    def unlimited(predictor):
        twin = copy.copy(predictor)
        twin.test_topk_per_image = -1
        return twin

    predictors = heads.box_predictor
    view._modules["box_predictor"] = nn.ModuleList([unlimited(p) for p in predictors]) \
        if isinstance(predictors, nn.ModuleList) else unlimited(predictors)
    return view


class APFixedCandidates:
    """One batch's box-head detections (all of them, sorted by score per image, before masks)
    from which the AP-fixed evaluator picks those that can be in their class's top K.

    Candidates whose box is empty once rescaled to the output size are left out, as
    ``detector_postprocess`` drops them from any output. :meth:`records` computes the masks
    (the mask head once per distinct box, pasting in chunks) and the json records of the rows
    asked for only. ``mask_rows`` counts the detections whose masks were computed.
    """

    def __init__(self, heads, features: Dict[str, torch.Tensor], detections: List[Instances],
                 batched_inputs: List[Dict], image_sizes: List, chunk: int = 300):
        self._heads, self._features = heads, features
        self._inputs, self._image_sizes = batched_inputs, image_sizes
        self._chunk = max(int(chunk), 1)
        self.mask_rows = 0
        boxes_only = []
        for d in detections:
            probe = Instances(d.image_size, pred_boxes=Boxes(d.pred_boxes.tensor.clone()),
                              row=torch.arange(len(d), device=d.scores.device))
            boxes_only.append(probe)
        kept = [o["instances"].row for o in
                GeneralizedRCNN._postprocess(boxes_only, batched_inputs, image_sizes)]
        self._detections = [d[k] for d, k in zip(detections, kept)]  # copies (index tensors)

    def __len__(self) -> int:
        return len(self._detections)

    def scores(self, i: int) -> torch.Tensor:
        return self._detections[i].scores

    def classes(self, i: int) -> torch.Tensor:
        return self._detections[i].pred_classes

    @torch.no_grad()
    def records(self, rows: List[torch.Tensor]) -> List[List[Dict]]:
        """Per image, the json records (``instances_to_coco_json``, contiguous class ids) of
        its candidates ``rows[i]`` (indices into its candidates), in that order."""
        if self._features is None:
            raise RuntimeError("the candidates were released: ask for records before release()")
        if len(rows) != len(self._detections):
            raise ValueError(f"rows for {len(rows)} images, candidates of "
                             f"{len(self._detections)}")
        chosen = [d[r.to(d.scores.device)] for d, r in zip(self._detections, rows)]
        if getattr(self._heads, "mask_on", False) and any(len(c) for c in chosen):
            chosen, _ = predict_masks(self._heads, self._features, chosen, self._chunk)
            self.mask_rows += sum(len(c) for c in chosen)
        out = []
        for c, image, size in zip(chosen, self._inputs, self._image_sizes):
            records = []
            for start in range(0, len(c), self._chunk):  # pasted masks of a chunk at a time
                piece = GeneralizedRCNN._postprocess([c[start:start + self._chunk]], [image],
                                                     [size])[0]["instances"]
                records.extend(instances_to_coco_json(piece.to("cpu"), image["image_id"]))
            if len(records) != len(c):
                raise RuntimeError(f"image {image['image_id']}: {len(c)} AP-fixed detections "
                                   f"gave {len(records)} records")
            out.append(records)
        return out

    def release(self) -> None:
        """Drop the references to the batch's features (the evaluator has taken its rows)."""
        self._features = self._heads = None


class APFixedInference(nn.Module):
    """A ``GeneralizedRCNN`` (stock or TDE ROI heads with ``FastRCNNOutputLayers``) in
    inference whose outputs are the model's own (``model(batched_inputs)``, exactly) with,
    in each output dict, :data:`AP_FIXED_CANDIDATES`: the batch's :class:`APFixedCandidates`.
    As Detectron2's ``GeneralizedRCNNWithTTA``, it drives the model without changing it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        if isinstance(model, DistributedDataParallel):
            model = model.module
        if not isinstance(model, GeneralizedRCNN):
            raise ValueError(f"TEST.AP_FIXED.ENABLED: AP-fixed inference needs a GeneralizedRCNN "
                             f"detector, got {type(model).__name__}")
        _predictors(model.roi_heads)
        self.model = model
        self.training = model.training  # the model's mode (eval, as ``inference_context`` sets)

    @torch.no_grad()
    def forward(self, batched_inputs: List[Dict]) -> List[Dict]:
        if self.training:
            raise RuntimeError("APFixedInference is for inference (eval mode)")
        model = self.model
        images = model.preprocess_image(batched_inputs)
        features = model.backbone(images.tensor)
        if model.proposal_generator is not None:
            proposals, _ = model.proposal_generator(images, features, None)
        else:
            proposals = [x["proposals"].to(model.device) for x in batched_inputs]
        detections = without_detection_limit(model.roi_heads)._forward_box(features, proposals)
        return standard_outputs_and_candidates(model.roi_heads, features, detections,
                                               batched_inputs, images.image_sizes)


def candidates_and_standard(heads, features, detections: List[Instances],
                            batched_inputs: List[Dict], image_sizes: List,
                            limit: Optional[int] = None):
    """From each image's detections without a per-image limit: the batch's
    :class:`APFixedCandidates` and, per image, the standard detections (before masks): the
    first ``limit`` rows (default the heads' ``TEST.DETECTIONS_PER_IMAGE``; -1: all)."""
    limit = detection_limit(heads) if limit is None else limit
    # first: the candidates hold copies; post-processing rescales the prefix's boxes in place
    candidates = APFixedCandidates(heads, features, detections, batched_inputs, image_sizes,
                                   chunk=limit if limit > 0 else 300)
    return candidates, [d[:limit] if limit >= 0 else d for d in detections]


def standard_outputs_and_candidates(heads, features, detections: List[Instances],
                                    batched_inputs: List[Dict], image_sizes: List,
                                    limit: Optional[int] = None) -> List[Dict]:
    """From each image's detections without a per-image limit: the standard outputs (the first
    ``limit`` rows, default the heads' ``TEST.DETECTIONS_PER_IMAGE``, with their masks and
    post-processing, as ``GeneralizedRCNN.inference``), each output dict also holding the
    batch's :class:`APFixedCandidates` under :data:`AP_FIXED_CANDIDATES`."""
    candidates, standard = candidates_and_standard(heads, features, detections, batched_inputs,
                                                   image_sizes, limit)
    standard = heads.forward_with_given_boxes(features, standard)
    outputs = GeneralizedRCNN._postprocess(standard, batched_inputs, image_sizes)
    for output in outputs:
        output[AP_FIXED_CANDIDATES] = candidates
    return outputs
