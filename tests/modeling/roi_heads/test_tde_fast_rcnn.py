"""The de-confounded box predictor of one cascade stage, built from explicit arguments."""
import re

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from tde_det.layers.checks import tde_undefined
from tde_det.modeling.roi_heads import TDEClassLogits, TDEFastRCNNOutputLayers
from tests.helpers.tde_reference import eq7, eq8, eq9

NO_TDE = re.escape(tde_undefined("linear", "set MODEL.TDE.TEST_TDE False"))

# Known-answer example of the specification (method.md): D = 4, K = 2, classes 0, 1, 2, then
# background last; eq. 9 with alpha = 1.5, computed by running the authors' code.
W = torch.tensor([[1, 0, 0.5, 0.5], [0, 2, 1, 0], [0.3, 0.3, 0, 1], [0.5, 0.5, 0.5, 0.5]])
X = torch.tensor([[1, 2, 3, 0.5], [0.2, 0.1, 0, 4]])
X_BAR = torch.tensor([2.0, 1, 1, 3])
EQ9 = torch.tensor([[3.9452880e-06, 7.6909733e-01, 6.0720248e-07, 2.3089814e-01],
                    [4.8639037e-02, 6.2354815e-01, 2.3000894e-01, 9.7803757e-02]])


def make(dim=4, num_classes=3, **kw):
    args = dict(box2box_transform=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)),
                num_classes=num_classes, cls_agnostic_bbox_reg=True, mu=0.9,
                sync_head_direction=False)
    args.update(kw)
    return TDEFastRCNNOutputLayers(ShapeSpec(channels=dim), **args)


def proposals_for(n):
    p = Instances((100, 100))
    p.proposal_boxes = Boxes(torch.tensor([[10.0, 10, 50, 50]]).repeat(n, 1))
    return [p]


def fixed(predictor):
    with torch.no_grad():
        predictor.cls_score.weight.copy_(W)
        predictor.head_direction.ema.copy_(X_BAR)
    return predictor.eval()


def probs(predictor, x):
    return predictor.predict_probs(predictor(x), proposals_for(len(x)))[0]


def test_known_answer_eq9_and_hand_computed_terms():
    pred = fixed(make(alpha=1.5))
    got = probs(pred, X)
    torch.testing.assert_close(got, EQ9, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got, eq9(eq7(W, X), eq8(W, X, X_BAR, 1.5)), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got.sum(1), torch.ones(2))
    torch.testing.assert_close(got[:, -1], torch.softmax(eq7(W, X), 1)[:, -1])


