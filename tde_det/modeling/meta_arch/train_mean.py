"""The mean training feature after training: the "train_mean" head direction of the ablation."""
import logging
from typing import Iterable

import torch
from detectron2.evaluation import inference_context
from detectron2.utils import comm

from tde_det.layers.tde_math import row_sums

__all__ = ["set_train_mean_direction"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def set_train_mean_direction(model, data_loader: Iterable) -> torch.Tensor:
    """Mean pooled feature of ``model`` (a ``TDEImageClassifier``, in eval mode) over every image
    of ``data_loader`` (e.g. ``Trainer.build_test_loader(cfg, <train split>)``: no
    augmentation), pooled over processes; written to ``model.train_mean_direction``, which
    ``MODEL.TDE.TEST_DIRECTION "train_mean"`` reads. Returns it."""
    total, count = None, None
    with inference_context(model):
        for batch in data_loader:
            s, n = row_sums(model.extract_features(model.preprocess_image(batch)).float())
            total, count = (s, n) if total is None else (total + s, count + n)
    parts = [p for p in comm.all_gather(None if total is None else (total.cpu(), count.cpu()))
             if p is not None]
    if not parts:
        raise ValueError("the training-set loader yielded no image: no mean feature to compute")
    total = sum(p[0] for p in parts)
    count = sum(p[1] for p in parts)
    mean = (total / count).to(model.train_mean_direction)
    if not bool(torch.isfinite(mean).all()):
        raise FloatingPointError("the mean training feature is not finite (a diverged model)")
    model.train_mean_direction.copy_(mean)
    logger.info(f"mean training feature over {int(count.item())} images: norm "
                f"{float(mean.norm()):.4g}")
    return mean
