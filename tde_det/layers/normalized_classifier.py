"""The de-confounded ("causal norm") classifier of eq. 7 and its ablations, as an nn.Module."""
import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .tde_math import (HeadDirectionUpdate, check_kind, check_num_heads, check_real,
                       classifier_logits)

__all__ = ["NormalizedClassifier"]


class NormalizedClassifier(nn.Module):
    """Eq. 7, z_i = (tau/K) * sum_k (w_i^k)^T x^k / ((||w_i^k|| + gamma) * ||x^k||), and ablations.

    ``kind`` (supplement eq. 1, N the per-head normaliser): "deconfound" (eq. 7),
    "cosine" (N = ||x^k|| ||w_i^k||), "capsule" (N = (||x^k|| + 1) ||w_i^k||) or "linear"
    (plain x^T w_i: no bias, no tau, no heads). ``gamma`` is used by "deconfound" only; ``eps``
    is added to ||x^k|| (as the official detection code) and bounds the weight normaliser from
    below, so zero features and zero weight rows give finite logits and gradients.
    The logits are computed in float32 (or wider) with autocast off: eps underflows in fp16.
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
        # Triton kernels for training steps on float32 CUDA tensors (MODEL.TDE.FUSED_KERNELS)
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

        ``update``: a head direction's :meth:`~tde_det.layers.HeadDirection.kernel_update`,
        done by the Triton kernels together with the classifier's own (float32 CUDA ``x``).
        """
        x, w = self.check_input(x)
        args = (x, w, self.kind, self.num_heads, self.tau, self.gamma, self.eps, self.fused,
                update)
        if not torch.is_autocast_enabled(x.device.type):  # no context to leave: skip its cost
            return classifier_logits(*args)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return classifier_logits(*args)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, num_classes={self.num_classes}, "
                f"kind={self.kind!r}, num_heads={self.num_heads}, tau={self.tau}, "
                f"gamma={self.gamma}, eps={self.eps}" + (", fused=True" if self.fused else ""))
