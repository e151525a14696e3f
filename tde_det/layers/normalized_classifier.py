"""The de-confounded ("causal norm") classifier of eq. 7 and its ablations, as an nn.Module, with
eq. 8 for a head direction."""
import math
from contextlib import nullcontext
from typing import Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .checks import check_kind, check_num_heads, check_real
from .fused import HeadDirectionUpdate, kernels_for
from .tde_math import (
    classifier_logits,
    classifier_logits_and_tde_bias,
    denominators,
    tde_bias,
    tde_logits,
)

__all__ = ["NormalizedClassifier"]


class NormalizedClassifier(nn.Module):
    """Eq. 7, z_i = (tau/K) * sum_k (w_i^k)^T x^k / ((||w_i^k|| + gamma) * ||x^k||), and ablations.

    ``kind`` (supplement eq. 1, N the per-head normaliser): "deconfound" (eq. 7),
    "cosine" (N = ||x^k|| ||w_i^k||), "capsule" (N = (||x^k|| + 1) ||w_i^k||) or "linear"
    (plain x^T w_i: no bias, no tau, no heads). ``gamma`` is used by "deconfound" only; ``eps``
    is added to ||x^k|| (as the official detection code) and bounds the weight normaliser from
    below, so zero features and zero weight rows give finite logits and gradients.
    The logits are computed in float32 (or wider) with autocast off: eps underflows in fp16.
    With ``fused`` (``MODEL.TDE.FUSED_KERNELS``), training calls on float32 CUDA tensors run the
    Triton kernels of :mod:`tde_det.layers.fused` (same maths).
    """

    def __init__(self, in_features: int, num_classes: int, kind: str = "deconfound",
                 num_heads: int = 2, tau: float = 16.0, gamma: float = 1 / 32,
                 eps: float = 1e-9, fused: bool = False) -> None:
        super().__init__()
        check_num_heads(in_features, num_heads)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        self.in_features = in_features
        self.num_classes = num_classes
        self.kind = check_kind(kind)
        self.num_heads = num_heads
        self.tau = check_real("tau", tau, 0.0, low_inclusive=False)
        self.gamma = check_real("gamma", gamma, 0.0, low_inclusive=True)
        self.eps = check_real("eps", eps, 0.0, low_inclusive=False)
        self.fused = bool(fused)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """uniform(-1/sqrt(d), 1/sqrt(d)), as the official code."""
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.weight, -bound, bound)

    def check_input(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """Check that ``x`` is [N, in_features]; return (x, weight) in one dtype >= float32."""
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"features must have shape [N, {self.in_features}] (in_features), "
                             f"got {tuple(x.shape)}")
        w = self.weight
        if x.dtype == w.dtype == torch.float32:  # the usual case: nothing to convert
            return x, w
        dtype = torch.promote_types(torch.promote_types(x.dtype, w.dtype), torch.float32)
        return x.to(dtype), w.to(dtype)

    def forward(self, x: Tensor, update: Optional[HeadDirectionUpdate] = None) -> Tensor:
        """[N, in_features] -> [N, num_classes] logits of eq. 7 (or of the ablation ``kind``).

        ``update``: a head direction's :meth:`~tde_det.layers.HeadDirection.kernel_update`, done
        by the Triton kernels together with the classifier's own (float32 CUDA ``x``), inside the
        classifier's launch where it runs the kernels, else in one launch of its own.
        """
        x, w = self.check_input(x)
        if update is not None and kernels_for(x, update[0]) is None:
            raise ValueError("NormalizedClassifier: a head-direction update by the Triton kernels "
                             f"needs float32 CUDA features and x_bar, got {x.dtype} on {x.device} "
                             f"and {update[0].dtype} on {update[0].device}")
        training = torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)
        kernels = kernels_for(x, w) if self.fused and training and self.kind != "linear" \
            else None
        with _autocast_off(x):
            if kernels is not None:
                return kernels.FusedNormalizedLogits.apply(
                    x, w, self.num_heads, self.tau / self.num_heads,
                    *denominators(self.kind, self.gamma, self.eps), update)
            logits = classifier_logits(x, w, self.kind, self.num_heads, self.tau, self.gamma,
                                       self.eps)
        if update is not None:  # no classifier kernel ran to do it in: one launch of its own
            ema, labels, num_classes, mu = update
            kernels_for(x).update_head_direction(ema, x, labels, num_classes, mu)
        return logits

    def tde_bias(self, x: Tensor, head_direction: Union[Tensor, nn.Module]) -> Tensor:
        """B of eq. 8 (:func:`~tde_det.layers.tde_math.tde_bias`), so that
        TDE = ``self(x)`` - alpha * B. ``head_direction``: the [d] x_bar (raw or unit; only each
        head's direction matters) or a :class:`~tde_det.layers.HeadDirection`."""
        return self._with_direction(tde_bias, x, head_direction)

    def logits_and_tde_bias(self, x: Tensor, head_direction: Union[Tensor, nn.Module]
                            ) -> Tuple[Tensor, Tensor]:
        """(``self(x)``, :meth:`tde_bias`) in one pass, bit for bit the same numbers: eq. 7
        logits z and B, so that TDE(z) = z - alpha * B (e.g. to sweep alpha in one pass)."""
        return self._with_direction(classifier_logits_and_tde_bias, x, head_direction)

    def tde_logits(self, x: Tensor, head_direction: Union[Tensor, nn.Module],
                   alpha: float) -> Tensor:
        """Eq. 8, the Total Direct Effect logits (inference) for a normalised ``kind``; see
        :func:`~tde_det.layers.tde_math.tde_logits`. alpha = 0 gives ``self(x)``."""
        return tde_logits(*self.logits_and_tde_bias(x, head_direction), alpha)

    def _with_direction(self, fn, x: Tensor, head_direction: Union[Tensor, nn.Module]):
        """``fn(x, w, d, kind, K, tau, gamma, eps)`` of ``tde_math`` for this classifier and the
        head direction d, computed as the forward (float32 or wider, autocast off)."""
        d = self._head_direction_tensor(head_direction)
        x, w = self.check_input(x)
        with _autocast_off(x):
            return fn(x, w, d.to(x.device), self.kind, self.num_heads, self.tau, self.gamma,
                      self.eps)

    def _head_direction_tensor(self, head_direction: Union[Tensor, nn.Module]) -> Tensor:
        """The [d] head-direction tensor of a tensor or a ``HeadDirection``, checked against
        this classifier."""
        if isinstance(head_direction, nn.Module):
            if getattr(head_direction, "num_heads", self.num_heads) != self.num_heads:
                raise ValueError(f"head direction has num_heads={head_direction.num_heads} but "
                                 f"the classifier has num_heads={self.num_heads}")
            head_direction = head_direction.ema
        if not isinstance(head_direction, Tensor) or head_direction.shape != (self.in_features,):
            shape = (tuple(head_direction.shape) if isinstance(head_direction, Tensor)
                     else head_direction)
            raise ValueError(f"head_direction must have shape ({self.in_features},) "
                             f"(the classifier's in_features), got {shape}")
        return head_direction

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, num_classes={self.num_classes}, "
                f"kind={self.kind!r}, num_heads={self.num_heads}, tau={self.tau}, "
                f"gamma={self.gamma}, eps={self.eps}" + (", fused=True" if self.fused else ""))


def _autocast_off(x: Tensor):
    """Autocast off for ``x``'s device where it is on (no context to leave otherwise)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.autocast(device_type=x.device.type, enabled=False)
    return nullcontext()
