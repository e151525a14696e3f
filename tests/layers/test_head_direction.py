"""HeadDirection (Assumption 1): the EMA by hand, the foreground mask, direction, checkpoints."""
import io

import pytest
import torch

from tde_det.layers import HeadDirection


def test_buffer_and_defaults():
    hd = HeadDirection(6)
    assert (hd.dim, hd.num_heads, hd.mu, hd.sync) == (6, 2, 0.9, True)
    assert hd.ema.dtype == torch.float32 and torch.equal(hd.ema, torch.zeros(6))
    assert list(hd.state_dict()) == ["ema"] and [n for n, _ in hd.named_buffers()] == ["ema"]
    assert list(hd.parameters()) == []


def test_ema_by_hand():
    hd = HeadDirection(4, num_heads=2, mu=0.5)
    hd.update(torch.tensor([[1.0, 2.0, 0.0, 4.0], [3.0, 4.0, 2.0, 0.0]]))
    # mean = [2, 3, 1, 2]; ema = 0.5 * 0 + mean
    assert torch.equal(hd.ema, torch.tensor([2.0, 3.0, 1.0, 2.0]))
    hd.update(torch.tensor([[2.0, 0.0, 1.0, 1.0], [9.0, 9.0, 9.0, 9.0], [0.0, 2.0, 3.0, 3.0]]),
              keep=torch.tensor([True, False, True]))
    # kept mean = [1, 1, 2, 2]; ema = 0.5 * [2, 3, 1, 2] + [1, 1, 2, 2] = [2, 2.5, 2.5, 3]
    assert torch.equal(hd.ema, torch.tensor([2.0, 2.5, 2.5, 3.0]))
    hd.mu = 0.0  # mu may change between updates (per-epoch rescaling)
    hd.update(torch.tensor([[4.0, 0.0, 0.0, 8.0]]))
    assert torch.equal(hd.ema, torch.tensor([4.0, 0.0, 0.0, 8.0]))
    hd.mu = 1.0
    hd.update(torch.tensor([[1.0, 1.0, 1.0, 1.0]]))
    assert torch.equal(hd.ema, torch.tensor([5.0, 1.0, 1.0, 9.0]))
    # per-head unit direction: [5, 1]/sqrt(26), [1, 9]/sqrt(82)
    expected = torch.tensor([5 / 26 ** 0.5, 1 / 26 ** 0.5, 1 / 82 ** 0.5, 9 / 82 ** 0.5])
    torch.testing.assert_close(hd.direction(), expected)
    torch.testing.assert_close(hd.head_norms(), torch.tensor([26 ** 0.5, 82 ** 0.5]))


def test_background_rows_never_move_the_ema():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(10, 8, generator=g)
    keep = torch.tensor([True, False, False, True, True, False, True, False, False, True])
    a, b, c = HeadDirection(8), HeadDirection(8), HeadDirection(8)
    other = feats.clone()
    other[~keep] = torch.tensor([1e6, float("nan"), float("inf"), -3.0, 0, 0, 0, 0])
    for _ in range(3):
        a.update(feats, keep)
        b.update(other, keep)
        c.update(feats[keep])
    assert torch.equal(a.ema, b.ema) and torch.isfinite(a.ema).all()
    torch.testing.assert_close(a.ema, c.ema, rtol=1e-6, atol=0)
    d = HeadDirection(8)
    for _ in range(3):
        d.update(feats)
    assert not torch.allclose(a.ema, d.ema, atol=1e-3)


def test_empty_foreground_leaves_ema_unchanged():
    hd = HeadDirection(4, mu=0.9)
    hd.update(torch.randn(5, 4))
    before = hd.ema.clone()
    hd.update(torch.randn(5, 4), keep=torch.zeros(5, dtype=torch.bool))
    assert torch.equal(hd.ema, before)
    hd.update(torch.empty(0, 4))
    hd.update(torch.empty(0, 4), keep=torch.zeros(0, dtype=torch.bool))
    assert torch.equal(hd.ema, before) and torch.isfinite(hd.ema).all()


def test_update_is_detached():
    hd = HeadDirection(4)
    x = torch.randn(3, 4, requires_grad=True)
    hd.update(x * 2)
    assert not hd.ema.requires_grad and hd.ema.grad_fn is None


def test_direction_zero_chunks_stay_zero():
    hd = HeadDirection(6, num_heads=3)
    assert torch.equal(hd.direction(), torch.zeros(6))
    hd.ema.copy_(torch.tensor([0.0, 0.0, 3.0, -4.0, 1e-30, 0.0]))
    torch.testing.assert_close(hd.direction(), torch.tensor([0.0, 0.0, 0.6, -0.8, 1.0, 0.0]))
    torch.testing.assert_close(hd.head_norms(), torch.tensor([0.0, 5.0, 1e-30]))


def test_state_dict_round_trip_is_bit_exact():
    hd = HeadDirection(8, mu=0.9998)
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        hd.update(torch.randn(7, 8, generator=g) * 1.7)
    buf = io.BytesIO()
    torch.save(hd.state_dict(), buf)
    buf.seek(0)
    fresh = HeadDirection(8, mu=0.5)
    fresh.load_state_dict(torch.load(buf))
    assert torch.equal(fresh.ema, hd.ema) and fresh.ema.dtype == torch.float32
    assert fresh.ema.view(torch.int32).equal(hd.ema.view(torch.int32))
    parent = torch.nn.Module()
    parent.hd = HeadDirection(8)
    parent.load_state_dict({"hd.ema": hd.ema.clone()})
    assert torch.equal(parent.hd.ema, hd.ema)


