"""Eq. 7, 8, 9 against hand-computed cases, the method's known-answer example, and properties."""
import ast
import math
import re
from pathlib import Path

import pytest
import torch

import tde_det.layers
from tde_det.layers import (
    CLASSIFIER_KINDS,
    HeadDirection,
    NormalizedClassifier,
    background_exempted_probs,
)
from tde_det.layers import has_tde
from tde_det.layers import tde_math as tm
from tde_det.layers.checks import check_has_tde, tde_undefined

NORMALISED = ("cosine", "capsule", "deconfound")


def make(kind, weight, num_heads=2, tau=16.0, gamma=1 / 32):
    clf = NormalizedClassifier(weight.shape[1], weight.shape[0], kind, num_heads, tau, gamma)
    with torch.no_grad():
        clf.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
    return clf


# Hand case: d = 4, K = 2, tau = 4 (tau/K = 2), gamma = 1/4.
# x = [3, 4 | 6, 8]: ||x^1|| = 5, ||x^2|| = 10.
# w_0 = [0, 2 | 1, 0]: ||w^1|| = 2, ||w^2|| = 1; w_0.x per head: 8, 6.
# w_1 = [4, 3 | 0, -3]: ||w^1|| = 5, ||w^2|| = 3; w_1.x per head: 24, -24.
# x_bar = [0, 5 | 2, 0]: d_hat^1 = [0, 1], d_hat^2 = [1, 0];
# cos(x^1, d_hat^1) = 0.8, cos(x^2, d_hat^2) = 0.6.
# w_0.d_hat per head: 2, 1; w_1.d_hat per head: 3, 0.
X = torch.tensor([[3.0, 4.0, 6.0, 8.0]])
W = torch.tensor([[0.0, 2.0, 1.0, 0.0], [4.0, 3.0, 0.0, -3.0]])
XBAR = torch.tensor([0.0, 5.0, 2.0, 0.0])
HAND_EQ7 = {
    "deconfound": [2 * (8 / (2.25 * 5) + 6 / (1.25 * 10)),
                   2 * (24 / (5.25 * 5) - 24 / (3.25 * 10))],
    "cosine": [2 * (8 / (2 * 5) + 6 / (1 * 10)), 2 * (24 / (5 * 5) - 24 / (3 * 10))],
    "capsule": [2 * (8 / (2 * 6) + 6 / (1 * 11)), 2 * (24 / (5 * 6) - 24 / (3 * 11))],
    "linear": [8.0 + 6.0, 24.0 - 24.0],
}
# Bias term B of eq. 8 (TDE = z - alpha * B), per kind; capsule uses ||x||/(1+||x||) * cos.
HAND_BIAS = {
    "deconfound": [2 * (0.8 * 2 / 2.25 + 0.6 * 1 / 1.25), 2 * (0.8 * 3 / 5.25 + 0.6 * 0 / 3.25)],
    "cosine": [2 * (0.8 * 2 / 2 + 0.6 * 1 / 1), 2 * (0.8 * 3 / 5 + 0.0)],
    "capsule": [2 * (5 / 6 * 0.8 * 2 / 2 + 10 / 11 * 0.6 * 1 / 1), 2 * (5 / 6 * 0.8 * 3 / 5)],
}


