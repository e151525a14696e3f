"""The learning-rate-driven mu of the head-direction EMA (official code, non-CIFAR data)."""
from typing import List

from detectron2.engine import HookBase

from tde_det.layers import HeadDirection

__all__ = ["MuScheduleHook", "scheduled_mu"]


def scheduled_mu(lr: float, base_mu: float = 0.9, lr_scale: float = 50.0) -> float:
    """mu = 1 - (1 - base_mu) * min(lr_scale * lr, 1).

    With the official values (base_mu 0.9, lr_scale 50): mu = 1 - 0.1 * min(50 lr, 1), i.e. 0.9
    while lr >= 0.02, rising to 1 (the EMA freezes) as the cosine learning rate decays to 0.
    """
    return 1.0 - (1.0 - base_mu) * min(lr_scale * lr, 1.0)


class MuScheduleHook(HookBase):
    """Before every iteration, set ``mu`` of every ``HeadDirection`` of the model from the
    iteration's learning rate (the largest over the optimizer's parameter groups) with
    :func:`scheduled_mu`, and record it as ``head_direction_mu``. The official code did this
    once per epoch; here it follows the per-iteration LR schedule."""

    def __init__(self, head_directions: List[HeadDirection], base_mu: float, lr_scale: float):
        if not head_directions:
            raise ValueError("MuScheduleHook: the model has no HeadDirection module")
        self.head_directions = list(head_directions)
        self.base_mu = base_mu
        self.lr_scale = lr_scale

    def before_step(self):
        lr = max(g["lr"] for g in self.trainer.optimizer.param_groups)
        mu = scheduled_mu(lr, self.base_mu, self.lr_scale)
        for hd in self.head_directions:
            hd.mu = mu
        self.trainer.storage.put_scalar("head_direction_mu", mu, smoothing_hint=False)
