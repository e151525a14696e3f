"""NormalizedClassifier: construction, validation, gradients, numerical safety, precision."""
import math

import pytest
import torch
from torch.func import functional_call

from tde_det.layers import CLASSIFIER_KINDS, NormalizedClassifier

NORMALISED = ("cosine", "capsule", "deconfound")


def test_public_kinds_and_attributes():
    assert CLASSIFIER_KINDS == ("linear", "cosine", "capsule", "deconfound")
    clf = NormalizedClassifier(64, 10)
    assert (clf.in_features, clf.num_classes, clf.kind, clf.num_heads) == (64, 10, "deconfound", 2)
    assert (clf.tau, clf.gamma, clf.eps) == (16.0, 1 / 32, 1e-9)
    assert isinstance(clf.weight, torch.nn.Parameter) and clf.weight.shape == (10, 64)
    assert [n for n, _ in clf.named_parameters()] == ["weight"]  # no bias
    bound = 1 / math.sqrt(64)
    assert clf.weight.abs().max() <= bound and clf.weight.abs().max() > bound / 2
    assert clf(torch.randn(3, 64)).shape == (3, 10)


@pytest.mark.parametrize("kwargs, match", [
    (dict(in_features=10, num_heads=3),
     r"num_heads=3 does not divide the 10-d feature \(in_features\)"),
    (dict(num_heads=0), r"num_heads.*0"),
    (dict(tau=0.0), r"tau.*0\.0"),
    (dict(tau=-2.0), r"tau.*-2\.0"),
    (dict(gamma=-0.1), r"gamma.*-0\.1"),
    (dict(kind="causal"), r"'causal'.*linear, cosine, capsule, deconfound"),
    (dict(num_classes=0), r"num_classes.*0"),
    (dict(eps=0.0), r"eps.*0\.0"),
])
def test_constructor_validation(kwargs, match):
    args = dict(in_features=8, num_classes=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        NormalizedClassifier(**args)


def test_wrong_feature_width():
    with pytest.raises(ValueError, match=r"\[N, 8\].*\(4, 6\)"):
        NormalizedClassifier(8, 3)(torch.randn(4, 6))


def test_linear_is_plain_matmul():
    clf = NormalizedClassifier(6, 4, kind="linear", num_heads=1)
    x = torch.randn(5, 6)
    torch.testing.assert_close(clf(x), x @ clf.weight.detach().t())


@pytest.mark.parametrize("kind", CLASSIFIER_KINDS)
def test_gradcheck_float64(kind):
    clf = NormalizedClassifier(6, 4, kind=kind, num_heads=2).double()
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: functional_call(clf, {"weight": w}, (x,)), (x, w))
    assert clf(x).dtype == torch.float64


@pytest.mark.parametrize("kind", NORMALISED)
def test_gradcheck_tde_float64(kind):
    clf = NormalizedClassifier(6, 4, kind=kind, num_heads=3).double()
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    xbar = torch.randn(6, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: clf.tde_logits(x, xbar, 1.5), (x,))


@pytest.mark.parametrize("kind", CLASSIFIER_KINDS)
def test_zero_rows_are_finite(kind):
    gamma = 0.0 if kind == "cosine" else 1 / 32
    clf = NormalizedClassifier(4, 3, kind=kind, num_heads=2, gamma=gamma)
    with torch.no_grad():
        clf.weight[1] = 0.0
        clf.weight[2, :2] = 0.0  # a zero head chunk
    x = torch.randn(3, 4)
    x[0] = 0.0
    x[1, 2:] = 0.0
    x.requires_grad_(True)
    out = clf(x)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert torch.isfinite(clf.weight.grad).all()
    assert (out[:, 1] == 0).all() and (out[0] == 0).all()
    if kind != "linear":
        for xbar in (torch.zeros(4), torch.tensor([0.0, 0.0, 1.0, 2.0])):
            x.grad = None
            tde = clf.tde_logits(x, xbar, 1.5)
            tde.sum().backward()
            assert torch.isfinite(tde).all() and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("kind", NORMALISED)
@pytest.mark.parametrize("gamma", [1 / 32, 0.0, 1e-12])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gradients_finite_at_zero_clamped_and_underflowing_norms(kind, gamma, dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 8, generator=gen, dtype=dtype)
    x[1] = 0.0  # a zero feature
    x[2, :4] = 0.0  # one zero head chunk
    x[3, 4:] = 1e-30  # a chunk whose squares underflow in float32: ||x^k|| = 0, x^k != 0
    w = torch.randn(5, 8, generator=gen, dtype=dtype)
    w[0] = 0.0  # a zero class weight
    w[1, 4:] = 1e-12  # a chunk whose norm is below eps = 1e-9 (clamped)
    clf = NormalizedClassifier(8, 5, kind=kind, num_heads=2, gamma=gamma).to(dtype)
    x.requires_grad_()
    out = functional_call(clf, {"weight": w.requires_grad_()}, (x,))
    out.backward(torch.randn(7, 5, generator=gen, dtype=dtype))
    for t in (out, x.grad, w.grad):
        assert torch.isfinite(t).all()


@pytest.mark.parametrize("kind", CLASSIFIER_KINDS)
def test_float32_under_bfloat16_autocast(kind):
    clf = NormalizedClassifier(8, 5, kind=kind)
    x = torch.randn(4, 8)
    ref = clf(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = clf(x)
        out_bf16_input = clf(x.bfloat16())
        lin = torch.nn.functional.linear(x, clf.weight)  # autocast is really on
    assert lin.dtype == torch.bfloat16
    assert out.dtype == torch.float32 and out_bf16_input.dtype == torch.float32
    torch.testing.assert_close(out, ref)
    if kind != "linear":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            tde = clf.tde_logits(x, torch.randn(8), 1.5)
        assert tde.dtype == torch.float32


def test_tiny_features_do_not_underflow_in_half_inputs():
    clf = NormalizedClassifier(4, 2, kind="deconfound")
    x = torch.tensor([[1e-4, 0.0, 0.0, 2e-4]], dtype=torch.float16)
    out = clf(x)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out, clf(x.float()))
