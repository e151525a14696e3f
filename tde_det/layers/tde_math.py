"""The maths of TDE (Tang, Huang, Zhang, NeurIPS 2020) as pure tensor functions.

One formula, one place: eq. 7 (and its ablations), eq. 8 and eq. 9 live here and nowhere else.
Notation of the paper: a feature x in R^d and each class weight w_i in R^d are split into K equal,
contiguous head chunks x = [x^1 ... x^K]; tau is the logit scale, gamma the weight-norm offset and
d_hat^k the unit head direction of head k (Assumption 1). Nothing here imports Detectron2.
"""
import logging
import math
import os
from numbers import Real
from typing import TYPE_CHECKING, Optional, Tuple, Union

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .head_direction import HeadDirection
    from .normalized_classifier import NormalizedClassifier

__all__ = [
    "CLASSIFIER_KINDS", "check_kind", "has_tde", "check_has_tde", "tde_undefined", "check_num_heads", "check_real", "check_mu",
    "split_heads", "head_norms",
    "unit_heads", "normalize_features", "normalize_weights", "classifier_logits",
    "classifier_logits_and_tde_bias", "tde_bias", "tde_bias_logits", "tde_logits_and_bias",
    "tde_logits", "background_exempted_probs", "denominators", "fused_kernels_for",
    "HeadDirectionUpdate",
]

CLASSIFIER_KINDS = ("linear", "cosine", "capsule", "deconfound")

# A head direction's update for the Triton kernels: (x_bar, labels, num_classes, mu)
HeadDirectionUpdate = Tuple[Tensor, Tensor, int, float]

logger = logging.getLogger(__name__)


def check_kind(kind: str, name: str = "classifier kind") -> str:
    """Raise a ValueError unless ``kind`` is one of :data:`CLASSIFIER_KINDS`. ``name``: what the
    message calls the value (e.g. its config key)."""
    if kind not in CLASSIFIER_KINDS:
        allowed = ", ".join(CLASSIFIER_KINDS)
        raise ValueError(f"{name} {kind!r} is unknown; allowed: {allowed}")
    return kind


def has_tde(kind: str) -> bool:
    """The one rule: TDE (eq. 8) is defined for the normalised classifiers (eq. 7 and its
    ablations), not for "linear", whose logits have no per-head direction to remove."""
    return check_kind(kind) != "linear"


def tde_undefined(kind: str, remedy: str = "") -> str:
    """The one message for TDE asked of a classifier without it; ``remedy``: what to do."""
    return (f"TDE (eq. 8) is not defined for MODEL.TDE.CLASSIFIER {kind!r}: it needs a "
            f"normalised classifier (cosine, capsule or deconfound)"
            + (f"; {remedy}" if remedy else ""))


def check_has_tde(kind: str, remedy: str = "") -> None:
    """Raise a ValueError (:func:`tde_undefined`) unless :func:`has_tde`."""
    if not has_tde(kind):
        raise ValueError(tde_undefined(kind, remedy))


def check_num_heads(dim: int, num_heads: int, what: str = "feature (in_features)",
                    name: str = "num_heads") -> None:
    """Raise a ValueError unless ``num_heads >= 1`` and the ``dim``-d ``what`` splits into K equal
    head chunks (eq. 7). ``name``: what the message calls ``num_heads`` (e.g. its config key)."""
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {num_heads!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"the {what} must have an integer size >= 1, got {dim!r}")
    if dim % num_heads != 0:
        raise ValueError(
            f"{name}={num_heads} does not divide the {dim}-d {what}: eq. 7 splits it into K "
            f"equal head chunks; choose {name} among the divisors of {dim}")


