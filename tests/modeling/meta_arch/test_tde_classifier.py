"""TDEImageClassifier: loss, head direction from all samples, eq. 7 and eq. 8 from one pass."""
import re

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.modeling import build_model

import tde_det  # noqa: F401  (registration)
from tde_det import add_tde_config
from tde_det.layers import HeadDirection, NormalizedClassifier
from tde_det.layers.checks import tde_undefined
from tde_det.modeling.backbone import CifarResNet
from tde_det.modeling.meta_arch import TDEImageClassifier

NO_TDE = re.escape(tde_undefined("linear", "set MODEL.TDE.TEST_TDE False"))


def make_model(kind="deconfound", alpha=1.5, test_tde=True, num_classes=5):
    torch.manual_seed(0)
    return TDEImageClassifier(
        backbone=CifarResNet(depth=8), in_feature="res5",
        classifier=NormalizedClassifier(128, num_classes, kind=kind),
        head_direction=HeadDirection(128, 2, mu=0.9, sync=False), alpha=alpha,
        test_tde=test_tde, pixel_mean=[120.0, 110.0, 100.0], pixel_std=[50.0, 50.0, 50.0])


def batch(n=6, num_classes=5):
    g = torch.Generator().manual_seed(1)
    return [{"image": torch.randint(0, 256, (3, 32, 32), generator=g, dtype=torch.uint8),
             "label": i % num_classes} for i in range(n)]


def test_training_loss_and_head_direction_from_all_samples():
    model = make_model().train()
    inputs = batch()
    with torch.no_grad():
        images = torch.stack([d["image"] for d in inputs]).float()
        images = (images - torch.tensor([120.0, 110, 100]).view(3, 1, 1)) / 50.0
        model.backbone.train()
        state = {k: v.clone() for k, v in model.backbone.state_dict().items()}
        x = model.backbone(images)["res5"].mean(dim=(2, 3))
        model.backbone.load_state_dict(state)  # undo the BN running-stat update
    losses = model(inputs)
    assert set(losses) == {"loss_cls"} and torch.isfinite(losses["loss_cls"])
    expected_loss = F.cross_entropy(model.classifier(x), torch.tensor([0, 1, 2, 3, 4, 0]))
    torch.testing.assert_close(losses["loss_cls"], expected_loss)
    # First update of a zero EMA: x_bar = mean over *all* samples of the batch.
    torch.testing.assert_close(model.head_direction.ema, x.mean(0))
    losses["loss_cls"].backward()
    assert model.classifier.weight.grad is not None


def test_inference_returns_tde_and_plain_logits_from_one_pass():
    model = make_model(alpha=1.5)
    model.train()(batch())  # one training step gives a non-zero head direction
    model.eval()
    inputs = batch(4)
    out = model(inputs)
    assert len(out) == 4 and all(o["tde"] for o in out)
    x = model.extract_features(model.preprocess_image(inputs))
    plain = model.classifier(x)
    tde = model.classifier.tde_logits(x, model.head_direction.ema, 1.5)
    torch.testing.assert_close(torch.stack([o["logits_no_tde"] for o in out]), plain)
    torch.testing.assert_close(torch.stack([o["logits"] for o in out]), tde)
    torch.testing.assert_close(torch.stack([o["probs"] for o in out]), tde.softmax(1))
    assert not torch.allclose(tde, plain)


@pytest.mark.parametrize("alpha, test_tde", [(0.0, True), (1.5, False)])
def test_without_tde_the_prediction_is_eq7(alpha, test_tde):
    model = make_model(alpha=alpha, test_tde=test_tde).eval()
    out = model(batch(2))  # no head direction needed: TDE is off
    assert not out[0]["tde"]
    assert torch.equal(out[0]["logits"], out[0]["logits_no_tde"])


def test_zero_head_direction_at_tde_inference_is_an_error():
    with pytest.raises(RuntimeError, match="head direction .* is zero"):
        make_model().eval()(batch(2))


def test_linear_classifier_with_tde_is_a_config_error():
    with pytest.raises(ValueError, match=NO_TDE):
        make_model(kind="linear", test_tde=True)
    make_model(kind="linear", test_tde=False).eval()(batch(2))


def test_images_of_different_sizes_are_rejected():
    inputs = batch(2)
    inputs[1]["image"] = torch.zeros(3, 36, 36, dtype=torch.uint8)
    with pytest.raises(ValueError, match="same shape"):
        make_model(test_tde=False).eval()(inputs)


def _cfg(**tde):
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "TDEImageClassifier"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "build_cifar_resnet_backbone"
    cfg.MODEL.CIFAR_RESNET.DEPTH = 8
    cfg.MODEL.IMAGE_CLASSIFIER.NUM_CLASSES = 7
    for k, v in tde.items():
        setattr(cfg.MODEL.TDE, k, v)
    return cfg


def test_from_config():
    model = build_model(_cfg(CLASSIFIER="cosine", NUM_HEADS=4, ALPHA=2.0, MU=0.9))
    assert isinstance(model, TDEImageClassifier)
    assert model.classifier.kind == "cosine" and model.classifier.num_classes == 7
    assert model.classifier.num_heads == model.head_direction.num_heads == 4
    assert model.alpha == 2.0 and model.head_direction.mu == 0.9
    assert "head_direction.ema" in model.state_dict()


