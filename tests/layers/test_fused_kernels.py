"""The Triton kernels of MODEL.TDE.FUSED_KERNELS against the eager maths.

With CUDA they are compiled and run on the GPU. Without, this file runs only under Triton's CPU
interpreter, which must be switched on before Triton is first imported:
``test_fused_kernels_interpreted.py`` runs it in a fresh process with ``TRITON_INTERPRET=1``,
so CI checks the kernels' arithmetic.
"""
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from torch.func import functional_call

from tde_det import add_tde_config
from tde_det.layers import HeadDirection, NormalizedClassifier
from tde_det.layers import tde_math as tm
from tde_det.layers.fused import kernels_for
from tde_det.modeling.roi_heads import TDEFastRCNNOutputLayers

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("the Triton kernels need CUDA or TRITON_INTERPRET=1 from the process start "
                "(test_fused_kernels_interpreted.py runs this file so)", allow_module_level=True)
pytest.importorskip("triton")
from tde_det.layers.fused import kernels as fused_kernels  # noqa: E402  (after the check)

KINDS = ["deconfound", "cosine", "capsule"]


@pytest.fixture
def route():
    # the kernels' first try on the device (self_check) done before a test spies on them
    assert kernels_for(torch.zeros(1, device=DEVICE)) is fused_kernels
    return fused_kernels


def logits(x, w, kind, k, tau, gamma, eps, fused=False, update=None):
    """Eq. 7 of a NormalizedClassifier with weight ``w`` (gradients reach ``w``)."""
    clf = NormalizedClassifier(w.shape[1], w.shape[0], kind, k, tau, gamma, eps, fused=fused)
    return functional_call(clf, {"weight": w}, (x,), {"update": update})


def _inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(37, 64, generator=g)
    w = torch.randn(11, 64, generator=g) * 0.1
    x[3] = 0  # a zero feature: D = eps
    x[5, 32:] = 1e-30  # a head chunk whose squares underflow
    w[2, :32] = 0  # a zero weight head chunk: D = eps (or gamma), no gradient through the norm
    w[4, 32:] = 1e-12  # norm below eps for cosine / capsule: clamped
    return x, w


def _err(a, ref):
    """Largest error of a row relative to that row's largest entry (a zero feature's gradient,
    g / eps, is ~1e9: relative to the whole tensor, other rows' errors would not show)."""
    diff = (a.double().cpu() - ref).abs().amax(1)
    return (diff / ref.abs().amax(1).clamp_min(1e-30)).max().item()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("gamma", [1 / 32, 0.0])
def test_logits_and_gradients_as_accurate_as_the_eager_maths(route, kind, gamma):
    x, w = _inputs()
    eps, tau, k = 1e-9, 16.0, 2
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    ref = tm.classifier_logits(x64, w64, kind, k, tau, gamma, eps)
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref_x, ref_w = torch.autograd.grad(ref, (x64, w64), grad)
    results = {}
    for fused in (False, True):
        xf = x.to(DEVICE).requires_grad_()
        wf = w.to(DEVICE).requires_grad_()
        z = logits(xf, wf, kind, k, tau, gamma, eps, fused=fused)
        assert ("Fused" in type(z.grad_fn).__name__) == fused
        gx, gw = torch.autograd.grad(z, (xf, wf), grad.float().to(DEVICE))
        results[fused] = [_err(z, ref.detach()), _err(gx, ref_x), _err(gw, ref_w)]
    eager, fused = results[False], results[True]
    for e, f in zip(eager, fused):  # float32 rounding of another summation order, no more
        assert f <= max(4 * e, 1e-6), (results, kind, gamma)


def test_dispatch_only_where_the_kernels_apply(route):
    x, w = _inputs()
    x, w = x.to(DEVICE).requires_grad_(), w.to(DEVICE).requires_grad_()
    args = ("deconfound", 2, 16.0, 1 / 32, 1e-9)
    assert "Fused" not in type(logits(x, w, *args).grad_fn).__name__  # not fused: eager maths
    with torch.no_grad():  # inference: the eager maths
        assert logits(x, w, *args, fused=True).grad_fn is None
    xd, wd = x.double(), w.double()  # float64: the eager maths
    z = logits(xd, wd, *args, fused=True)
    assert z.dtype == torch.float64 and "Fused" not in type(z.grad_fn).__name__


def test_no_routing_to_the_kernels_on_the_cpu_without_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert kernels_for(torch.zeros(2)) is None


def _rows_and_labels(n=200, dim=64, num_classes=11):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, dim, generator=g) * 3
    labels = torch.randint(0, num_classes + 1, (n,), generator=g)  # num_classes: background
    labels[:3] = -1  # ignored proposals
    x[labels == num_classes] = float("inf")  # a non-finite row that is not kept is ignored
    x[0] = float("nan")
    return x, labels


