"""Per-class diagnostics of a TDE classifier (paper Fig. 1b, supplement Fig. 1): feature norms,
alignment with the head direction, classifier weight norms and accuracy, per class.

Tensors may live on any device (the model's); the statistics are computed on the CPU in float64
and returned as numpy arrays."""
from typing import Dict

import numpy as np
import torch

from tde_det.layers.tde_math import head_norms, split_heads, unit_heads

from .lvis_records import run_lvis_evaluation
from .per_class_ap import per_class_ap

__all__ = ["lvis_per_category_ap", "per_class_accuracy", "per_class_feature_stats",
           "weight_norms"]


def _per_class_mean(values: torch.Tensor, labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """Mean of ``values`` [N] per label; NaN for a class without samples."""
    values, labels = values.cpu(), labels.cpu().long()
    sums = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, labels, values.double())
    counts = torch.bincount(labels, minlength=num_classes).double()
    out = torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, float("nan")))
    return out.numpy()


def per_class_feature_stats(features: torch.Tensor, labels: torch.Tensor,
                            head_direction: torch.Tensor, num_heads: int,
                            num_classes: int) -> Dict[str, np.ndarray]:
    """Per class: ``feature_norm`` = mean ||x||, and ``cos_head_direction`` = mean over samples
    of the mean over heads of cos(x^k, d_hat^k) (Assumption 1's direction; 0 for a zero head
    direction or a zero feature chunk), ``count`` = samples."""
    x, labels = features.detach().cpu().double(), labels.cpu()
    norms = torch.linalg.vector_norm(x, dim=1)
    d_hat = split_heads(unit_heads(head_direction.detach().cpu().double(), num_heads), num_heads)
    x_hat = split_heads(unit_heads(x, num_heads), num_heads)
    cos = (x_hat * d_hat).sum(-1).mean(-1)
    return {"feature_norm": _per_class_mean(norms, labels, num_classes),
            "cos_head_direction": _per_class_mean(cos, labels, num_classes),
            "count": torch.bincount(labels.long(), minlength=num_classes).numpy()}


def weight_norms(weight: torch.Tensor, num_heads: int) -> Dict[str, np.ndarray]:
    """``norm``: ||w_i|| [C]; ``head_norm_mean``: the mean over heads of ||w_i^k|| [C]."""
    w = weight.detach().cpu().double()
    return {"norm": torch.linalg.vector_norm(w, dim=1).numpy(),
            "head_norm_mean": head_norms(w, num_heads).mean(-1).numpy()}


def per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor,
                       num_classes: int) -> np.ndarray:
    """Top-1 accuracy (%) per class; NaN for a class without samples."""
    logits, labels = logits.detach().cpu(), labels.cpu()
    correct = (logits.argmax(dim=1) == labels).double() * 100.0
    return _per_class_mean(correct, labels, num_classes)


def lvis_per_category_ap(lvis_gt, results: list, iou_type: str, max_dets: int = 300,
                         fast: bool = True) -> Dict[int, float]:
    """AP (%) per category id of ``results`` (LVIS-format detections, json category ids; not
    modified) on ``lvis_gt`` (an ``lvis.LVIS``), from the LVIS API's precision array averaged
    over IoU thresholds and recall (area "all"); NaN for a category without ground truth in the
    evaluated images. ``fast``: computed by :class:`FastLVISEval` (the same numbers), else by
    the LVIS API's ``LVISEval``."""
    if not results:
        return {c: float("nan") for c in lvis_gt.get_cat_ids()}
    ev = run_lvis_evaluation(lvis_gt, results, iou_type, max_dets, fast)
    return {row["id"]: row["AP"] for row in per_class_ap(ev)}
