"""TDECascadeROIHeads: per-stage head directions from foreground proposals, and the cascade's
averaged eq.-9 probabilities."""
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_roi_heads
from detectron2.modeling.roi_heads import cascade_rcnn
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from tde_det import add_tde_config
from tde_det.modeling.roi_heads import TDECascadeROIHeads, TDEFastRCNNOutputLayers
from tests.helpers.tde_reference import eq7, eq8, eq9

NUM_CLASSES = 5


def tiny_cfg(**tde):
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.MODEL.ROI_HEADS.NAME = "TDECascadeROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = NUM_CLASSES
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 16
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 4
    cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = True
    cfg.MODEL.TDE.MU = 0.9
    for k, v in tde.items():
        setattr(cfg.MODEL.TDE, k, v)
    return cfg


def build(**tde):
    torch.manual_seed(0)
    heads = build_roi_heads(tiny_cfg(**tde), {"p2": ShapeSpec(channels=8, stride=4)})
    assert isinstance(heads, TDECascadeROIHeads)
    return heads


# A wrong MODEL.TDE value is reported by its config key, before anything is built.
BAD_TDE_VALUES = [
    (dict(CLASSIFIER="causal"), r"MODEL.TDE.CLASSIFIER 'causal' is unknown; allowed: linear, "),
    (dict(NUM_HEADS=3), r"MODEL.TDE.NUM_HEADS=3 does not divide the 16-d box-head feature "
                        r"\(MODEL.ROI_BOX_HEAD.FC_DIM"),
    (dict(NUM_HEADS=0), r"MODEL.TDE.NUM_HEADS must be an integer >= 1, got 0"),
    (dict(TAU=0.0), r"MODEL.TDE.TAU must be a finite number > 0.0, got 0.0"),
    (dict(TAU=float("inf")), r"MODEL.TDE.TAU must be a finite number > 0.0, got inf"),
    (dict(GAMMA=-0.5), r"MODEL.TDE.GAMMA must be a finite number >= 0.0, got -0.5"),
    (dict(FEATURE_EPS=0.0), r"MODEL.TDE.FEATURE_EPS must be a finite number > 0.0, got 0.0"),
    (dict(ALPHA=float("nan")), r"MODEL.TDE.ALPHA \(eq. 8\) must be a finite number >= 0.0"),
    (dict(ALPHA=-1.0), r"MODEL.TDE.ALPHA \(eq. 8\) must be a finite number >= 0.0, got -1.0"),
    (dict(MU=1.5), r"MODEL.TDE.MU must be a number in \[0, 1\] \(Assumption 1\), got 1.5"),
    (dict(HEAD_DIRECTION_FORM="mean"), r"MODEL.TDE.HEAD_DIRECTION_FORM 'mean' is unknown"),
    (dict(TEST_DIRECTION="ones"), r"MODEL.TDE.TEST_DIRECTION 'ones': the detection head removes "
                                  r"its tracked x_bar only"),
]


@pytest.mark.parametrize("tde, match", BAD_TDE_VALUES)
def test_a_wrong_tde_value_names_its_config_key(tde, match):
    with pytest.raises(ValueError, match=match):
        build(**tde)


@pytest.mark.parametrize("keys", [("USE_SIGMOID_CE",), ("USE_FED_LOSS",),
                                  ("USE_SIGMOID_CE", "USE_FED_LOSS")])
def test_sigmoid_and_federated_losses_are_refused_by_key(keys):
    """Detectron2 main's MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE / USE_FED_LOSS (set here as new keys,
    so on 0.6 too) cannot be used with the softmax TDE heads: the error names them."""
    cfg = tiny_cfg()
    for key in keys:
        setattr(cfg.MODEL.ROI_BOX_HEAD, key, True)
    with pytest.raises(ValueError, match=" and ".join(f"MODEL.ROI_BOX_HEAD.{k}" for k in keys)
                       + r" True: the TDE box predictor is a softmax classifier"):
        build_roi_heads(cfg, {"p2": ShapeSpec(channels=8, stride=4)})
    for key in keys:
        setattr(cfg.MODEL.ROI_BOX_HEAD, key, False)
    assert isinstance(build_roi_heads(cfg, {"p2": ShapeSpec(channels=8, stride=4)}),
                      TDECascadeROIHeads)