@pytest.mark.parametrize("kind", CLASSIFIER_KINDS)
def test_eq7_by_hand(kind):
    out = make(kind, W, tau=4.0, gamma=0.25)(X)
    torch.testing.assert_close(out, torch.tensor([HAND_EQ7[kind]]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", NORMALISED)
def test_eq8_by_hand(kind):
    clf = make(kind, W, tau=4.0, gamma=0.25)
    expected = [z - 2.0 * b for z, b in zip(HAND_EQ7[kind], HAND_BIAS[kind])]
    torch.testing.assert_close(clf.tde_logits(X, XBAR, 2.0), torch.tensor([expected]),
                               rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(clf.tde_bias(X, XBAR), torch.tensor([HAND_BIAS[kind]]),
                               rtol=1e-6, atol=1e-6)


def test_eq9_by_hand():
    # p = softmax(log[1, 3, 4]) = [1/8, 3/8, 1/2]; q = softmax(log[2, 6, 2]) = [0.2, 0.6, 0.2].
    # bg last: out = [(1 - 1/2) * 0.2 / 0.8, (1 - 1/2) * 0.6 / 0.8, 1/2] = [0.125, 0.375, 0.5].
    total = torch.tensor([[1.0, 3.0, 4.0]]).log()
    tde = torch.tensor([[2.0, 6.0, 2.0]]).log()
    expected = torch.tensor([[0.125, 0.375, 0.5]])
    torch.testing.assert_close(background_exempted_probs(total, tde), expected)
    torch.testing.assert_close(background_exempted_probs(total, tde, bg_index=2), expected)
    # bg first: p_bg = 1/8, q_bg = 0.2 -> fg = (1 - 1/8) * [0.6, 0.2] / 0.8 = 7/8 * [0.75, 0.25].
    out = background_exempted_probs(total, tde, bg_index=0)
    torch.testing.assert_close(out, torch.tensor([[0.125, 0.875 * 0.75, 0.875 * 0.25]]))


# Known-answer example of method.md (float32 run of the authors' code).
KA_W = torch.tensor([[1, 0, 0.5, 0.5], [0, 2, 1, 0], [0.3, 0.3, 0, 1], [0.5, 0.5, 0.5, 0.5]])
KA_X = torch.tensor([[1, 2, 3, 0.5], [0.2, 0.1, 0, 4]])
KA_XBAR = torch.tensor([2.0, 1, 1, 3])


def test_known_answer_classification():
    clf = make("deconfound", KA_W[:3])
    eq7 = torch.tensor([[9.7036390, 14.6973591, 8.3441372], [12.3560219, 3.5226672, 14.8263760]])
    eq8 = torch.tensor([[-16.5676746, 2.7995467, -18.9512177],
                        [-27.9625092, -14.0271540, -27.3254833]])
    torch.testing.assert_close(clf(KA_X), eq7, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(clf.tde_logits(KA_X, KA_XBAR, 3.0), eq8, rtol=1e-5, atol=1e-5)


def test_known_answer_detection():
    clf = make("deconfound", KA_W)
    eq9 = torch.tensor([[3.9452880e-06, 7.6909733e-01, 6.0720248e-07, 2.3089814e-01],
                        [4.8639037e-02, 6.2354815e-01, 2.3000894e-01, 9.7803757e-02]])
    out = background_exempted_probs(clf(KA_X), clf.tde_logits(KA_X, KA_XBAR, 1.5))
    torch.testing.assert_close(out, eq9, rtol=1e-5, atol=1e-6)


def _random_case(kind, seed=0, num_heads=2, d=8, c=5, n=6):
    g = torch.Generator().manual_seed(seed)
    clf = NormalizedClassifier(d, c, kind, num_heads)
    with torch.no_grad():
        clf.weight.copy_(torch.randn(c, d, generator=g))
    return clf, torch.randn(n, d, generator=g), torch.randn(d, generator=g)


@pytest.mark.parametrize("kind", NORMALISED)
def test_alpha_zero_is_eq7_and_bias_decomposition(kind):
    clf, x, xbar = _random_case(kind)
    assert torch.equal(clf.tde_logits(x, xbar, 0.0), clf(x))
    bias = clf.tde_bias(x, xbar)
    for alpha in (0.5, 1.5, 3.0):
        torch.testing.assert_close(clf.tde_logits(x, xbar, alpha), clf(x) - alpha * bias)
    assert not torch.allclose(clf.tde_logits(x, xbar, 1.5), clf(x), atol=1e-3)


@pytest.mark.parametrize("kind", NORMALISED)
def test_zero_head_direction_gives_eq7(kind):
    clf, x, _ = _random_case(kind)
    out = clf.tde_logits(x, torch.zeros(8), 1.5)
    assert torch.isfinite(out).all() and torch.equal(out, clf(x))
    assert torch.equal(clf.tde_logits(x, HeadDirection(8), 1.5), clf(x))


@pytest.mark.parametrize("kind", NORMALISED)
def test_tde_depends_on_direction_not_scale(kind):
    clf, x, xbar = _random_case(kind)
    ref = clf.tde_logits(x, xbar, 1.5)
    scaled = torch.cat([xbar[:4] * 1e-3, xbar[4:] * 250.0])
    torch.testing.assert_close(clf.tde_logits(x, scaled, 1.5), ref, rtol=1e-5, atol=1e-5)
    turned = torch.cat([xbar[:4], xbar[4:].flip(0)])
    assert not torch.allclose(clf.tde_logits(x, turned, 1.5), ref, atol=1e-3)


@pytest.mark.parametrize("kind", NORMALISED)
def test_cancellation_parallel_to_head_direction(kind):
    clf, _, xbar = _random_case(kind)
    x = torch.stack([torch.cat([xbar[:4] * a, xbar[4:] * b]) for a, b in [(1, 1), (3, 0.2)]])
    assert clf(x).abs().max() > 1.0
    torch.testing.assert_close(clf.tde_logits(x, xbar, 1.0), torch.zeros(2, 5), atol=1e-5, rtol=0)


def test_head_direction_module_and_validation():
    clf, x, xbar = _random_case("deconfound")
    hd = HeadDirection(8, num_heads=2)
    hd.ema.copy_(xbar)
    assert torch.equal(clf.tde_logits(x, hd, 1.5), clf.tde_logits(x, xbar, 1.5))
    with pytest.raises(ValueError, match="num_heads=1"):
        clf.tde_logits(x, HeadDirection(8, num_heads=1), 1.5)
    with pytest.raises(ValueError, match=r"shape \(8,\).*\(6,\)"):
        clf.tde_logits(x, torch.zeros(6), 1.5)
    with pytest.raises(ValueError, match="alpha.*-0.5"):
        clf.tde_logits(x, xbar, -0.5)
    with pytest.raises(ValueError, match="alpha.*nan"):
        clf.tde_logits(x, xbar, float("nan"))
    linear, _, _ = _random_case("linear")
    with pytest.raises(ValueError, match=re.escape(tde_undefined("linear"))):
        linear.tde_logits(x, xbar, 1.5)
    with pytest.raises(ValueError, match=re.escape(tde_undefined("linear"))):
        linear.tde_bias(x, xbar)


def test_one_rule_and_one_message_for_a_classifier_without_tde():
    assert [k for k in CLASSIFIER_KINDS if not has_tde(k)] == ["linear"]
    assert tde_undefined("linear", "do this") == (
        "TDE (eq. 8) is not defined for MODEL.TDE.CLASSIFIER 'linear': it needs a normalised "
        "classifier (cosine, capsule or deconfound); do this")
    with pytest.raises(ValueError, match=re.escape(tde_undefined("linear", "do this"))):
        check_has_tde("linear", "do this")
    for kind in NORMALISED:
        check_has_tde(kind)
    with pytest.raises(ValueError, match="'causal' is unknown"):
        has_tde("causal")


def test_k1_gamma0_deconfound_is_cosine():
    clf, x, xbar = _random_case("deconfound", num_heads=1)
    clf.gamma = 0.0
    cos, _, _ = _random_case("cosine", num_heads=1)
    expected = 16.0 * torch.nn.functional.cosine_similarity(x[:, None, :], clf.weight[None], dim=-1)
    torch.testing.assert_close(clf(x), expected.detach())
    torch.testing.assert_close(cos(x), expected.detach())
    torch.testing.assert_close(clf.tde_logits(x, xbar, 1.0), cos.tde_logits(x, xbar, 1.0))


def test_eq9_properties():
    g = torch.Generator().manual_seed(1)
    total, tde = torch.randn(7, 6, generator=g) * 4, torch.randn(7, 6, generator=g) * 4
    for bg in (-1, 5, 0, 2):
        out = background_exempted_probs(total, tde, bg_index=bg)
        torch.testing.assert_close(out.sum(1), torch.ones(7))
        assert torch.equal(out[:, bg], torch.softmax(total, 1)[:, bg])
    # Not a second softmax (issue #27): scores are probabilities, not re-squashed.
    assert not torch.allclose(torch.softmax(out, 1), out)


def test_eq9_safe_when_q_bg_is_one():
    total = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]])
    tde = torch.tensor([[-500.0, -400.0, 300.0], [-1e4, -1e4 + 1, 1e4]])
    out = background_exempted_probs(total, tde)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.sum(1), torch.ones(2))
    p = torch.softmax(total, 1)
    # q_i / (1 - q_bg) = softmax over the foreground TDE logits: [e^-100 / (1 + e^-100), ~1].
    torch.testing.assert_close(out[0, :2], (1 - p[0, 2]) * torch.tensor([math.exp(-100), 1.0]))
    torch.testing.assert_close(out[1, :2], (1 - p[1, 2]) * torch.tensor([1 / (1 + math.e),
                                                                         math.e / (1 + math.e)]))


