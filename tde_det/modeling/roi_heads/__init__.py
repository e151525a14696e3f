"""ROI heads of tde-det. Importing this registers ``TDECascadeROIHeads`` in
``ROI_HEADS_REGISTRY`` (config ``MODEL.ROI_HEADS.NAME: TDECascadeROIHeads``)."""
from .tde_cascade_roi_heads import TDECascadeROIHeads
from .tde_fast_rcnn import TDEClassLogits, TDEFastRCNNOutputLayers

__all__ = ["TDECascadeROIHeads", "TDEClassLogits", "TDEFastRCNNOutputLayers"]