def inputs(seed=0, n=40):
    g = torch.Generator().manual_seed(seed)
    features = {"p2": torch.randn(2, 8, 32, 32, generator=g)}
    proposals, targets = [], []
    for _ in range(2):
        xy = torch.rand(n, 2, generator=g) * 80
        wh = torch.rand(n, 2, generator=g) * 40 + 8
        p = Instances((128, 128))
        p.proposal_boxes = Boxes(torch.cat([xy, xy + wh], 1))
        p.objectness_logits = torch.randn(n, generator=g)
        proposals.append(p)
        t = Instances((128, 128))
        t.gt_boxes = Boxes(p.proposal_boxes.tensor[:3] + 1.0)
        t.gt_classes = torch.tensor([0, 2, 4])
        targets.append(t)
    return features, proposals, targets


def test_each_stage_updates_its_own_head_direction_from_foreground(monkeypatch):
    heads = build().train()
    assert [type(p) for p in heads.box_predictor] == [TDEFastRCNNOutputLayers] * 3
    calls = []
    original = TDEFastRCNNOutputLayers.update_head_direction

    def record(self, x, gt_classes):
        calls.append((self, x.shape[0], gt_classes.clone()))
        return original(self, x, gt_classes)

    monkeypatch.setattr(TDEFastRCNNOutputLayers, "update_head_direction", record)
    features, proposals, targets = inputs()
    with EventStorage():
        sampled, losses = heads(None, features, proposals, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    assert [c[0] for c in calls] == list(heads.box_predictor)
    # Stage 0 got the labels of the sampled proposals, row for row.
    labels0 = torch.cat([p.gt_classes for p in sampled])
    assert calls[0][1] == len(labels0) and torch.equal(calls[0][2], labels0)
    for _, n, labels in calls:
        assert len(labels) == n and (labels == NUM_CLASSES).any() and (labels < NUM_CLASSES).any()
    emas = [p.head_direction.ema for p in heads.box_predictor]
    assert all(e.abs().sum() > 0 for e in emas)
    assert not torch.equal(emas[0], emas[1]) and not torch.equal(emas[1], emas[2])
    keys = [k for k in heads.state_dict() if k.endswith("head_direction.ema")]
    assert keys == [f"box_predictor.{k}.head_direction.ema" for k in range(3)]


@pytest.mark.parametrize("exempt", [True, False])
def test_cascade_averages_the_per_stage_eq9_probabilities(monkeypatch, exempt):
    heads = build(ALPHA=1.5, BACKGROUND_EXEMPTED=exempt).eval()
    g = torch.Generator().manual_seed(1)
    for p in heads.box_predictor:  # fixed, different head directions per stage
        p.head_direction.ema.copy_(torch.randn(16, generator=g))
    stage_inputs = []
    for p in heads.box_predictor:
        p.register_forward_hook(lambda m, args, out: stage_inputs.append(args[0].detach()))
    captured = {}
    real = cascade_rcnn.fast_rcnn_inference

    def capture(boxes, scores, *args):
        captured["scores"] = scores
        return real(boxes, scores, *args)

    monkeypatch.setattr(cascade_rcnn, "fast_rcnn_inference", capture)
    features, proposals, _ = inputs(n=10)
    with torch.no_grad():
        instances, _ = heads(None, features, proposals)
    assert len(stage_inputs) == 3
    expected = 0
    for p, x in zip(heads.box_predictor, stage_inputs):
        w, x_bar = p.cls_score.weight.detach(), p.head_direction.ema
        z, t = eq7(w, x), eq8(w, x, x_bar, 1.5)
        expected = expected + (eq9(z, t) if exempt else torch.softmax(t, 1)) / 3
    got = torch.cat(captured["scores"])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got.sum(1), torch.ones(len(got)))
    # Detectron2's post-processing keeps these probabilities as the scores (no second softmax).
    fg = got[:10, :-1]
    assert torch.isin(instances[0].scores, fg.flatten()).all()


def test_tde_off_scores_equal_deconfound_scores(monkeypatch):
    captured = []
    real = cascade_rcnn.fast_rcnn_inference
    monkeypatch.setattr(cascade_rcnn, "fast_rcnn_inference",
                        lambda b, s, *a: captured.append(torch.cat(s)) or real(b, s, *a))
    features, proposals, _ = inputs(n=10)
    for tde in (dict(TEST_TDE=False), dict(ALPHA=0.0), dict(ALPHA=1.5)):
        heads = build(**tde).eval()
        for p in heads.box_predictor:
            p.head_direction.ema.fill_(1.0)
        with torch.no_grad():
            heads(None, features, proposals)
    assert torch.equal(captured[0], captured[1])
    assert not torch.allclose(captured[0], captured[2])


def test_average_head_direction_form_reaches_every_stage():
    heads = build(HEAD_DIRECTION_FORM="average")
    assert {p.head_direction.form for p in heads.box_predictor} == {"average"}
