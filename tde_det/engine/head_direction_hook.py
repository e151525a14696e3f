"""Prints the head-direction metrics (Assumption 1) the TDE box predictors put during training,
and stops training when a head direction becomes non-finite."""
import logging
import re
from typing import List, Tuple

import torch
from detectron2.engine import HookBase

from tde_det.layers import HeadDirection

__all__ = ["FiniteHeadDirections", "HeadDirectionPrinter", "named_head_directions"]

logger = logging.getLogger(__name__)


class HeadDirectionPrinter(HookBase):
    """After every iteration in which the TDE box predictors put their head-direction metrics
    (``tde/stage{k}/...``, every ``MODEL.TDE.LOG_PERIOD`` iterations), one console line with
    them: Detectron2's console writer prints only losses, times and the learning rate."""

    def after_step(self):
        storage = self.trainer.storage
        now = sorted((k, v) for k, (v, it) in storage.latest().items()
                     if k.startswith("tde/") and it == storage.iter)
        if now:
            logger.info(f"iter: {storage.iter}  " + "  ".join(f"{k}: {v:.4g}" for k, v in now))


def named_head_directions(model: torch.nn.Module) -> List[Tuple[str, HeadDirection]]:
    """(description, head direction) of every :class:`HeadDirection` of ``model`` (unwrapped
    from DistributedDataParallel): its buffer's name, and its cascade stage when it belongs to
    a box predictor (stage k as in ``tde/stage{k}/...``)."""
    model = getattr(model, "module", model)
    named = []
    for name, module in model.named_modules():
        if isinstance(module, HeadDirection):
            stage = re.search(r"box_predictor\.(\d+)\.head_direction$", name)
            named.append(((f"stage {stage.group(1)} " if stage else "")
                          + f"(buffer '{name}.ema')", module))
    return named


class FiniteHeadDirections(HookBase):
    """After every iteration, raise FloatingPointError (as Detectron2 does for a non-finite
    loss) if a head direction x_bar is no longer finite, naming it and the iteration. The loss
    does not use x_bar, so training would otherwise go on with it NaN for good (mu * NaN is
    NaN) and TDE (eq. 8) would fail only at evaluation. One host sync per iteration."""

    def __init__(self, head_directions: List[Tuple[str, HeadDirection]]):
        self.head_directions = list(head_directions)

    def after_step(self):
        if not self.head_directions:
            return
        finite = torch.stack([torch.isfinite(d.ema).all()
                              for _, d in self.head_directions]).tolist()
        if all(finite):
            return
        bad = [name for (name, _), ok in zip(self.head_directions, finite) if not ok]
        raise FloatingPointError(
            f"Head direction became infinite or NaN at iteration={self.trainer.iter}: "
            f"{', '.join(bad)}. A non-finite feature reached the EMA x_bar (Assumption 1), or "
            f"the checkpoint resumed from had one; lower SOLVER.BASE_LR or clip gradients "
            f"(SOLVER.CLIP_GRADIENTS), or resume from an earlier checkpoint")