def check_real(name: str, value: float, low: float, low_inclusive: bool) -> float:
    """``value`` as a float; a ValueError naming ``name`` unless it is a finite real number
    above ``low`` (or equal to it, with ``low_inclusive``)."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (value >= low if low_inclusive else value > low):
        raise ValueError(f"{name} must be a finite number {'>=' if low_inclusive else '>'} {low},"
                         f" got {value!r}")
    return float(value)


def check_mu(mu: float, name: str = "mu") -> float:
    """``mu`` of Assumption 1 as a float; a ValueError naming ``name`` unless it is in [0, 1]."""
    if isinstance(mu, bool) or not isinstance(mu, Real) or not 0.0 <= mu <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1] (Assumption 1), got {mu!r}")
    return float(mu)


def split_heads(t: Tensor, num_heads: int) -> Tensor:
    """View ``[..., d]`` as ``[..., K, d/K]``: the contiguous head chunks t^1 ... t^K."""
    return t.reshape(*t.shape[:-1], num_heads, t.shape[-1] // num_heads)


def _rescaled_heads(t: Tensor, num_heads: int) -> Tuple[Tensor, Tensor]:
    """Head chunks divided by their largest |entry| (1 for a zero chunk), and that scale.

    Keeps ||t^k|| from under- or overflowing in float32 (e.g. an x_bar chunk of 1e-30 or 1e30).
    """
    h = split_heads(t, num_heads)
    m = h.abs().amax(dim=-1, keepdim=True)
    m = torch.where(m > 0, m, torch.ones_like(m))
    return h / m, m


def head_norms(t: Tensor, num_heads: int) -> Tensor:
    """Per-head Euclidean norms ``[..., K]``: ||t^k|| for k = 1..K."""
    h, m = _rescaled_heads(t, num_heads)
    return (torch.linalg.vector_norm(h, dim=-1, keepdim=True) * m).squeeze(-1)


def unit_heads(t: Tensor, num_heads: int) -> Tensor:
    """Per-head unit vector d_hat^k = t^k / ||t^k|| (Assumption 1); a zero chunk stays zero.

    No epsilon, so only the direction of each chunk matters, whatever its scale.
    """
    h, _ = _rescaled_heads(t, num_heads)
    n = torch.linalg.vector_norm(h, dim=-1, keepdim=True)
    return (h / torch.where(n > 0, n, torch.ones_like(n))).reshape(t.shape)


def _feature_parts(x: Tensor, kind: str, num_heads: int,
                   eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    """(x^k chunks [..., K, h], ||x^k|| and the denominator N_x(x^k), both [..., K, 1])."""
    h = split_heads(x, num_heads)
    n = torch.linalg.vector_norm(h, dim=-1, keepdim=True)
    return h, n, n + 1.0 if kind == "capsule" else n + eps


def _weight_parts(w: Tensor, kind: str, num_heads: int, gamma: float,
                  eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    """(w_i^k chunks [C, K, h], ||w_i^k|| and the denominator N_w(w_i^k), both [C, K, 1])."""
    h = split_heads(w, num_heads)
    n = torch.linalg.vector_norm(h, dim=-1, keepdim=True)
    return h, n, (n + gamma if kind == "deconfound" else n).clamp_min(eps)


def denominators(kind: str, gamma: float, eps: float) -> Tuple[Tuple[float, float],
                                                                Tuple[float, float]]:
    """The normalisers of :func:`_feature_parts` and :func:`_weight_parts` as ``(add, lo)``
    pairs, D(n) = max(n + add, lo): ((add, lo) of N_x, (add, lo) of N_w)."""
    features = (1.0 if check_kind(kind) == "capsule" else eps, 0.0)  # n >= 0: lo 0 is no clamp
    weights = (gamma if kind == "deconfound" else 0.0, eps)
    return features, weights


def fused_kernels_for(*tensors: Tensor):
    """The Triton kernels module (:mod:`tde_det.layers.fused_kernels`) if it can take these
    tensors -- float32, on CUDA, or on the CPU under Triton's interpreter (``TRITON_INTERPRET=1``)
    -- else None (the eager maths then runs). Also None, with one warning per device, where the
    kernels cannot run there: no Triton, or its first try on the device failed (an old GPU, an
    incompatible Triton)."""
    if all(t.dtype == torch.float32 and t.is_cuda for t in tensors):
        device = tensors[0].device
    elif os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes") \
            and all(t.dtype == torch.float32 for t in tensors):
        device = torch.device("cpu")
    else:
        return None
    if device not in _KERNELS_ON:
        _KERNELS_ON[device] = _try_kernels(device)
    return _KERNELS_ON[device]


_KERNELS_ON: dict = {}  # device -> the kernels module, or None where they failed


def _try_kernels(device: torch.device):
    try:
        from . import fused_kernels
        fused_kernels.self_check(device)
    except Exception as e:  # noqa: BLE001 - any failure means: use the eager maths here
        logger.warning("MODEL.TDE.FUSED_KERNELS: the Triton kernels cannot run on %s (%s: %s); "
                       "the TDE heads use the eager PyTorch maths there (same results, slower "
                       "training steps). Set MODEL.TDE.FUSED_KERNELS False to silence this.",
                       device, type(e).__name__, str(e).strip().split("\n")[0][:300])
        return None
    return fused_kernels


def normalize_features(x: Tensor, kind: str, num_heads: int, eps: float) -> Tensor:
    """phi(x) of supplement eq. 1, per head: x^k / N_x(x^k).

    linear: x; cosine and deconfound: x^k / (||x^k|| + eps) (eps as the official detection code);
    capsule: the squashed x^k * ||x^k|| / (1 + ||x^k||) / ||x^k|| = x^k / (1 + ||x^k||).
    """
    if check_kind(kind) == "linear":
        return x
    h, _, d = _feature_parts(x, kind, num_heads, eps)
    return (h / d).reshape(x.shape)


def normalize_weights(w: Tensor, kind: str, num_heads: int, gamma: float, eps: float) -> Tensor:
    """w_hat_i^k of supplement eq. 1, per head: w_i^k / N_w(w_i^k).

    linear: w; deconfound: w_i^k / (||w_i^k|| + gamma) (eq. 7); cosine and capsule:
    w_i^k / ||w_i^k||. The denominator is clamped to >= eps so a zero row gives zero, not NaN.
    """
    if check_kind(kind) == "linear":
        return w
    h, _, d = _weight_parts(w, kind, num_heads, gamma, eps)
    return (h / d).reshape(w.shape)


def _normalized_backward(g: Tensor, f: Tensor, n: Tensor, d: Tensor, active: Tensor) -> Tensor:
    """The gradient through f = t / D(||t||) per head chunk, given g = dL/df ([..., K, h]):

        dL/dt = g / D - f * (f^T g) * D'(||t||) / ||t||

    with D' = 1 where ``active`` (the denominator follows ||t||) and 0 elsewhere (a clamped
    denominator, or ||t|| = 0, where autograd's norm and clamp backwards give 0 too).
    """
    c = (f.unsqueeze(-2) @ g.unsqueeze(-1)).squeeze(-1)  # f^T g per chunk, [..., K, 1]
    return (g / d).addcmul_(f, torch.where(active, c / n, 0.0), value=-1.0)


class _NormalizedLogits(torch.autograd.Function):
    """Eq. 7 (and the cosine / capsule ablations) with a hand-written backward.

    The forward is the arithmetic of :func:`normalize_features`, :func:`normalize_weights` and
    :func:`classifier_logits`, bit for bit; the backward applies :func:`_normalized_backward`
    to each side: half the kernels of autograd's chain of norm, add, clamp and division
    backwards (15 instead of 28 per call), which matters in a launch-bound training step.
    """

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, kind: str, num_heads: int, tau: float, gamma: float,
                eps: float) -> Tensor:
        hx, nx, dx = _feature_parts(x, kind, num_heads, eps)
        hw, nw, dw = _weight_parts(w, kind, num_heads, gamma, eps)
        fx, fw = hx / dx, hw / dw
        ctx.save_for_backward(fx, nx, dx, fw, nw, dw)
        ctx.scale, ctx.kind, ctx.gamma, ctx.eps = tau / num_heads, kind, gamma, eps
        return ctx.scale * (fx.reshape(x.shape) @ fw.reshape(w.shape).t())

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        fx, nx, dx, fw, nw, dw = ctx.saved_tensors
        g = grad * ctx.scale
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            gx = (g @ fw.flatten(-2)).view(fx.shape)  # flatten, not view(N, -1): N may be 0
            grad_x = _normalized_backward(gx, fx, nx, dx, nx > 0).flatten(-2)
        if ctx.needs_input_grad[1]:
            gw = (g.t() @ fx.flatten(-2)).view(fw.shape)
            if ctx.kind != "deconfound":  # D = max(||w||, eps) follows ||w|| iff ||w|| >= eps
                active = nw >= ctx.eps
            elif ctx.gamma >= ctx.eps:  # ||w|| + gamma >= eps always: follows unless ||w|| = 0
                active = nw > 0
            else:
                active = (nw > 0) & (nw + ctx.gamma >= ctx.eps)
            grad_w = _normalized_backward(gw, fw, nw, dw, active).flatten(-2)
        return grad_x, grad_w, None, None, None, None, None


def classifier_logits(x: Tensor, w: Tensor, kind: str, num_heads: int, tau: float,
                      gamma: float, eps: float, fused: bool = False,
                      update: Optional[HeadDirectionUpdate] = None) -> Tensor:
    """Eq. 7 and its ablations: z_i = (tau/K) * sum_k (w_i^k)^T x^k / N(x^k, w_i^k).

    deconfound (eq. 7): N = (||w_i^k|| + gamma) * ||x^k||; cosine: N = ||w_i^k|| * ||x^k||;
    capsule: N = ||w_i^k|| * (||x^k|| + 1); linear: plain x^T w_i (no bias, no tau, no heads).
    ``x``: [N, d], ``w``: [C, d] -> [N, C]. With ``fused``, a training call (gradients needed)
    on float32 CUDA tensors runs the Triton kernels of
    :class:`~tde_det.layers.fused_kernels.FusedNormalizedLogits` (same maths, 5 kernels
    forward and backward instead of 24).

    ``update``: ``(ema, labels, num_classes, mu)`` of a head direction to update from the
    foreground rows of ``x`` by the Triton kernels (see
    :meth:`~tde_det.layers.HeadDirection.kernel_update`), inside the classifier's own launch
    when it runs the kernels, else in one launch of its own. Only for float32 CUDA ``x``.
    """
    if update is not None and fused_kernels_for(x, update[0]) is None:
        raise ValueError("classifier_logits: a head-direction update by the Triton kernels needs "
                         f"float32 CUDA features and x_bar, got {x.dtype} on {x.device} and "
                         f"{update[0].dtype} on {update[0].device}")
    linear = check_kind(kind) == "linear"
    training = torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)
    kernels = fused_kernels_for(x, w) if fused and training and not linear else None
    if kernels is not None:
        return kernels.FusedNormalizedLogits.apply(x, w, num_heads, tau / num_heads,
                                                   *denominators(kind, gamma, eps), update)
    if linear:
        logits = x @ w.t()
    elif training:
        logits = _NormalizedLogits.apply(x, w, kind, num_heads, tau, gamma, eps)
    else:
        fx = normalize_features(x, kind, num_heads, eps)
        fw = normalize_weights(w, kind, num_heads, gamma, eps)
        logits = (tau / num_heads) * (fx @ fw.t())
    if update is not None:  # the classifier ran no kernel to do it in: one launch of its own
        ema, labels, num_classes, mu = update
        fused_kernels_for(x).update_head_direction(ema, x, labels, num_classes, mu)
    return logits


def tde_bias(x: Tensor, w: Tensor, head_direction: Tensor, kind: str, num_heads: int,
             tau: float, gamma: float, eps: float) -> Tensor:
    """The alpha-free term B of eq. 8, so that TDE(z_i) = z_i - alpha * B_i:

        B_i = (tau/K) * sum_k (phi(x^k)^T d_hat^k) * (d_hat^k)^T w_hat_i^k

    i.e. the classifier applied to the projection of the normalised feature phi(x^k) on the
    head direction. deconfound: phi(x^k)^T d_hat^k = cos(x^k, d_hat^k) and
    w_hat = w/(||w|| + gamma), which is eq. 8 exactly; cosine: the same with w_hat = w/||w||.
    capsule (our choice, from supplement eq. 1 with the squash phi(x) = x/(1 + ||x||)): the
    projection of the squashed feature, phi(x^k)^T d_hat^k = ||x^k|| / (1 + ||x^k||) *
    cos(x^k, d_hat^k), with w_hat = w/||w||. For every kind, x^k parallel to d_hat^k and
    alpha = 1 give TDE = 0 (the whole feature is the head direction's effect).
    ``head_direction``: [d], raw x_bar or unit; it is normalised per head here (a zero chunk
    contributes nothing, so a zero x_bar gives B = 0 and TDE = eq. 7).
    """
    check_has_tde(kind)
    fx = normalize_features(x, kind, num_heads, eps)
    fw = normalize_weights(w, kind, num_heads, gamma, eps)
    return _bias_of_normalized(fx, fw, head_direction, num_heads, tau)


def _bias_of_normalized(fx: Tensor, fw: Tensor, head_direction: Tensor, num_heads: int,
                        tau: float) -> Tensor:
    """B of eq. 8 from phi(x) [N, d] and w_hat [C, d] (see :func:`tde_bias`)."""
    d_hat = split_heads(unit_heads(head_direction.to(fx.dtype), num_heads), num_heads)  # [K, h]
    # B = (tau/K) * sum_k (phi(x^k)^T d_hat^k) (w_hat_i^k^T d_hat^k): an [N, K] x [K, C] product
    # instead of projecting every feature and multiplying by the [C, d] weights again.
    return (tau / num_heads) * ((split_heads(fx, num_heads) * d_hat).sum(-1)
                                @ (split_heads(fw, num_heads) * d_hat).sum(-1).t())


def classifier_logits_and_tde_bias(x: Tensor, w: Tensor, head_direction: Tensor, kind: str,
                                   num_heads: int, tau: float, gamma: float,
                                   eps: float) -> Tuple[Tensor, Tensor]:
    """(z, B): eq. 7 logits and the alpha-free term of eq. 8, sharing phi(x) and w_hat.

    The same numbers, bit for bit, as :func:`classifier_logits` (without autograd) and
    :func:`tde_bias`, in fewer kernels; TDE(z) = z - alpha * B.
    """
    check_has_tde(kind)
    fx = normalize_features(x, kind, num_heads, eps)
    fw = normalize_weights(w, kind, num_heads, gamma, eps)
    return ((tau / num_heads) * (fx @ fw.t()),
            _bias_of_normalized(fx, fw, head_direction, num_heads, tau))


def _raw_head_direction(classifier: "NormalizedClassifier",
                        head_direction: Union[Tensor, "HeadDirection"]) -> Tensor:
    """Return the [d] head-direction tensor, checking it against the classifier."""
    if isinstance(head_direction, torch.nn.Module):
        if getattr(head_direction, "num_heads", classifier.num_heads) != classifier.num_heads:
            raise ValueError(f"head direction has num_heads={head_direction.num_heads} but the "
                             f"classifier has num_heads={classifier.num_heads}")
        head_direction = head_direction.ema
    if not isinstance(head_direction, Tensor) or head_direction.shape != (classifier.in_features,):
        shape = (tuple(head_direction.shape) if isinstance(head_direction, Tensor)
                 else head_direction)
        raise ValueError(f"head_direction must have shape ({classifier.in_features},) "
                         f"(the classifier's in_features), got {shape}")
    return head_direction


def tde_bias_logits(classifier: "NormalizedClassifier", x: Tensor,
                    head_direction: Union[Tensor, "HeadDirection"]) -> Tensor:
    """B of eq. 8 for ``classifier`` (see :func:`tde_bias`): TDE = classifier(x) - alpha * B.

    Computed like the classifier's forward (float32 or wider, autocast off). Useful to sweep
    alpha in one pass: compute ``classifier(x)`` and ``B`` once, then ``z - alpha * B``.
    """
    d_hat = _raw_head_direction(classifier, head_direction)
    x, w = classifier.check_input(x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return tde_bias(x, w, d_hat.to(x.device), classifier.kind, classifier.num_heads,
                        classifier.tau, classifier.gamma, classifier.eps)


def tde_logits_and_bias(classifier: "NormalizedClassifier", x: Tensor,
                        head_direction: Union[Tensor, "HeadDirection"]) -> Tuple[Tensor, Tensor]:
    """(``classifier(x)``, :func:`tde_bias_logits`) in one pass (inference: no custom backward),
    bit for bit the same numbers: eq. 7 logits z and B, so that TDE(z) = z - alpha * B."""
    d_hat = _raw_head_direction(classifier, head_direction)
    x, w = classifier.check_input(x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return classifier_logits_and_tde_bias(x, w, d_hat.to(x.device), classifier.kind,
                                              classifier.num_heads, classifier.tau,
                                              classifier.gamma, classifier.eps)


def tde_logits(classifier: "NormalizedClassifier", x: Tensor,
               head_direction: Union[Tensor, "HeadDirection"], alpha: float) -> Tensor:
    """Eq. 8, the Total Direct Effect logits (inference only):

        TDE(z_i) = (tau/K) * sum_k [ (w_i^k)^T x^k / ((||w_i^k|| + gamma) ||x^k||)
                      - alpha * cos(x^k, d_hat^k) (w_i^k)^T d_hat^k / (||w_i^k|| + gamma) ]

    for the deconfound classifier; cosine and capsule use their own normalisation (see
    :func:`tde_bias`). ``head_direction``: the [d] EMA x_bar (raw or unit; only each head's
    direction matters) or a ``HeadDirection`` module. alpha = 0 returns ``classifier(x)``.
    """
    alpha = check_real("alpha (eq. 8)", alpha, 0.0, low_inclusive=True)
    check_has_tde(classifier.kind)
    total, bias = tde_logits_and_bias(classifier, x, head_direction)
    return total - alpha * bias


def background_exempted_probs(total_logits: Tensor, tde_logits: Tensor,
                              bg_index: int = -1) -> Tensor:
    """Eq. 9, background-exempted inference for detectors, over C+1 classes:

        p = softmax(z) (eq. 7), q = softmax(TDE(z)) (eq. 8),
        score_bg = p_bg,  score_i = (1 - p_bg) * q_i / (1 - q_bg)  for each foreground i.

    Exactly one softmax per term. 1 - p_bg is taken as sum_{i fg} p_i and q_i / (1 - q_bg) as
    the softmax of TDE(z) over the foreground columns only (the same numbers, but safe when
    q_bg -> 1). Rows sum to 1 and the background column is softmax(z)[:, bg] itself.
    Returns probabilities (float32 or wider) in the input's column order.
    """
    if total_logits.shape != tde_logits.shape or total_logits.dim() != 2:
        raise ValueError(f"total_logits and tde_logits must be [N, C+1] of the same shape, got "
                         f"{tuple(total_logits.shape)} and {tuple(tde_logits.shape)}")
    ncol = total_logits.shape[1]
    if ncol < 2 or not -ncol <= bg_index < ncol:
        raise ValueError(f"bg_index={bg_index} is out of range for {ncol} columns (need >= 2)")
    bg = bg_index % ncol
    dtype = torch.promote_types(total_logits.dtype, torch.float32)
    p = torch.softmax(total_logits.to(dtype), dim=1)
    p_fg, p_bg = _without_column(p, bg), p[:, bg:bg + 1]
    q_fg = torch.softmax(_without_column(tde_logits.to(dtype), bg), dim=1)  # q_i / (1 - q_bg)
    scaled = p_fg.sum(dim=1, keepdim=True) * q_fg
    return torch.cat([scaled[:, :bg], p_bg, scaled[:, bg:]], dim=1)


def _without_column(t: Tensor, col: int) -> Tensor:
    """``t`` [N, C] without column ``col``: slices, not a boolean mask (no host sync)."""
    if col == t.shape[1] - 1:
        return t[:, :col]
    return t[:, col + 1:] if col == 0 else torch.cat([t[:, :col], t[:, col + 1:]], dim=1)
