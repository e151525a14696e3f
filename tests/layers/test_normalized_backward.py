"""The hand-written backward of the normalised classifier (eq. 7 and its ablations) against
autograd through the composite functions, including zero, clamped and underflowing norms."""
import pytest
import torch

from tde_det.layers.tde_math import classifier_logits, normalize_features, normalize_weights

NORMALISED = ("cosine", "capsule", "deconfound")


def composite(x, w, kind, k, tau, gamma, eps):
    """Eq. 7 through autograd's own backward of the composite functions."""
    return (tau / k) * (normalize_features(x, kind, k, eps) @ normalize_weights(w, kind, k, gamma,
                                                                                  eps).t())


def grads(fn, x, w, g):
    x, w = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    out = fn(x, w)
    out.backward(g)
    return out.detach(), x.grad, w.grad


def awkward_inputs(dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 8, generator=gen, dtype=dtype)
    x[1] = 0.0  # a zero feature
    x[2, :4] = 0.0  # one zero head chunk
    x[3, 4:] = 1e-30  # a chunk whose squares underflow in float32: ||x^k|| = 0, x^k != 0
    w = torch.randn(5, 8, generator=gen, dtype=dtype)
    w[0] = 0.0  # a zero class weight
    w[1, 4:] = 1e-12  # a chunk whose norm is below eps = 1e-9 (clamped)
    return x, w, torch.randn(7, 5, generator=gen, dtype=dtype)


@pytest.mark.parametrize("kind", NORMALISED)
@pytest.mark.parametrize("gamma", [1 / 32, 0.0, 1e-12])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_backward_matches_autograd(kind, gamma, dtype):
    x, w, g = awkward_inputs(dtype)
    args = (kind, 2, 16.0, gamma, 1e-9)
    ours = grads(lambda x, w: classifier_logits(x, w, *args), x, w, g)
    ref = grads(lambda x, w: composite(x, w, *args), x, w, g)
    assert torch.equal(ours[0], ref[0])  # the forward is the composite's arithmetic, bit for bit
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    for a, b in zip(ours[1:], ref[1:]):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("kind", NORMALISED)
def test_gradcheck_with_zero_rows(kind):
    x, w, _ = awkward_inputs(torch.float64)
    # away from zero norms, where the norm (and so eq. 7) is not differentiable
    x, w = x[[0, 4, 5]].requires_grad_(), w[[2, 3, 4]].requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w: classifier_logits(x, w, kind, 2, 16.0, 1 / 32,
                                                                   1e-9), (x, w))


def test_only_the_inputs_that_need_a_gradient_get_one():
    x, w, g = awkward_inputs(torch.float32)
    w.requires_grad_()
    classifier_logits(x, w, "deconfound", 2, 16.0, 1 / 32, 1e-9).backward(g)
    assert x.grad is None and w.grad is not None
    ref = grads(lambda x, w: composite(x, w, "deconfound", 2, 16.0, 1 / 32, 1e-9), x, w, g)
    torch.testing.assert_close(w.grad, ref[2])


def test_no_silent_double_backward():
    x, w, _ = awkward_inputs(torch.float64)
    x.requires_grad_()
    (gx,) = torch.autograd.grad(classifier_logits(x, w, "deconfound", 2, 16.0, 1 / 32,
                                                  1e-9).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        gx.sum().backward()
