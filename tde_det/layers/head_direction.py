"""The moving-average head direction x_bar of Assumption 1, as an nn.Module with a buffer."""
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .checks import HEAD_DIRECTION_FORMS, check_choice, check_mu, check_num_heads
from .fused import HeadDirectionUpdate, kernels_for
from .tde_math import (
    head_norms,
    moving_average_update_,
    moving_sum_update_,
    row_sums,
    unit_heads,
)

__all__ = ["HeadDirection"]


class HeadDirection(nn.Module):
    """Assumption 1: x_bar_t = mu * x_bar_{t-1} + mean_batch(x_t),  d_hat^k = x_bar^k / ||x_bar^k||.

    A decayed *sum* (no (1 - mu) factor): only its per-head direction is ever used (eq. 8).
    ``form="average"`` (``MODEL.TDE.HEAD_DIRECTION_FORM``) uses the (1 - mu) moving average
    instead: the same direction for a constant mu, another one when mu changes in training;
    the Triton kernels do the sum form only, so the average form updates in eager PyTorch.
    The buffer ``ema`` ([dim], float32, zeros at first) is saved in the state dict.
    ``mu`` may be changed between updates (e.g. rescaled each epoch); it must lie in [0, 1].
    With ``sync`` (default) and an initialised ``torch.distributed`` group of more than one
    process, the kept rows of all ranks are pooled (a sum and a count), so every rank holds the
    same x_bar. ``update`` is then a collective: every rank must call it, kept rows or not.
    With ``fused``, :meth:`update_from_labels` runs one Triton kernel on float32 CUDA features
    (two around the all-reduce when synchronised), and :meth:`kernel_update` hands the update
    to the classifier's kernel launch instead. x_bar moves only in a training step: in training
    mode with gradients enabled (not, e.g., in PreciseBN's ``no_grad`` passes); otherwise an
    update only checks its inputs.
    """

    def __init__(self, dim: int, num_heads: int = 2, mu: float = 0.9, sync: bool = True,
                 fused: bool = False, form: str = "sum") -> None:
        super().__init__()
        self.form = check_choice(form, HEAD_DIRECTION_FORMS, "head-direction form")
        check_num_heads(dim, num_heads, what="feature (dim)")
        self.dim = dim
        self.num_heads = num_heads
        self.mu = mu
        self.sync = bool(sync)
        self.fused = bool(fused)
        self.register_buffer("ema", torch.zeros(dim, dtype=torch.float32))

    @property
    def mu(self) -> float:
        return self._mu

    @mu.setter
    def mu(self, value: float) -> None:
        self._mu = check_mu(value)

    def update(self, features: Tensor, keep: Optional[Tensor] = None) -> None:
        """x_bar <- mu * x_bar + mean of the kept rows of ``features`` ([N, dim], detached).

        ``keep``: optional bool mask [N] (detection: foreground proposals only). No kept row
        (over all ranks when synced) leaves x_bar unchanged. No host sync.
        """
        self._check_features(features)
        if not self.moves():
            return
        rows = features.detach()
        n = rows.shape[0]
        if keep is not None:
            if keep.dtype != torch.bool or keep.dim() != 1 or keep.shape[0] != n:
                got = keep.shape[0] if keep.dim() == 1 else tuple(keep.shape)
                raise ValueError(f"keep must be a bool mask of length {n} (the number of feature "
                                 f"rows), got dtype {keep.dtype} and length {got}")
            keep = keep.to(rows.device)
        total, count = row_sums(rows, keep)
        if self._syncing():
            stats = torch.cat([total, count])
            dist.all_reduce(stats, op=dist.ReduceOp.SUM)
            total, count = stats[:-1], stats[-1:]
        update = moving_sum_update_ if self.form == "sum" else moving_average_update_
        update(self.ema, total.to(self.ema.device), count.to(self.ema.device), self._mu)

    def update_from_labels(self, features: Tensor, labels: Tensor, num_classes: int) -> None:
        """``update(features, keep=(0 <= labels) & (labels < num_classes))``: a detector's
        foreground proposals (background is ``num_classes``). With ``fused`` and CUDA features
        (float32, or float16/bfloat16 converted to it), in one Triton kernel (the mask
        included) instead of eleven; two around the all-reduce when synchronised."""
        self._check_labels(features, labels)
        if not self.moves():
            return
        rows = features.detach()
        kernels = None
        if self.fused and self.form == "sum":
            if rows.dtype in (torch.float16, torch.bfloat16):  # AMP box features: exact in fp32
                rows = rows.float()
            kernels = kernels_for(rows, self.ema)
        if kernels is None:
            self.update(rows, keep=((labels >= 0) & (labels < num_classes)).to(rows.device))
            return
        pool = (lambda sums: dist.all_reduce(sums, op=dist.ReduceOp.SUM)) \
            if self._syncing() else None
        kernels.update_head_direction(self.ema, rows, labels.to(rows.device), num_classes,
                                      self._mu, all_reduce=pool)

    def kernel_update(self, features: Tensor, labels: Tensor, num_classes: int
                      ) -> Optional[HeadDirectionUpdate]:
        """The :meth:`update_from_labels` of these rows as ``(ema, labels, num_classes, mu)`` for
        the Triton kernels to do inside the classifier's launch (``NormalizedClassifier(x,
        update=)``), or None where they cannot: not ``fused``, features not float32 CUDA, or a
        synchronised x_bar (its all-reduce must come between the sums and the update), or not
        a training step (:meth:`moves`). Checks the shapes of what it returns as
        :meth:`update_from_labels`; changes nothing itself."""
        if not self.moves() or not self.fused or self.form != "sum" \
                or kernels_for(features, self.ema) is None or self._syncing():
            return None  # (update_from_labels checks the shapes)
        self._check_labels(features, labels)
        return self.ema, labels.to(features.device), int(num_classes), self._mu

    def moves(self) -> bool:
        """Whether an update changes x_bar now: in training mode with gradients enabled."""
        return self.training and torch.is_grad_enabled()

    def _check_features(self, features: Tensor) -> None:
        if features.dim() != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features must have shape [N, {self.dim}] (dim), "
                             f"got {tuple(features.shape)}")

    def _check_labels(self, features: Tensor, labels: Tensor) -> None:
        self._check_features(features)
        if labels.shape != features.shape[:1]:
            raise ValueError(f"labels must have shape [{features.shape[0]}] (one per feature "
                             f"row), got {tuple(labels.shape)}")

    def _syncing(self) -> bool:
        return self.sync and dist.is_available() and dist.is_initialized() \
            and dist.get_world_size() > 1

    def tde_problem(self) -> Optional[str]:
        """Why x_bar cannot be used by TDE (eq. 8): "not finite", "zero" (eq. 8 would silently
        be eq. 7), or None. One host sync. The rule for every model that applies TDE."""
        finite, nonzero = torch.stack([torch.isfinite(self.ema).all(),
                                       self.ema.ne(0).any()]).tolist()
        return "not finite" if not finite else None if nonzero else "zero"

    def check_for_tde(self, buffer: str = "'head_direction.ema'") -> None:
        """Raise unless x_bar can be used by TDE (:meth:`tde_problem`): FloatingPointError if
        it is not finite, RuntimeError if it is zero. ``buffer`` names x_bar in the messages."""
        problem = self.tde_problem()
        if problem == "not finite":
            raise FloatingPointError(
                f"the head direction (EMA x_bar, buffer {buffer}) is not finite, so TDE "
                f"(eq. 8) would give NaN scores: the checkpoint (MODEL.WEIGHTS) or its training "
                f"diverged. Evaluate eq. 7 only (MODEL.TDE.TEST_TDE False) or use another "
                f"checkpoint")
        if problem == "zero":
            raise RuntimeError(
                f"the head direction (buffer {buffer}) is zero: the weights (MODEL.WEIGHTS) "
                f"were not trained with tde-det (e.g. a plain Detectron2 checkpoint), or "
                f"training has not run a single iteration. TDE (eq. 8) needs it; set "
                f"MODEL.TDE.TEST_TDE False (or MODEL.TDE.ALPHA 0) to evaluate eq. 7 only")

    def direction(self) -> Tensor:
        """d_hat: [dim], each of the K head chunks of x_bar scaled to norm 1 (zero stays zero)."""
        return unit_heads(self.ema, self.num_heads)

    def head_norms(self) -> Tensor:
        """[K]: ||x_bar^k|| per head (for logging)."""
        return head_norms(self.ema, self.num_heads)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, mu={self.mu}, sync={self.sync}"
                + (", fused=True" if self.fused else "")
                + (f", form={self.form!r}" if self.form != "sum" else ""))