def test_eq9_validation():
    with pytest.raises(ValueError, match="same shape"):
        background_exempted_probs(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="bg_index=3"):
        background_exempted_probs(torch.zeros(2, 3), torch.zeros(2, 3), bg_index=3)


LAYERS = Path(tde_det.layers.__file__).parent


def _layer_modules():
    """{module name: (path, its package)} of every file in tde_det/layers, subpackages included."""
    out = {}
    for path in sorted(LAYERS.rglob("*.py")):
        parts = list(path.relative_to(LAYERS).with_suffix("").parts)
        package = parts[-1] == "__init__"
        name = ".".join(["tde_det.layers"] + (parts[:-1] if package else parts))
        out[name] = (path, name if package else name.rsplit(".", 1)[0])
    return out


def _imports(path, package):
    """Every module an import statement of ``path`` names (in functions and under TYPE_CHECKING
    too), relative imports resolved against ``package``; ``from P import x`` gives P and P.x."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level \
                else []
            module = ".".join(base + ([node.module] if node.module else []))
            yield module
            yield from (f"{module}.{a.name}" for a in node.names)


def test_layers_never_import_detectron2():
    modules = _layer_modules()
    assert len(modules) >= 6
    for name, (path, package) in modules.items():
        for imported in _imports(path, package):
            assert imported.split(".")[0] != "detectron2", (path, imported)
            # tde_det.layers only, and only through relative imports
            assert not imported.startswith("tde_det.") or imported.startswith("tde_det.layers"), \
                (path, imported)


def test_no_import_cycle_inside_the_layers():
    modules = _layer_modules()
    graph = {name: {m for m in _imports(path, package) if m in modules and m != name}
             for name, (path, package) in modules.items()}
    done, path = set(), []

    def visit(name):
        assert name not in path, "import cycle: " + " -> ".join(path[path.index(name):] + [name])
        if name not in done:
            path.append(name)
            for dep in sorted(graph[name]):
                visit(dep)
            path.pop()
            done.add(name)

    for name in sorted(graph):
        visit(name)
    # tde_math is the maths only: no kernels, no modules, no environment
    assert graph["tde_det.layers.tde_math"] == {"tde_det.layers.checks"}
    importers = {n for n, deps in graph.items() if "tde_det.layers.fused.kernels" in deps}
    assert importers == {"tde_det.layers.fused"}  # the Triton kernels behind their dispatch
    assert all("triton" not in {m.split(".")[0] for m in _imports(p, pkg)}
               for n, (p, pkg) in modules.items() if n != "tde_det.layers.fused.kernels")


def test_eq8_and_the_moving_average_as_tensor_functions():
    total, bias = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.5, 4.0]])
    assert torch.equal(tm.tde_logits(total, bias, 2.0), torch.tensor([[0.0, -10.0]]))
    with pytest.raises(ValueError, match="alpha.*-1"):
        tm.tde_logits(total, bias, -1.0)
    rows = torch.tensor([[1.0, 2.0], [float("nan"), 0.0], [3.0, 6.0]])
    sums, count = tm.row_sums(rows, torch.tensor([True, False, True]))
    assert sums.dtype == torch.float64 and torch.equal(sums, torch.tensor([4.0, 8.0]).double())
    ema = torch.tensor([2.0, -2.0])
    tm.moving_sum_update_(ema, sums, count, 0.5)  # 0.5 * x_bar + sums / 2
    assert torch.equal(ema, torch.tensor([3.0, 3.0]))
    none = tm.row_sums(rows, torch.zeros(3, dtype=torch.bool))
    assert torch.equal(tm.moving_sum_update_(ema, *none, 0.5), torch.tensor([3.0, 3.0]))


@pytest.mark.parametrize("kind", ["cosine", "capsule", "deconfound"])
def test_logits_and_bias_in_one_pass_are_bit_identical(kind):
    gen = torch.Generator().manual_seed(3)
    clf = NormalizedClassifier(8, 5, kind=kind, num_heads=2)
    x, xbar = torch.randn(6, 8, generator=gen), torch.randn(8, generator=gen)
    with torch.no_grad():
        total, bias = clf.logits_and_tde_bias(x, xbar)
        assert torch.equal(total, clf(x)) and torch.equal(bias, clf.tde_bias(x, xbar))
    total_grad, _ = clf.logits_and_tde_bias(x, xbar)  # with autograd on: the same numbers
    assert torch.equal(total_grad.detach(), total)


@pytest.mark.parametrize("bg", [0, 2, 4, -1])
def test_eq9_for_every_background_column(bg):
    gen = torch.Generator().manual_seed(4)
    total, tde = torch.randn(3, 5, generator=gen), torch.randn(3, 5, generator=gen)
    out = background_exempted_probs(total, tde, bg_index=bg)
    p, q = torch.softmax(total, 1), torch.softmax(tde, 1)
    b = bg % 5
    fg = [i for i in range(5) if i != b]
    expected = torch.empty(3, 5)
    expected[:, b] = p[:, b]
    expected[:, fg] = (1 - p[:, b:b + 1]) * q[:, fg] / (1 - q[:, b:b + 1])
    torch.testing.assert_close(out, expected)