def test_feature_not_divisible_by_heads_names_the_config_keys():
    with pytest.raises(ValueError, match=r"MODEL.TDE.NUM_HEADS=3 does not divide the 128-d"):
        build_model(_cfg(NUM_HEADS=3))


@pytest.mark.parametrize("tde, match", [
    (dict(CLASSIFIER="causal"), r"MODEL.TDE.CLASSIFIER 'causal' is unknown"),
    (dict(NUM_HEADS=0), r"MODEL.TDE.NUM_HEADS must be an integer >= 1, got 0"),
    (dict(TAU=-1.0), r"MODEL.TDE.TAU must be a finite number > 0.0, got -1.0"),
    (dict(GAMMA=float("nan")), r"MODEL.TDE.GAMMA must be a finite number >= 0.0, got nan"),
    (dict(FEATURE_EPS=-1e-9), r"MODEL.TDE.FEATURE_EPS must be a finite number > 0.0"),
    # NaN passed the classifier's old "alpha < 0" check and failed only at the first test image
    (dict(ALPHA=float("nan")), r"MODEL.TDE.ALPHA \(eq. 8\) must be a finite number >= 0.0"),
    (dict(MU=-0.1), r"MODEL.TDE.MU must be a number in \[0, 1\]"),
])
def test_a_wrong_tde_value_names_its_config_key(tde, match):
    with pytest.raises(ValueError, match=match):
        build_model(_cfg(**tde))


def test_unknown_in_feature_names_the_config_key():
    cfg = _cfg()
    cfg.MODEL.IMAGE_CLASSIFIER.IN_FEATURE = "res4"
    with pytest.raises(ValueError, match="MODEL.IMAGE_CLASSIFIER.IN_FEATURE='res4'"):
        build_model(cfg)


def trained(model):
    model.train()(batch())
    return model.eval()


def test_test_directions_replace_the_ema_in_eq8():
    from tde_det.layers import fixed_direction
    from tde_det.layers.tde_math import classifier_logits_and_tde_bias

    model = trained(make_model(alpha=1.0))
    x = model.extract_features(model.preprocess_image(batch(4)))
    c = model.classifier
    args = (c.weight, c.kind, c.num_heads, c.tau, c.gamma, c.eps)
    z_ema, b_ema = model.logits_and_tde_bias(x)
    for name in ("ones", "random", "zero"):
        model.test_direction = name
        z, b = model.logits_and_tde_bias(x)
        _, expected = classifier_logits_and_tde_bias(x, args[0], fixed_direction(name, 128, 0),
                                                     *args[1:])
        torch.testing.assert_close(z, z_ema)
        torch.testing.assert_close(b, expected)
    assert torch.equal(b, torch.zeros_like(b))  # zero: eq. 8 is eq. 7
    out = model(batch(4))
    torch.testing.assert_close(torch.stack([o["logits"] for o in out]),
                               torch.stack([o["logits_no_tde"] for o in out]))
    model.test_direction = "random"
    b1 = model.logits_and_tde_bias(x)[1]
    model.random_direction_seed = 1
    assert not torch.allclose(b1, model.logits_and_tde_bias(x)[1])  # the seed matters
    with pytest.raises(ValueError, match="MODEL.TDE.TEST_DIRECTION 'mean' is unknown"):
        model.test_direction = "mean"


def test_train_mean_direction_is_computed_after_training():
    from tde_det.modeling.meta_arch import set_train_mean_direction

    model = trained(make_model(alpha=1.0))
    model.test_direction = "train_mean"
    with pytest.raises(RuntimeError, match="set_train_mean_direction"):
        model(batch(2))
    loader = [batch(4), batch(2)]
    mean = set_train_mean_direction(model, loader)
    x = torch.cat([model.extract_features(model.preprocess_image(b)) for b in loader])
    torch.testing.assert_close(mean, x.mean(0))
    assert torch.equal(model.train_mean_direction, mean)
    assert not model.training  # eval mode restored
    z, b = model.logits_and_tde_bias(x)
    torch.testing.assert_close(b, model.classifier.tde_bias(x, mean))
    assert "train_mean_direction" not in model.state_dict()  # recomputed, not saved


def test_test_direction_config_keys():
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_list(["MODEL.META_ARCHITECTURE", "TDEImageClassifier",
                         "MODEL.BACKBONE.NAME", "build_cifar_resnet_backbone",
                         "MODEL.CIFAR_RESNET.DEPTH", "8", "MODEL.IMAGE_CLASSIFIER.NUM_CLASSES",
                         "5", "MODEL.DEVICE", "cpu", "MODEL.TDE.TEST_DIRECTION", "random",
                         "MODEL.TDE.RANDOM_DIRECTION_SEED", "3",
                         "MODEL.TDE.HEAD_DIRECTION_FORM", "average"])
    model = build_model(cfg)
    assert (model.test_direction, model.random_direction_seed) == ("random", 3)
    assert model.head_direction.form == "average"
    for key, value in (("TEST_DIRECTION", "mean"), ("HEAD_DIRECTION_FORM", "ema")):
        bad = cfg.clone()
        bad.merge_from_list([f"MODEL.TDE.{key}", value])
        with pytest.raises(ValueError, match=f"MODEL.TDE.{key} '{value}' is unknown"):
            build_model(bad)