@pytest.mark.parametrize("mu", [0.9, 0.9998, 0.0, 1.0])
def test_head_direction_update_as_the_eager_one(route, mu):
    x, labels = _rows_and_labels()
    eager = HeadDirection(64, 2, mu=mu, sync=False)
    eager.ema.normal_(generator=torch.Generator().manual_seed(3))
    fused = HeadDirection(64, 2, mu=mu, sync=False, fused=True).to(DEVICE)
    fused.ema.copy_(eager.ema)
    assert kernels_for(x.to(DEVICE), fused.ema) is route  # the kernels take them
    for _ in range(3):
        eager.update_from_labels(x, labels, 11)
        fused.update_from_labels(x.to(DEVICE), labels.to(DEVICE), 11)
    assert torch.isfinite(fused.ema).all()
    torch.testing.assert_close(fused.ema.cpu(), eager.ema, rtol=2e-7, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_head_direction_update_of_amp_features(route, dtype, monkeypatch):
    calls = []
    original = route.update_head_direction
    monkeypatch.setattr(route, "update_head_direction",
                        lambda *a, **k: calls.append(a[1].dtype) or original(*a, **k))
    x, labels = _rows_and_labels()
    x = x.to(dtype)
    eager = HeadDirection(64, 2, mu=0.9, sync=False)
    fused = HeadDirection(64, 2, mu=0.9, sync=False, fused=True).to(DEVICE)
    eager.update_from_labels(x, labels, 11)
    fused.update_from_labels(x.to(DEVICE), labels.to(DEVICE), 11)
    assert calls == [torch.float32]  # the kernels ran, on the features made float32
    assert fused.ema.norm() > 0
    torch.testing.assert_close(fused.ema.cpu(), eager.ema, rtol=2e-7, atol=0)


def test_head_direction_without_foreground_is_unchanged(route):
    x, labels = _rows_and_labels()
    hd = HeadDirection(64, 2, mu=0.5, sync=False, fused=True).to(DEVICE)
    hd.ema.normal_()
    before = hd.ema.clone()
    hd.update_from_labels(x.to(DEVICE), torch.full_like(labels, 11).to(DEVICE), 11)
    assert torch.equal(hd.ema, before)
    empty = torch.zeros(0, 64, device=DEVICE)
    hd.update_from_labels(empty, torch.zeros(0, dtype=torch.long, device=DEVICE), 11)
    assert torch.equal(hd.ema, before)


def test_pooled_sums_give_the_update_of_all_ranks_rows(route):
    """What a synchronised update all-reduces: two ranks' sums and counts, added."""
    x, labels = _rows_and_labels()
    a, b = slice(0, 120), slice(120, None)
    other = route.foreground_sums(x[b].to(DEVICE), labels[b].to(DEVICE), 11)
    ema = torch.ones(64, device=DEVICE)
    route.update_head_direction(ema, x[a].to(DEVICE), labels[a].to(DEVICE), 11, 0.9,
                                all_reduce=lambda sums: sums.add_(other))
    eager = HeadDirection(64, 2, mu=0.9, sync=False)
    eager.ema.fill_(1.0)
    eager.update_from_labels(x, labels, 11)
    torch.testing.assert_close(ema.cpu(), eager.ema, rtol=2e-7, atol=0)


def test_the_config_key_reaches_the_predictor_and_a_training_step_matches(route):
    cfg = get_cfg()
    add_tde_config(cfg)
    assert cfg.MODEL.TDE.FUSED_KERNELS is True  # the default
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 10
    cfg.MODEL.TDE.SYNC_HEAD_DIRECTION = False
    cfg.MODEL.TDE.MU = 0.9
    predictors = {}
    for fused in (False, True):
        cfg.MODEL.TDE.FUSED_KERNELS = fused
        torch.manual_seed(0)
        predictors[fused] = TDEFastRCNNOutputLayers(cfg, ShapeSpec(channels=64)).to(DEVICE)
    p = predictors[True]
    assert p.cls_score.fused and p.head_direction.fused and "fused=True" in repr(p)
    x, labels = _rows_and_labels(num_classes=10)
    x = torch.nan_to_num(x, nan=0.0, posinf=5.0)
    out = {}
    for fused, pred in predictors.items():
        pred.train()
        xf = x.to(DEVICE).requires_grad_()
        scores, _ = pred(xf, labels.to(DEVICE))
        scores.logsumexp(1).sum().backward()
        out[fused] = (scores.detach().cpu(), xf.grad.cpu(), pred.cls_score.weight.grad.cpu(),
                      pred.head_direction.ema.cpu())
    for e, f in zip(out[False], out[True]):  # sums over 200 rows: float32 rounding of each
        torch.testing.assert_close(f, e, rtol=1e-4, atol=1e-5 * e.abs().max().item())


def test_classifier_module_passes_fused(route):
    c = NormalizedClassifier(64, 5, fused=True).to(DEVICE)
    x = torch.randn(8, 64, device=DEVICE, requires_grad=True)
    assert "Fused" in type(c(x).grad_fn).__name__


@pytest.mark.parametrize("rows", [0, 1])
def test_an_empty_or_one_row_batch(route, rows):
    """No box (a cascade stage left empty) or one: the kernels' grids of 0 or few programs."""
    x, w = _inputs()
    args = ("deconfound", 2, 16.0, 1 / 32, 1e-9)
    out = {}
    for fused in (False, True):
        xf = x[:rows].to(DEVICE).requires_grad_()
        wf = w.to(DEVICE).requires_grad_()
        z = logits(xf, wf, *args, fused=fused)
        z.sum().backward()
        out[fused] = (z.detach().cpu(), xf.grad.cpu(), wf.grad.cpu())
    for e, f in zip(out[False], out[True]):
        assert f.shape == e.shape
        largest = e.abs().amax().item() if e.numel() else 0.0
        torch.testing.assert_close(f, e, rtol=1e-5, atol=1e-5 * max(largest, 1.0))


@pytest.mark.parametrize("needs", ["x", "w"])
def test_one_side_needs_a_gradient(route, needs):
    """A frozen classifier (only x), or detached features (only w): the backward kernel runs on
    that side's rows only, and the result equals that side's gradient with both needed."""
    x, w = _inputs()
    args = ("cosine", 2, 16.0, 0.0, 1e-9)
    xb, wb = x.to(DEVICE).requires_grad_(), w.to(DEVICE).requires_grad_()
    both = torch.autograd.grad(logits(xb, wb, *args, fused=True).sum(), (xb, wb))
    xo, wo = x.to(DEVICE), w.to(DEVICE)
    (xo if needs == "x" else wo).requires_grad_()
    z = logits(xo, wo, *args, fused=True)
    assert "Fused" in type(z.grad_fn).__name__
    (only,) = torch.autograd.grad(z.sum(), xo if needs == "x" else wo)
    assert torch.equal(only, both[0] if needs == "x" else both[1])


def _predictor_pair(num_classes=10):
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    cfg.MODEL.TDE.SYNC_HEAD_DIRECTION = False
    cfg.MODEL.TDE.MU = 0.9
    out = []
    for fused in (False, True):
        cfg.MODEL.TDE.FUSED_KERNELS = fused
        torch.manual_seed(0)
        out.append(TDEFastRCNNOutputLayers(cfg, ShapeSpec(channels=64)).to(DEVICE).train())
    return out


@pytest.mark.parametrize("grad", [True, False])
def test_the_update_rides_in_the_classifier_launch(route, grad, monkeypatch):
    """With gradients, x_bar is updated by the classifier's forward kernel (no launch of its
    own), once per step and as the eager update; without (e.g. a PreciseBN pass in training
    mode), by neither."""
    calls = []
    original = route.update_head_direction
    monkeypatch.setattr(route, "update_head_direction",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    eager, fused = _predictor_pair()
    x, labels = _rows_and_labels(num_classes=10)
    x = torch.nan_to_num(x, nan=0.0, posinf=5.0)
    for _ in range(2):
        with torch.set_grad_enabled(grad):
            for pred in (eager, fused):
                scores, _ = pred(x.to(DEVICE).requires_grad_(grad), labels.to(DEVICE))
    assert ("Fused" in type(scores.grad_fn).__name__) if grad else scores.grad_fn is None
    assert not calls  # no update launch of its own: in the classifier's, or none
    assert bool(fused.head_direction.ema.norm() > 0) == grad
    torch.testing.assert_close(fused.head_direction.ema.cpu(), eager.head_direction.ema.cpu(),
                               rtol=2e-7, atol=0)


def test_kernel_update_only_where_the_kernels_can_do_it(route, monkeypatch):
    x, labels = _rows_and_labels()
    hd = HeadDirection(64, 2, mu=0.9, sync=True, fused=True).to(DEVICE)
    ema, got_labels, num_classes, mu = hd.kernel_update(x.to(DEVICE), labels, 11)
    assert ema is hd.ema and got_labels.device == ema.device and (num_classes, mu) == (11, 0.9)
    assert hd.kernel_update(x.double().to(DEVICE), labels, 11) is None  # float64: eager maths
    with pytest.raises(ValueError, match="labels must have shape"):
        hd.kernel_update(x.to(DEVICE), labels[1:], 11)
    monkeypatch.setattr(hd, "_syncing", lambda: True)  # the all-reduce needs two kernels
    assert hd.kernel_update(x.to(DEVICE), labels, 11) is None
    assert HeadDirection(64, 2).to(DEVICE).kernel_update(x.to(DEVICE), labels, 11) is None
    update = (hd.ema, labels.to(DEVICE), 11, 0.9)
    with pytest.raises(ValueError, match="float32 CUDA features"):
        logits(x.double().to(DEVICE), x[:5].double().to(DEVICE), "deconfound", 2, 16.0, 1 / 32,
               1e-9, fused=True, update=update)
