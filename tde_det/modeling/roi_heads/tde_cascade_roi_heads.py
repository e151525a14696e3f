"""Cascade Mask R-CNN ROI heads whose per-stage box predictors are de-confounded (TDE)."""
from detectron2.layers import cat
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, CascadeROIHeads
from detectron2.utils.events import get_event_storage

from ..tde_config_checks import check_softmax_box_head
from .tde_fast_rcnn import TDEFastRCNNOutputLayers

__all__ = ["TDECascadeROIHeads"]


@ROI_HEADS_REGISTRY.register()
class TDECascadeROIHeads(CascadeROIHeads):
    """Detectron2's ``CascadeROIHeads`` with a :class:`TDEFastRCNNOutputLayers` per stage, each
    with its own head direction. Everything else (proposal matching per stage, class-agnostic
    box regression, averaging of the per-stage ``predict_probs``, post-processing, the mask
    head) is Detectron2's.

    The only other change: in training, ``_run_stage`` hands the stage's proposal labels to its
    predictor (Detectron2 passes only the box features), so that the predictor's head
    direction is updated from foreground proposals only, and runs it under the name scope
    ``tde/stage{k}`` of the EventStorage, where the predictor puts its head-direction metrics.
    """

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
            return super()._run_stage(features, proposals, stage)
        predictor = self.box_predictor[stage]
        gt_classes = cat([p.gt_classes for p in proposals], dim=0)
        with predictor.proposal_labels(gt_classes), \
                get_event_storage().name_scope(f"tde/stage{stage}"):
            return super()._run_stage(features, proposals, stage)
