"""The maths of TDE (Tang, Huang, Zhang, NeurIPS 2020) as pure tensor functions.

One formula, one place: eq. 7 (and its ablations), eq. 8, eq. 9 and the moving average of
Assumption 1 live here and nowhere else. Notation of the paper: a feature x in R^d and each class
weight w_i in R^d are split into K equal, contiguous head chunks x = [x^1 ... x^K]; tau is the
logit scale, gamma the weight-norm offset and d_hat^k the unit head direction of head k
(Assumption 1). Nothing here imports Detectron2, dispatches to kernels or holds state.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .checks import check_has_tde, check_kind, check_real

__all__ = [
    "split_heads", "head_norms", "unit_heads", "denominators", "normalize_features",
    "normalize_weights", "classifier_logits", "tde_bias", "classifier_logits_and_tde_bias",
    "tde_logits", "background_exempted_probs", "row_sums", "moving_sum_update_",
    "moving_average_update_",
]


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


def denominators(kind: str, gamma: float, eps: float) -> Tuple[Tuple[float, float],
                                                                Tuple[float, float]]:
    """The per-head normalisers of a normalised ``kind`` (supplement eq. 1) as ``(add, lo)``
    pairs, D(n) = max(n + add, lo) of n = ||t^k||: ((add, lo) of N_x, (add, lo) of N_w).

    N_x: ||x^k|| + eps for cosine and deconfound (eps as the official detection code), the
    squash ||x^k|| + 1 for capsule. N_w: ||w_i^k|| + gamma for deconfound (eq. 7), ||w_i^k||
    for cosine and capsule, both at least eps so that a zero weight row gives zero, not NaN.
    """
    features = (1.0 if check_kind(kind) == "capsule" else eps, 0.0)  # n >= 0: lo 0 is no clamp
    weights = (gamma if kind == "deconfound" else 0.0, eps)
    return features, weights


def _normalize_heads(t: Tensor, num_heads: int, add: float, lo: float) -> Tensor:
    """t^k / D(||t^k||) per head chunk, D(n) = max(n + add, lo) (see :func:`denominators`)."""
    h = split_heads(t, num_heads)
    d = torch.linalg.vector_norm(h, dim=-1, keepdim=True)
    if add:
        d = d + add
    if lo > 0:
        d = d.clamp_min(lo)
    return (h / d).reshape(t.shape)


def normalize_features(x: Tensor, kind: str, num_heads: int, eps: float) -> Tensor:
    """phi(x) of supplement eq. 1, per head: x^k / N_x(x^k); linear: x itself.

    cosine and deconfound: x^k / (||x^k|| + eps); capsule: the squashed
    x^k * ||x^k|| / (1 + ||x^k||) / ||x^k|| = x^k / (1 + ||x^k||).
    """
    if check_kind(kind) == "linear":
        return x
    return _normalize_heads(x, num_heads, *denominators(kind, 0.0, eps)[0])


def normalize_weights(w: Tensor, kind: str, num_heads: int, gamma: float, eps: float) -> Tensor:
    """w_hat_i^k of supplement eq. 1, per head: w_i^k / N_w(w_i^k); linear: w itself.

    deconfound: w_i^k / (||w_i^k|| + gamma) (eq. 7); cosine and capsule: w_i^k / ||w_i^k||.
    The denominator is at least eps, so a zero row gives zero, not NaN.
    """
    if check_kind(kind) == "linear":
        return w
    return _normalize_heads(w, num_heads, *denominators(kind, gamma, eps)[1])


def _eq7(fx: Tensor, fw: Tensor, num_heads: int, tau: float) -> Tensor:
    """z = (tau/K) * phi(x) w_hat^T from the normalised features [N, d] and weights [C, d]."""
    return (tau / num_heads) * (fx @ fw.t())


def _bias(fx: Tensor, fw: Tensor, head_direction: Tensor, num_heads: int, tau: float) -> Tensor:
    """B of eq. 8 from phi(x) [N, d] and w_hat [C, d] (see :func:`tde_bias`)."""
    d_hat = split_heads(unit_heads(head_direction.to(fx.dtype), num_heads), num_heads)  # [K, h]
    # B = (tau/K) * sum_k (phi(x^k)^T d_hat^k) (w_hat_i^k^T d_hat^k): an [N, K] x [K, C] product
    # instead of projecting every feature and multiplying by the [C, d] weights again.
    return (tau / num_heads) * ((split_heads(fx, num_heads) * d_hat).sum(-1)
                                @ (split_heads(fw, num_heads) * d_hat).sum(-1).t())


def classifier_logits(x: Tensor, w: Tensor, kind: str, num_heads: int, tau: float,
                      gamma: float, eps: float) -> Tensor:
    """Eq. 7 and its ablations: z_i = (tau/K) * sum_k (w_i^k)^T x^k / N(x^k, w_i^k).

    deconfound (eq. 7): N = (||w_i^k|| + gamma) * ||x^k||; cosine: N = ||w_i^k|| * ||x^k||;
    capsule: N = ||w_i^k|| * (||x^k|| + 1); linear: plain x^T w_i (no bias, no tau, no heads).
    ``x``: [N, d], ``w``: [C, d] -> [N, C]. Gradients by autograd.
    """
    if check_kind(kind) == "linear":
        return x @ w.t()
    return _eq7(normalize_features(x, kind, num_heads, eps),
                normalize_weights(w, kind, num_heads, gamma, eps), num_heads, tau)


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
    return _bias(normalize_features(x, kind, num_heads, eps),
                 normalize_weights(w, kind, num_heads, gamma, eps), head_direction, num_heads, tau)


def classifier_logits_and_tde_bias(x: Tensor, w: Tensor, head_direction: Tensor, kind: str,
                                   num_heads: int, tau: float, gamma: float,
                                   eps: float) -> Tuple[Tensor, Tensor]:
    """(z, B): eq. 7 logits and the alpha-free term of eq. 8, sharing phi(x) and w_hat.

    The same numbers, bit for bit, as :func:`classifier_logits` and :func:`tde_bias`;
    TDE(z) = z - alpha * B.
    """
    check_has_tde(kind)
    fx = normalize_features(x, kind, num_heads, eps)
    fw = normalize_weights(w, kind, num_heads, gamma, eps)
    return _eq7(fx, fw, num_heads, tau), _bias(fx, fw, head_direction, num_heads, tau)


def tde_logits(total: Tensor, bias: Tensor, alpha: float) -> Tensor:
    """Eq. 8, the Total Direct Effect logits, TDE(z) = z - alpha * B, from eq. 7's logits z and
    :func:`tde_bias` B. For the deconfound classifier:

        TDE(z_i) = (tau/K) * sum_k [ (w_i^k)^T x^k / ((||w_i^k|| + gamma) ||x^k||)
                      - alpha * cos(x^k, d_hat^k) (w_i^k)^T d_hat^k / (||w_i^k|| + gamma) ]

    alpha = 0 gives eq. 7.
    """
    return total - check_real("alpha (eq. 8)", alpha, 0.0, low_inclusive=True) * bias


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


def row_sums(rows: Tensor, keep: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """(float64 column sums [d] of the kept rows of ``rows`` [N, d], their count [1] float64).

    ``keep``: optional bool mask [N]; rows not kept are left out by ``where``, not multiplied
    by 0, so a non-finite row that is not kept is ignored. No host sync.
    """
    if keep is None:
        total = rows.sum(dim=0, dtype=torch.float64)
        return total, torch.full((1,), rows.shape[0], dtype=torch.float64, device=rows.device)
    total = torch.where(keep[:, None], rows, 0.0).sum(dim=0, dtype=torch.float64)
    return total, keep.sum(dim=0, keepdim=True, dtype=torch.float64)


def moving_sum_update_(ema: Tensor, total: Tensor, count: Tensor, mu: float) -> Tensor:
    """Assumption 1 in place: x_bar <- mu * x_bar + total / count (a decayed sum of batch means,
    no (1 - mu) factor: only its per-head direction is used). ``count`` 0 (no kept row) leaves
    x_bar unchanged (x_bar * 1 + 0 / 1: only a -0.0 turns +0.0). The division is in float64."""
    return ema.mul_(torch.where(count > 0, mu, 1.0)).addcdiv_(total, count.clamp_min(1.0))


def moving_average_update_(ema: Tensor, total: Tensor, count: Tensor, mu: float) -> Tensor:
    """The (1 - mu) form of Assumption 1 in place: x_bar <- mu * x_bar + (1 - mu) * total / count,
    a true exponential moving average of batch means. With a constant mu (and x_bar = 0 at
    first) it is (1 - mu) times :func:`moving_sum_update_`'s x_bar, so every head direction is
    the same; they differ when mu changes during training (``MU_SCHEDULE`` "lr"). ``count`` 0
    leaves x_bar unchanged."""
    moved = count > 0
    ema.mul_(torch.where(moved, mu, 1.0))
    return ema.add_(torch.where(moved, (1.0 - mu) * total / count.clamp_min(1.0), 0.0)
                    .to(ema.dtype))
