"""Triton kernels for the training step of the TDE heads: fewer, larger kernels on CUDA.

A GPU training step of the ROI heads is bound by the host (the launches and the Python around
them), and eager PyTorch runs eq. 7 and the update of Assumption 1 as many small operators. Here
the classifier takes two Triton kernels and three matrix products, and the update one kernel:

- :class:`FusedNormalizedLogits` -- eq. 7 with one normalising kernel for both sides (per head
  chunk t^k of each row, out = scale * t^k / D(||t^k||) with D(n) = max(n + add, lo), and
  ||t^k||) and one matrix product; backward: two matrix products and one kernel for both
  sides, dL/dt^k = scale g / D - f (f^T scale g) D'(||t^k||) / ||t^k|| with f = t^k / D and
  D' = 1 where ||t^k|| > 0 and ||t^k|| + add >= lo, else 0 (autograd's rules for the norm at 0
  and for ``clamp_min``);
- :func:`update_head_direction` -- Assumption 1's x_bar <- mu * x_bar + mean of the foreground
  rows (0 <= label < num_classes), the mask included, in one kernel; when synchronising, one for
  the float64 column sums and the count, then the all-reduce, then one for the update.

Same formulas as :mod:`tde_det.layers.tde_math`; sums run in another order, so float32 results
can differ from the eager ones in the last bits. Float32 tensors only. Runs on CUDA, or on the
CPU under Triton's interpreter (``TRITON_INTERPRET=1``, set before this module is imported),
which the tests use; :func:`tde_det.layers.fused.kernels_for` says which applies.
No Detectron2 imports.
"""
from typing import Callable, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["FusedNormalizedLogits", "apply_head_direction_sums", "foreground_sums",
           "self_check", "update_head_direction"]

# foreground sums: tiles of BLOCK_R rows x BLOCK_D columns; the update: BLOCK columns a program
_SUM_BLOCK_R, _SUM_BLOCK_D, _UPDATE_BLOCK = 64, 32, 256


@triton.jit
def _head_chunk(row, head_dim, BLOCK: tl.constexpr):
    """Head chunk k = program_id(1) of ``row`` in contiguous [rows, K * head_dim] data: the
    offsets of its entries, their mask, and the index of its norm in [rows, K]."""
    k = tl.program_id(1)
    heads = tl.num_programs(1)
    offs = tl.arange(0, BLOCK)
    return row * (heads * head_dim) + k * head_dim + offs, offs < head_dim, row * heads + k


@triton.jit
def _side(row, rows_a, add_a, lo_a, scale_a, add_b, lo_b, scale_b):
    """Rows [0, rows_a) are side a (the features), the rest side b (the class weights): the
    side's denominator D(n) = max(n + add, lo) and scale."""
    is_a = row < rows_a
    return (is_a, tl.where(is_a, add_a, add_b), tl.where(is_a, lo_a, lo_b),
            tl.where(is_a, scale_a, scale_b))


