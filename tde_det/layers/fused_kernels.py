"""Triton kernels for the training step of the TDE heads: fewer, larger kernels on CUDA.

On a GPU the ROI heads' training step is bound by kernel launches. In eager PyTorch the
classifier of eq. 7 runs 24 operators forward and backward (a linear layer: 5) and the update of
Assumption 1 another 11 (the foreground mask included): about 30 launches per cascade stage more
than the stock heads. With these kernels (``MODEL.TDE.FUSED_KERNELS``) the classifier takes 7
and the update 2, about 4 more than the stock heads:

- :func:`normalize_heads` -- one kernel per side of eq. 7: per head chunk t^k of each row,
  out = scale * t^k / D(||t^k||) with D(n) = max(n + add, lo), and ||t^k||;
- :func:`normalize_heads_backward` -- one kernel per side for the gradient through it;
- :func:`update_head_direction` -- Assumption 1's x_bar <- mu * x_bar + mean of the foreground
  rows (0 <= label < num_classes), the mask included: one kernel for the float64 column sums and
  the count, one for the update (with an all-reduce between them when synchronising).

Same formulas as :mod:`tde_det.layers.tde_math`; sums run in another order, so float32 results
can differ from the eager ones in the last bits. Float32 tensors only. Runs on CUDA, or on the
CPU under Triton's interpreter (``TRITON_INTERPRET=1``, set before this module is imported),
which the tests use; :func:`tde_det.layers.tde_math.fused_kernels_for` says which applies.
No Detectron2 imports.
"""
from typing import Callable, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["FusedNormalizedLogits", "apply_head_direction_sums", "foreground_sums",
           "normalize_heads", "normalize_heads_backward", "update_head_direction"]


@triton.jit
def _head_chunk(head_dim, BLOCK: tl.constexpr):
    """Program (row, k) of a (rows, K) grid over contiguous [rows, K * head_dim] data: the
    offsets of its head chunk, their mask, and the index of the chunk's norm in [rows, K]."""
    row = tl.program_id(0)
    k = tl.program_id(1)
    heads = tl.num_programs(1)
    offs = tl.arange(0, BLOCK)
    return row * (heads * head_dim) + k * head_dim + offs, offs < head_dim, row * heads + k


@triton.jit
def _normalize_heads_kernel(t_ptr, out_ptr, norm_ptr, head_dim, add, lo, scale,
                            BLOCK: tl.constexpr):
    at, inside, chunk = _head_chunk(head_dim, BLOCK)
    v = tl.load(t_ptr + at, mask=inside, other=0.0)
    n = tl.sqrt(tl.sum(v * v, axis=0))
    d = tl.maximum(n + add, lo)
    tl.store(out_ptr + at, scale * (v / d), mask=inside)
    tl.store(norm_ptr + chunk, n)


@triton.jit
def _normalize_heads_backward_kernel(g_ptr, out_ptr, norm_ptr, grad_ptr, head_dim, add, lo,
                                     scale, BLOCK: tl.constexpr):
    at, inside, chunk = _head_chunk(head_dim, BLOCK)
    g = tl.load(g_ptr + at, mask=inside, other=0.0)
    o = tl.load(out_ptr + at, mask=inside, other=0.0)
    n = tl.load(norm_ptr + chunk)
    d = tl.maximum(n + add, lo)
    c = tl.sum(o * g, axis=0)
    # D follows ||t|| where n + add >= lo (clamp_min's gradient rule) and ||t|| > 0
    active = (n > 0) & (n + add >= lo)
    coef = tl.where(active, c / (scale * tl.where(n > 0, n, 1.0)), 0.0)
    tl.store(grad_ptr + at, g * (scale / d) - o * coef, mask=inside)


def _rows(t: Tensor, num_heads: int) -> Tuple[Tensor, int, int]:
    if t.dim() != 2 or t.shape[1] % num_heads:
        raise ValueError(f"expected [rows, K * head_dim] with K = {num_heads}, got "
                         f"{tuple(t.shape)}")
    return t.contiguous(), t.shape[0], t.shape[1] // num_heads


def normalize_heads(t: Tensor, num_heads: int, add: float, lo: float,
                    scale: float = 1.0) -> Tuple[Tensor, Tensor]:
    """Supplement eq. 1 per head chunk, one kernel: ``(scale * t^k / max(||t^k|| + add, lo),
    ||t^k||)`` for [R, K*h] ``t``; returns ([R, K*h], [R, K])."""
    t, rows, head_dim = _rows(t, num_heads)
    out = torch.empty_like(t)
    norms = torch.empty((rows, num_heads), dtype=t.dtype, device=t.device)
    if rows:
        _normalize_heads_kernel[(rows, num_heads)](t, out, norms, head_dim, float(add),
                                                   float(lo), float(scale),
                                                   BLOCK=triton.next_power_of_2(head_dim))
    return out, norms


