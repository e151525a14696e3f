"""Logs the head direction (Assumption 1) of every TDE box predictor during training, and stops
training when a head direction becomes non-finite."""
import logging
import re
from typing import List, Optional, Tuple

import torch
from detectron2.engine import HookBase

from tde_det.layers import HeadDirection
from tde_det.layers.tde_math import split_heads

__all__ = ["FiniteHeadDirections", "HeadDirectionLogger", "named_head_directions"]

logger = logging.getLogger(__name__)


class HeadDirectionLogger(HookBase):
    """Every ``period`` iterations (and at the last one), for each stage k, put into the
    trainer's ``EventStorage``:

    - ``tde/stage{k}/ema_norm``: ||x_bar|| (the decayed sum; it grows to ~ mean / (1 - mu));
    - ``tde/stage{k}/direction_cos_prev``: mean over heads of cos(d_hat^k now, d_hat^k at the
      previous log), i.e. how much the head direction still moves (absent while either is 0);
    - ``tde/stage{k}/fg_cos``: mean over heads and foreground features of the last training
      batch of cos(x^k, d_hat^k) (absent when that batch had no foreground proposal). The
      predictors compute it only in the iterations that are logged (``record_foreground_cos``).

    The same values are also logged to the console, one line per logged iteration (Detectron2's
    console writer prints only losses, times and the learning rate).
    """

    def __init__(self, predictors: List[torch.nn.Module], period: int = 20):
        if period <= 0:
            raise ValueError(f"MODEL.TDE.LOG_PERIOD must be > 0 to log, got {period}")
        self.predictors = list(predictors)
        self.period = period
        self._previous: List[Optional[torch.Tensor]] = [None] * len(self.predictors)

    def before_train(self):
        self._previous = [p.head_direction.direction().detach().clone() for p in self.predictors]

    def _logs(self, it: int) -> bool:
        return (it + 1) % self.period == 0 or it == self.trainer.max_iter - 1

    def before_step(self):
        # The predictors compute fg_cos only for the iterations that are logged.
        record = self._logs(self.trainer.iter)
        for predictor in self.predictors:
            predictor.record_foreground_cos = record

    def after_train(self):
        for predictor in self.predictors:
            predictor.record_foreground_cos = False

    def after_step(self):
        if not self._logs(self.trainer.iter):
            return
        storage = self.trainer.storage
        logged = []
        for k, predictor in enumerate(self.predictors):
            hd = predictor.head_direction
            scalars = {"ema_norm": float(torch.linalg.vector_norm(hd.ema.double()))}
            now = hd.direction().detach().clone()
            prev = self._previous[k]
            if prev is not None and bool(now.any()) and bool(prev.any()):
                cos = (split_heads(now, hd.num_heads) * split_heads(prev.to(now), hd.num_heads))
                scalars["direction_cos_prev"] = float(cos.sum(-1).mean())
            self._previous[k] = now
            fg_cos = float(predictor.last_foreground_cos)
            if fg_cos == fg_cos:  # not NaN: the last batch had foreground proposals
                scalars["fg_cos"] = fg_cos
            for name, value in scalars.items():
                storage.put_scalar(f"tde/stage{k}/{name}", value, smoothing_hint=False)
                logged.append(f"tde/stage{k}/{name}: {value:.4g}")
        logger.info(f"iter: {self.trainer.iter}  " + "  ".join(logged))


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