@triton.jit
def _foreground_totals(x_ptr, labels_ptr, rows, dim, num_classes, cols, col_in,
                       BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """float64 sums over the rows with 0 <= label < num_classes of columns ``cols``, and their
    count."""
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
    return total, tl.sum(count, axis=0)


@triton.jit
def _apply_totals(ema_ptr, cols, inside, total, count, mu):
    ema = tl.load(ema_ptr + cols, mask=inside, other=0.0)
    # as the eager update: x_bar * mu in float32 (mu a float32 scalar there too), then
    # + total / count in float64, rounded to float32
    scaled = ema * tl.where(count > 0, mu, 1.0)
    updated = scaled.to(tl.float64) + total / tl.maximum(count, 1.0)
    tl.store(ema_ptr + cols, updated.to(tl.float32), mask=inside)


@triton.jit
def _normalize_heads_kernel(a_ptr, b_ptr, out_ptr, norm_ptr, rows_a, rows_b, head_dim, add_a,
                            lo_a, scale_a, add_b, lo_b, scale_b, labels_ptr, ema_ptr, num_classes,
                            mu, BLOCK: tl.constexpr, UPDATE: tl.constexpr,
                            BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    row = tl.program_id(0)
    if row < rows_a + rows_b:
        is_a, add, lo, scale = _side(row, rows_a, add_a, lo_a, scale_a, add_b, lo_b, scale_b)
        at, inside, chunk = _head_chunk(row, head_dim, BLOCK)
        in_b, _, _ = _head_chunk(row - rows_a, head_dim, BLOCK)
        # one of the two loads reads (branch-free: the other is masked off entirely)
        v = tl.load(a_ptr + at, mask=inside & is_a, other=0.0) \
            + tl.load(b_ptr + in_b, mask=inside & (row >= rows_a), other=0.0)
        n = tl.sqrt(tl.sum(v * v, axis=0))
        d = tl.maximum(n + add, lo)
        tl.store(out_ptr + at, scale * (v / d), mask=inside)
        tl.store(norm_ptr + chunk, n)
    elif UPDATE:
        # the programs after the rows: Assumption 1's update of x_bar from side a's foreground
        # rows, one block of BLOCK_D columns each (as _foreground_update_kernel)
        if tl.program_id(1) == 0:
            dim = tl.num_programs(1) * head_dim
            cols = (row - rows_a - rows_b) * BLOCK_D + tl.arange(0, BLOCK_D)
            col_in = cols < dim
            total, count = _foreground_totals(a_ptr, labels_ptr, rows_a, dim, num_classes, cols,
                                              col_in, BLOCK_R, BLOCK_D)
            _apply_totals(ema_ptr, cols, col_in, total, count, mu)


@triton.jit
def _normalize_heads_backward_kernel(g_ptr, out_ptr, norm_ptr, grad_ptr, first_row, rows_a,
                                     head_dim, add_a, lo_a, scale_a, add_b, lo_b, scale_b,
                                     BLOCK: tl.constexpr):
    row = first_row + tl.program_id(0)
    _, add, lo, scale = _side(row, rows_a, add_a, lo_a, scale_a, add_b, lo_b, scale_b)
    at, inside, chunk = _head_chunk(row, head_dim, BLOCK)
    g = tl.load(g_ptr + at, mask=inside, other=0.0)
    o = tl.load(out_ptr + at, mask=inside, other=0.0)
    n = tl.load(norm_ptr + chunk)
    d = tl.maximum(n + add, lo)
    c = tl.sum(o * g, axis=0)
    # D follows ||t|| where n + add >= lo (clamp_min's gradient rule) and ||t|| > 0
    active = (n > 0) & (n + add >= lo)
    coef = tl.where(active, c / (scale * tl.where(n > 0, n, 1.0)), 0.0)
    # every entry read above before any is written: grad_ptr may be g_ptr (in place)
    tl.store(grad_ptr + at, g * (scale / d) - o * coef, mask=inside)


def _rows(t: Tensor, num_heads: int) -> Tuple[Tensor, int, int]:
    if t.dim() != 2 or t.shape[1] % num_heads:
        raise ValueError(f"expected [rows, K * head_dim] with K = {num_heads}, got "
                         f"{tuple(t.shape)}")
    return t.contiguous(), t.shape[0], t.shape[1] // num_heads


def _pair(a_den: Tuple[float, float], a_scale: float, b_den: Tuple[float, float],
          b_scale: float) -> Tuple[float, ...]:
    return (float(a_den[0]), float(a_den[1]), float(a_scale), float(b_den[0]), float(b_den[1]),
            float(b_scale))


class FusedNormalizedLogits(torch.autograd.Function):
    """z = (fx) (scale * fw)^T with fx = x^k / D_x, fw = w_i^k / D_w per head (eq. 7 and its
    ablations; D(n) = max(n + add, lo) per side). Forward: one kernel normalises both sides
    (into one buffer, features' rows first), then one matrix product. Backward: two matrix
    products (into one buffer) and one kernel for both sides, in place.

    ``update``: optional ``(ema, labels, num_classes, mu)``: the same kernel launch then also
    updates the head direction ``ema`` from the foreground rows of x (Assumption 1, as
    :func:`update_head_direction` without an all-reduce), with no launch of its own.
    """

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, num_heads: int, scale: float,
                x_denominator: Tuple[float, float], w_denominator: Tuple[float, float],
                update: Optional[Tuple[Tensor, Tensor, int, float]] = None) -> Tensor:
        x, rows, head_dim = _rows(x, num_heads)
        w, classes, _ = _rows(w, num_heads)
        if w.shape[1] != x.shape[1]:
            raise ValueError(f"features {tuple(x.shape)} and weights {tuple(w.shape)} differ "
                             "in width")
        sides = _pair(x_denominator, 1.0, w_denominator, scale)
        f = torch.empty((rows + classes, x.shape[1]), dtype=x.dtype, device=x.device)
        norms = torch.empty((rows + classes, num_heads), dtype=x.dtype, device=x.device)
        if update is None:
            programs, labels, ema, num_classes, mu = rows + classes, x, x, 0, 0.0
        else:
            ema, labels, num_classes, mu = update
            labels = labels.contiguous()
            programs = rows + classes + triton.cdiv(x.shape[1], _SUM_BLOCK_D)
        if programs:
            _normalize_heads_kernel[(programs, num_heads)](
                x, w, f, norms, rows, classes, head_dim, *sides, labels, ema, int(num_classes),
                float(mu), BLOCK=triton.next_power_of_2(head_dim), UPDATE=update is not None,
                BLOCK_R=_SUM_BLOCK_R, BLOCK_D=_SUM_BLOCK_D)
        ctx.save_for_backward(f, norms)
        ctx.rows, ctx.head_dim, ctx.sides = rows, head_dim, sides
        return f[:rows] @ f[rows:].t()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        f, norms = ctx.saved_tensors
        rows = ctx.rows
        need_x, need_w = ctx.needs_input_grad[:2]
        grad = grad.contiguous()
        g = torch.empty_like(f)  # dL/d(fx) then dL/d(fws), made dL/dx and dL/dw in place
        gx, gw = g[:rows], g[rows:]
        if need_x:
            torch.mm(grad, f[rows:], out=gx)
        if need_w:
            torch.mm(grad.t(), f[:rows], out=gw)
        first, end = (0 if need_x else rows), (f.shape[0] if need_w else rows)
        if end > first:
            _normalize_heads_backward_kernel[(end - first, norms.shape[1])](
                g, f, norms, g, first, rows, ctx.head_dim, *ctx.sides,
                BLOCK=triton.next_power_of_2(ctx.head_dim))
        return (gx if need_x else None), (gw if need_w else None), None, None, None, None, None


@triton.jit
def _foreground_sums_kernel(x_ptr, labels_ptr, sums_ptr, rows, dim, num_classes,
                            BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    cols = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    col_in = cols < dim
    total, count = _foreground_totals(x_ptr, labels_ptr, rows, dim, num_classes, cols, col_in,
                                      BLOCK_R, BLOCK_D)
    tl.store(sums_ptr + cols, total, mask=col_in)
    if tl.program_id(0) == 0:
        tl.store(sums_ptr + dim, count)


@triton.jit
def _head_direction_update_kernel(ema_ptr, sums_ptr, dim, mu, BLOCK: tl.constexpr):
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = cols < dim
    total = tl.load(sums_ptr + cols, mask=inside, other=0.0)
    _apply_totals(ema_ptr, cols, inside, total, tl.load(sums_ptr + dim), mu)


@triton.jit
def _foreground_update_kernel(x_ptr, labels_ptr, ema_ptr, rows, dim, num_classes, mu,
                              BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    # each program counts the kept rows itself (it reads all labels anyway): no second kernel
    cols = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    col_in = cols < dim
    total, count = _foreground_totals(x_ptr, labels_ptr, rows, dim, num_classes, cols, col_in,
                                      BLOCK_R, BLOCK_D)
    _apply_totals(ema_ptr, cols, col_in, total, count, mu)


def foreground_sums(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """One kernel: [dim + 1] float64, the column sums of the rows with 0 <= label < num_classes
    and, last, their count."""
    features = features.contiguous()
    rows, dim = features.shape
    sums = torch.empty(dim + 1, dtype=torch.float64, device=features.device)
    _foreground_sums_kernel[(triton.cdiv(dim, _SUM_BLOCK_D),)](
        features, labels.contiguous(), sums, rows, dim, int(num_classes), BLOCK_R=_SUM_BLOCK_R,
        BLOCK_D=_SUM_BLOCK_D)
    return sums


def apply_head_direction_sums(ema: Tensor, sums: Tensor, mu: float) -> None:
    """One kernel, in place: ``ema <- ema * mu + sums[:-1] / sums[-1]``; unchanged (but for the
    sign of a zero) when the count ``sums[-1]`` is 0."""
    dim = ema.shape[0]
    _head_direction_update_kernel[(triton.cdiv(dim, _UPDATE_BLOCK),)](
        ema, sums, dim, float(mu), BLOCK=_UPDATE_BLOCK)


def update_head_direction(ema: Tensor, features: Tensor, labels: Tensor, num_classes: int,
                          mu: float, all_reduce: Optional[Callable[[Tensor], None]] = None) -> None:
    """Assumption 1 on the foreground rows, in place: one kernel, or with ``all_reduce`` (which
    pools the ranks' sums and counts) :func:`foreground_sums`, ``all_reduce(sums)`` and
    :func:`apply_head_direction_sums`."""
    if all_reduce is not None:
        sums = foreground_sums(features, labels, num_classes)
        all_reduce(sums)
        apply_head_direction_sums(ema, sums, mu)
        return
    features = features.contiguous()
    rows, dim = features.shape
    _foreground_update_kernel[(triton.cdiv(dim, _SUM_BLOCK_D),)](
        features, labels.contiguous(), ema, rows, dim, int(num_classes), float(mu),
        BLOCK_R=_SUM_BLOCK_R, BLOCK_D=_SUM_BLOCK_D)


def self_check(device: torch.device) -> None:
    """Compiles and runs every kernel of a training step on ``device`` (tiny inputs); raises if
    one fails or gives a non-finite value. :func:`tde_det.layers.fused.kernels_for` runs it once
    per device before routing anything to the kernels."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 8, generator=g).to(device).requires_grad_()
    w = torch.randn(5, 8, generator=g).to(device).requires_grad_()
    labels = torch.tensor([0, 4, 2], device=device)
    ema = torch.zeros(8, device=device)
    with torch.enable_grad():
        z = FusedNormalizedLogits.apply(x, w, 2, 8.0, (1e-9, 0.0), (1 / 32, 1e-9),
                                        (ema, labels, 4, 0.9))
        z.sum().backward()
    update_head_direction(ema, x.detach(), labels, 4, 0.9)
    sums = foreground_sums(x.detach(), labels, 4)
    apply_head_direction_sums(ema, sums, 0.9)
    out = torch.cat([z.detach().flatten(), x.grad.flatten(), w.grad.flatten(), sums.float(), ema])
    if not bool(torch.isfinite(out).all()) or not bool(ema.ne(0).any()):
        raise RuntimeError("the kernels gave non-finite or no values on a test input")