@pytest.mark.parametrize("kwargs, match", [
    (dict(dim=10, num_heads=4), r"num_heads=4 does not divide the 10-d feature \(dim\)"),
    (dict(dim=8, num_heads=0), r"num_heads.*0"),
    (dict(dim=8, mu=1.5), r"mu.*\[0, 1\].*1\.5"),
    (dict(dim=8, mu=-0.1), r"mu.*-0\.1"),
])
def test_constructor_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HeadDirection(**kwargs)


def test_update_validation():
    hd = HeadDirection(4)
    with pytest.raises(ValueError, match=r"mu.*2\.0"):
        hd.mu = 2.0
    assert hd.mu == 0.9
    with pytest.raises(ValueError, match=r"length 3.*length 2"):
        hd.update(torch.randn(3, 4), keep=torch.tensor([True, False]))
    with pytest.raises(ValueError, match=r"bool.*torch.uint8"):
        hd.update(torch.randn(3, 4), keep=torch.tensor([1, 0, 1], dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[N, 4\].*\(3, 5\)"):
        hd.update(torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"labels must have shape \[3\].*\(2,\)"):
        hd.update_from_labels(torch.randn(3, 4), torch.tensor([0, 1]), num_classes=2)
    with pytest.raises(ValueError, match=r"\[N, 4\].*\(3, 5\)"):
        hd.update_from_labels(torch.randn(3, 5), torch.tensor([0, 1, 2]), num_classes=2)
    assert torch.equal(hd.ema, torch.zeros(4))


def test_update_from_labels_keeps_the_foreground():
    x = torch.tensor([[1.0, 2, 3, 4], [10, 10, 10, 10], [5, 6, 7, 8], [9, 9, 9, 9]])
    labels = torch.tensor([0, 2, 1, -1])  # 2 = background of 2 classes, -1 ignored
    by_labels, by_mask = HeadDirection(4, mu=0.5), HeadDirection(4, mu=0.5)
    by_labels.update_from_labels(x, labels, num_classes=2)
    by_mask.update(x, keep=torch.tensor([True, False, True, False]))
    assert torch.equal(by_labels.ema, by_mask.ema)
    assert torch.equal(by_labels.ema, torch.tensor([3.0, 4, 5, 6]))


def test_x_bar_moves_only_in_a_training_step_and_inputs_are_still_checked():
    """In eval mode or without gradients (e.g. PreciseBN's passes) no update changes x_bar."""
    model = torch.nn.ModuleDict({"a": HeadDirection(4, 2), "b": HeadDirection(4, 2, fused=True)})
    model["a"].update(torch.ones(2, 4))
    before = {k: hd.ema.clone() for k, hd in model.items()}
    for training, grad in ((True, False), (False, True)):
        model.train(training)
        with torch.set_grad_enabled(grad):
            for hd in model.values():
                assert not hd.moves()
                hd.update(torch.randn(3, 4))
                hd.update_from_labels(torch.randn(3, 4), torch.tensor([0, 1, 2]), num_classes=3)
                assert hd.kernel_update(torch.randn(3, 4), torch.tensor([0, 1, 2]), 3) is None
                with pytest.raises(ValueError, match="shape"):
                    hd.update(torch.randn(3, 5))
                with pytest.raises(ValueError, match="labels must have shape"):
                    hd.update_from_labels(torch.randn(3, 4), torch.tensor([0, 1]), num_classes=3)
    assert all(torch.equal(model[k].ema, before[k]) for k in model)
    model.train()
    model["a"].update(torch.ones(2, 4))
    assert not torch.equal(model["a"].ema, before["a"])


def test_average_form_by_hand_and_its_direction():
    avg = HeadDirection(4, num_heads=2, mu=0.5, form="average")
    total = HeadDirection(4, num_heads=2, mu=0.5)
    rows = [torch.tensor([[1.0, 2.0, 0.0, 4.0], [3.0, 4.0, 2.0, 0.0]]),
            torch.tensor([[2.0, 0.0, 1.0, 1.0]])]
    for r in rows:
        avg.update(r)
        total.update(r)
    # 0.5 * (0.5 * [2, 3, 1, 2]) + 0.5 * [2, 0, 1, 1] = [1.5, 0.75, 0.75, 1]
    assert torch.equal(avg.ema, torch.tensor([1.5, 0.75, 0.75, 1.0]))
    # A constant mu: (1 - mu) times the decayed sum, so the same direction.
    torch.testing.assert_close(avg.ema, 0.5 * total.ema)
    torch.testing.assert_close(avg.direction(), total.direction())
    # A mu that changes between updates gives another direction.
    for hd in (avg, total):
        hd.mu = 0.9
        hd.update(torch.tensor([[0.0, 4.0, 4.0, 0.0]]))
    assert not torch.allclose(avg.direction(), total.direction())
    # No kept row leaves it unchanged.
    before = avg.ema.clone()
    avg.update(torch.ones(2, 4), keep=torch.tensor([False, False]))
    assert torch.equal(avg.ema, before)
    with pytest.raises(ValueError, match="head-direction form 'mean' is unknown"):
        HeadDirection(4, form="mean")