def normalize_heads_backward(grad_out: Tensor, out: Tensor, norms: Tensor, num_heads: int,
                             add: float, lo: float, scale: float = 1.0) -> Tensor:
    """dL/dt from dL/d(out) for ``out`` of :func:`normalize_heads`, one kernel. With
    f = t^k / D (= out / scale):

        dL/dt^k = scale * g / D - f (f^T (scale g)) D'(||t^k||) / ||t^k||

    where D' = 1 if ||t^k|| > 0 and ||t^k|| + add >= lo, else 0 (autograd's rules for the
    norm at 0 and for ``clamp_min``)."""
    grad_out, rows, head_dim = _rows(grad_out, num_heads)
    grad = torch.empty_like(grad_out)
    if rows:
        _normalize_heads_backward_kernel[(rows, num_heads)](
            grad_out, out, norms, grad, head_dim, float(add), float(lo), float(scale),
            BLOCK=triton.next_power_of_2(head_dim))
    return grad


class FusedNormalizedLogits(torch.autograd.Function):
    """z = (fx) (scale * fw)^T with fx = x^k / D_x, fw = w_i^k / D_w per head (eq. 7 and its
    ablations; D(n) = max(n + add, lo) per side): two normalising kernels and one matrix
    product forward, two matrix products and two kernels backward."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, num_heads: int, scale: float,
                x_denominator: Tuple[float, float], w_denominator: Tuple[float, float]) -> Tensor:
        fx, nx = normalize_heads(x, num_heads, *x_denominator)
        fws, nw = normalize_heads(w, num_heads, *w_denominator, scale=scale)
        ctx.save_for_backward(fx, nx, fws, nw)
        ctx.num_heads, ctx.scale = num_heads, scale
        ctx.x_denominator, ctx.w_denominator = x_denominator, w_denominator
        return fx @ fws.t()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        fx, nx, fws, nw = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = normalize_heads_backward(grad @ fws, fx, nx, ctx.num_heads,
                                              *ctx.x_denominator)
        if ctx.needs_input_grad[1]:
            grad_w = normalize_heads_backward(grad.t() @ fx, fws, nw, ctx.num_heads,
                                              *ctx.w_denominator, scale=ctx.scale)
        return grad_x, grad_w, None, None, None, None


@triton.jit
def _foreground_sums_kernel(x_ptr, labels_ptr, sums_ptr, rows, dim, num_classes,
                            BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    cols = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    col_in = cols < dim
    total = tl.zeros([BLOCK_D], dtype=tl.float64)
    count = tl.zeros([BLOCK_R], dtype=tl.float64)
    for start in range(0, rows, BLOCK_R):
        r = start + tl.arange(0, BLOCK_R)
        labels = tl.load(labels_ptr + r, mask=r < rows, other=-1)
        keep = (labels >= 0) & (labels < num_classes)
        # rows not kept are not even read: a non-finite background row is ignored
        tile = tl.load(x_ptr + r[:, None] * dim + cols[None, :],
                       mask=keep[:, None] & col_in[None, :], other=0.0)
        total += tl.sum(tile.to(tl.float64), axis=0)
        count += keep.to(tl.float64)
    tl.store(sums_ptr + cols, total, mask=col_in)
    if tl.program_id(0) == 0:
        tl.store(sums_ptr + dim, tl.sum(count, axis=0))


@triton.jit
def _head_direction_update_kernel(ema_ptr, sums_ptr, dim, mu, BLOCK: tl.constexpr):
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = cols < dim
    count = tl.load(sums_ptr + dim)
    ema = tl.load(ema_ptr + cols, mask=inside, other=0.0)
    # as the eager update: x_bar * mu in float32 (mu a float32 scalar there too), then
    # + total / count in float64, rounded to float32
    scaled = ema * tl.where(count > 0, mu, 1.0)
    total = tl.load(sums_ptr + cols, mask=inside, other=0.0)
    updated = scaled.to(tl.float64) + total / tl.maximum(count, 1.0)
    tl.store(ema_ptr + cols, updated.to(tl.float32), mask=inside)


_SUM_BLOCK_R, _SUM_BLOCK_D, _UPDATE_BLOCK = 64, 32, 256


def foreground_sums(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """One kernel: [dim + 1] float64, the column sums of the rows with 0 <= label < num_classes
    and, last, their count."""
    features = features.contiguous()
    rows, dim = features.shape
    sums = torch.empty(dim + 1, dtype=torch.float64, device=features.device)
    grid = (triton.cdiv(dim, _SUM_BLOCK_D),)
    _foreground_sums_kernel[grid](features, labels.contiguous(), sums, rows, dim,
                                  int(num_classes), BLOCK_R=_SUM_BLOCK_R, BLOCK_D=_SUM_BLOCK_D)
    return sums


def apply_head_direction_sums(ema: Tensor, sums: Tensor, mu: float) -> None:
    """One kernel, in place: ``ema <- ema * mu + sums[:-1] / sums[-1]``; unchanged (but for the
    sign of a zero) when the count ``sums[-1]`` is 0."""
    dim = ema.shape[0]
    _head_direction_update_kernel[(triton.cdiv(dim, _UPDATE_BLOCK),)](
        ema, sums, dim, float(mu), BLOCK=_UPDATE_BLOCK)


def update_head_direction(ema: Tensor, features: Tensor, labels: Tensor, num_classes: int,
                          mu: float, all_reduce: Optional[Callable[[Tensor], None]] = None) -> None:
    """Assumption 1 on the foreground rows, in two kernels (``all_reduce(sums)`` between them
    pools the ranks' sums and counts)."""
    sums = foreground_sums(features, labels, num_classes)
    if all_reduce is not None:
        all_reduce(sums)
    apply_head_direction_sums(ema, sums, mu)