def test_without_background_exemption_is_softmax_of_eq8():
    pred = fixed(make(alpha=1.5, background_exempted=False))
    torch.testing.assert_close(probs(pred, X), torch.softmax(eq8(W, X, X_BAR, 1.5), 1),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kw", [dict(alpha=0.0), dict(test_tde=False)])
def test_tde_off_gives_exactly_the_deconfound_scores(kw):
    x = torch.randn(7, 4)
    ref = fixed(make(test_tde=False))
    expected = torch.softmax(ref.cls_score(x), dim=-1)
    pred = fixed(make(**kw))
    scores, _ = pred(x)
    assert isinstance(scores, TDEClassLogits)  # z and B, whatever test_tde and alpha
    assert torch.equal(probs(pred, x), expected)
    # Switching alpha off after the forward pass gives the same exact scores too.
    on = fixed(make(alpha=1.5))
    predictions = on(x)
    on.alpha = 0.0
    assert torch.equal(on.predict_probs(predictions, proposals_for(7))[0], expected)


@pytest.mark.parametrize("exempted", [True, False])
def test_probs_depend_on_the_given_alpha_only(exempted):
    """probs(z, B, alpha) is what predict_probs gives with that alpha, whatever the
    predictor's own alpha and test_tde, which it leaves as they were."""
    x = torch.randn(5, 4)
    pred = fixed(make(alpha=0.5, test_tde=False, background_exempted=exempted))
    (scores, _), proposals = pred(x), proposals_for(5)
    for alpha in (0.0, 1.5, 3.0):
        got = pred.probs(*scores, alpha)
        expected = fixed(make(alpha=alpha, background_exempted=exempted))
        assert torch.equal(got, expected.predict_probs(expected(x), proposals)[0]), alpha
    assert (pred.alpha, pred.test_tde) == (0.5, False)
    with pytest.raises(ValueError, match="alpha"):
        pred.probs(*scores, -1.0)


def test_head_direction_ignores_background_proposals():
    """Foreground is 0 <= label < C, background is C. The official ``label > 0`` mask would
    drop class 0 and keep background: this test fails with it."""
    pred = make(dim=4, num_classes=3).train()
    fg0 = torch.tensor([[1.0, 0, 0, 0], [3.0, 0, 0, 0]])  # class 0
    bg = torch.tensor([[0.0, 0, 5, 5], [0.0, 0, 7, 7]])  # background (label 3)
    x = torch.cat([fg0, bg])
    labels = torch.tensor([0, 0, 3, 3])
    pred(x, labels)
    torch.testing.assert_close(pred.head_direction.ema, fg0.mean(0))
    # Background only: x_bar unchanged (and no NaN).
    before = pred.head_direction.ema.clone()
    pred(bg, torch.tensor([3, 3]))
    assert torch.equal(pred.head_direction.ema, before)
    # Class 0 only moves it: x_bar <- mu x_bar + mean.
    pred(fg0, torch.tensor([0, 0]))
    torch.testing.assert_close(pred.head_direction.ema, 0.9 * before + fg0.mean(0))
    # Ignored proposals (label -1) do not count either.
    before = pred.head_direction.ema.clone()
    pred(bg, torch.tensor([-1, -1]))
    assert torch.equal(pred.head_direction.ema, before)


def test_labels_from_context_and_the_logged_foreground_cos():
    pred = make(log_period=2).train()
    x = torch.tensor([[1.0, 0, 2, 0], [0.0, 1, 0, 1], [5.0, 5, 5, 5]])
    with EventStorage() as storage:
        with pred.proposal_labels(torch.tensor([1, 2, 3])):
            pred(x)  # iteration 0: no log
        assert not storage.latest()
        storage.iter = 1
        pred(x, torch.tensor([1, 2, 3]))
        latest = storage.latest()
    torch.testing.assert_close(pred.head_direction.ema, 0.9 * x[:2].mean(0) + x[:2].mean(0))
    d = pred.head_direction.direction().view(2, 2)
    xh = torch.nn.functional.normalize(x[:2].view(2, 2, 2), dim=-1)
    assert latest["fg_cos"] == (pytest.approx(float((xh * d).sum(-1).mean())), 1)
    assert latest["ema_norm"][0] == pytest.approx(float(pred.head_direction.ema.norm()))
    assert "direction_cos_prev" not in latest  # the first log
    with EventStorage(start_iter=3) as storage:
        pred(x[2:], torch.tensor([3]))  # background only: no fg_cos
        assert set(storage.latest()) == {"ema_norm", "direction_cos_prev"}
    with pytest.raises(RuntimeError, match="gt_classes"):
        pred(x)  # training without labels
    with pytest.raises(ValueError, match="MODEL.TDE.LOG_PERIOD must be an integer >= 0"):
        make(log_period=-1)


def test_head_direction_is_a_checkpointed_buffer_and_not_updated_in_eval():
    pred = make()
    assert "head_direction.ema" in pred.state_dict()
    pred.eval()(torch.randn(3, 4))
    assert not pred.head_direction.ema.any()


def test_nan_head_direction_raises():
    pred = fixed(make())
    pred.head_direction.ema[0] = float("nan")
    with pytest.raises(FloatingPointError, match="head direction"):
        probs(pred, X)
    pred.test_tde = False  # without TDE the head direction is not used
    assert torch.isfinite(probs(pred, X)).all()


def test_zero_head_direction_at_tde_inference_is_an_error():
    """As the image classifier: eq. 8 with a zero x_bar would be eq. 7 under TDE's name."""
    pred = make().eval()
    with pytest.raises(RuntimeError, match="head direction .* is zero.*MODEL.TDE.TEST_TDE False"):
        probs(pred, X)
    pred.alpha = 0.0  # TDE off: eq. 7, which needs no head direction
    assert torch.isfinite(probs(pred, X)).all()


def test_head_direction_is_checked_once_per_value(monkeypatch):
    """The finiteness check syncs with the device: once per value of x_bar, not per image."""
    pred = fixed(make())
    calls = []
    isfinite = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda t: calls.append(1) or isfinite(t))
    for _ in range(3):
        probs(pred, X)
    assert len(calls) == 1
    pred.head_direction.ema[0] = float("nan")  # in place: a new version of the same tensor
    with pytest.raises(FloatingPointError, match="head direction"):
        probs(pred, X)
    pred.head_direction.ema = torch.ones(4)  # a new tensor
    probs(pred, X)
    pred.head_direction.ema = torch.full((4,), float("inf"))
    with pytest.raises(FloatingPointError, match="head direction"):
        probs(pred, X)


def test_classifier_kinds_training_logits_and_amp():
    pred = make(classifier_kind="cosine").train()
    scores, deltas = pred(X, torch.tensor([0, 3]))
    assert scores.shape == (2, 4) and deltas.shape == (2, 4)
    with pytest.raises(ValueError, match=NO_TDE):
        make(classifier_kind="linear")
    lin = make(classifier_kind="linear", test_tde=False).eval()
    with torch.no_grad():
        lin.cls_score.weight.copy_(W)
    torch.testing.assert_close(lin(X)[0], X @ W.t())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores, _ = fixed(make())(X.bfloat16())
    assert scores.total.dtype == torch.float32 and scores.bias.dtype == torch.float32
    with pytest.raises(ValueError, match="ALPHA"):
        make(alpha=-1.0)


@pytest.mark.parametrize("kind", ["deconfound", "cosine", "capsule"])
def test_a_training_step_without_boxes(kind):
    """A batch with no box (a cascade stage whose regressed boxes were all empty and dropped)
    trains as with the stock predictor: zero losses, zero gradients, x_bar unchanged. The
    hand-written backward used to fail here on reshaping 0 rows."""
    pred = make(classifier_kind=kind, test_tde=kind == "deconfound").train()
    before = pred.head_direction.ema.clone()
    x = torch.zeros(0, 4, requires_grad=True)
    p = Instances((100, 100))
    p.proposal_boxes = Boxes(torch.zeros(0, 4))
    p.gt_boxes = Boxes(torch.zeros(0, 4))
    p.gt_classes = torch.zeros(0, dtype=torch.long)
    losses = pred.losses(pred(x, p.gt_classes), [p])
    sum(losses.values()).backward()
    assert all(v.item() == 0.0 for v in losses.values())
    assert x.grad.shape == (0, 4) and pred.cls_score.weight.grad.eq(0).all()
    assert torch.equal(pred.head_direction.ema, before)
