"""Cascade Mask R-CNN ROI heads whose per-stage box predictors are de-confounded (TDE)."""
from typing import List, Optional, Tuple

import torch
from detectron2.layers import cat
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, CascadeROIHeads
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage

from ..tde_config_checks import check_softmax_box_head
from .tde_fast_rcnn import TDEClassLogits, TDEFastRCNNOutputLayers

__all__ = ["TDECascadeROIHeads"]

# One stage's (predictor, (scores, proposal_deltas), proposals) in inference
Stage = Tuple[TDEFastRCNNOutputLayers, Tuple, List[Instances]]


@ROI_HEADS_REGISTRY.register()
class TDECascadeROIHeads(CascadeROIHeads):
    """Detectron2's ``CascadeROIHeads`` with a :class:`TDEFastRCNNOutputLayers` per stage, each
    with its own head direction. Everything else (proposal matching per stage, class-agnostic
    box regression, averaging of the per-stage ``predict_probs``, post-processing, the mask
    head) is Detectron2's.

    In training, ``_run_stage`` hands the stage's proposal labels to its predictor (Detectron2
    passes only the box features), so that the predictor's head direction is updated from
    foreground proposals only, and runs it under the name scope ``tde/stage{k}`` of the
    EventStorage, where the predictor puts its head-direction metrics. In inference,
    :meth:`forward_stages` and :meth:`detections` score any alpha from one run of the box heads
    (the alpha sweep).
    """

    _stages: Optional[List[Stage]] = None  # filled by _run_stage within forward_stages

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        check_softmax_box_head(cfg)  # before Detectron2 builds its own predictors with them
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictors"] = [
            TDEFastRCNNOutputLayers(cfg, head.output_shape,
                                    box2box_transform=predictor.box2box_transform)
            for head, predictor in zip(ret["box_heads"], ret["box_predictors"])
        ]
        return ret

    def _run_stage(self, features, proposals, stage):
        if not self.training:
            predictions = super()._run_stage(features, proposals, stage)
            if self._stages is not None:
                self._stages.append((self.box_predictor[stage], predictions, proposals))
            return predictions
        predictor = self.box_predictor[stage]
        gt_classes = cat([p.gt_classes for p in proposals], dim=0)
        with predictor.proposal_labels(gt_classes), \
                get_event_storage().name_scope(f"tde/stage{stage}"):
            return super()._run_stage(features, proposals, stage)

    @torch.no_grad()
    def forward_stages(self, features, proposals: List[Instances]) -> List[Stage]:
        """Inference: Detectron2's box cascade once on ``proposals``; returns each stage's
        (predictor, predictions, proposals), the predictions holding eq. 7 logits and the TDE
        term B (:class:`TDEClassLogits`) for :meth:`detections`."""
        if self.training:
            raise RuntimeError("TDECascadeROIHeads.forward_stages is for inference (eval mode)")
        self._stages = []
        try:
            self._forward_box(features, proposals)
            return self._stages
        finally:
            self._stages = None

    def detections(self, stages: List[Stage], alpha: float,
                   topk: Optional[int] = None) -> List[Instances]:
        """Per image, the detections (before masks) with TDE at ``alpha`` (eq. 9 or eq. 8,
        whatever ``MODEL.TDE.TEST_TDE``; alpha = 0 is eq. 7) from :meth:`forward_stages`: as
        Detectron2's cascade inference, the mean over stages of each predictor's
        :meth:`~TDEFastRCNNOutputLayers.probs`, the last stage's boxes and
        ``fast_rcnn_inference``, keeping ``topk`` per image (None: ``TEST.DETECTIONS_PER_IMAGE``;
        -1: all, of which the first ``TEST.DETECTIONS_PER_IMAGE`` are those of None)."""
        per_stage = []
        for predictor, (scores, _), proposals in stages:
            if not isinstance(scores, TDEClassLogits):
                raise ValueError("TDE (eq. 8) is not defined for MODEL.TDE.CLASSIFIER 'linear': "
                                 "its box predictors give no TDE term")
            per_stage.append(predictor.probs(*scores, alpha).split([len(p) for p in proposals]))
        probs = [sum(s) * (1.0 / len(stages)) for s in zip(*per_stage)]
        last, predictions, proposals = stages[-1]
        instances, _ = fast_rcnn_inference(
            last.predict_boxes(predictions, proposals), probs, [p.image_size for p in proposals],
            last.test_score_thresh, last.test_nms_thresh,
            last.test_topk_per_image if topk is None else topk)
        return instances
