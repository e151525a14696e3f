"""TDECheckpointer: weights without head directions are refused where TDE would use them (a
plain Detectron2 CascadeROIHeads checkpoint, a classifier's), and accepted with TDE off."""
import os
import re

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg

from tde_det import add_tde_config
from tde_det.engine import TDECheckpointer, Trainer
from tde_det.layers import HeadDirection, NormalizedClassifier
from tde_det.modeling.backbone import CifarResNet
from tde_det.modeling.meta_arch import TDEImageClassifier

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "TinyLVIS/cascade_R_18_tde.yaml")
BUFFERS = [f"roi_heads.box_predictor.{s}.head_direction.ema" for s in range(3)]


def tiny_cfg(*opts):
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(list(opts))
    return cfg


@pytest.fixture(scope="module")
def plain_weights(tmp_path_factory):
    """A stock Detectron2 Cascade Mask R-CNN (CascadeROIHeads: no head directions) of the tiny
    config's sizes, saved by Detectron2's checkpointer."""
    folder = str(tmp_path_factory.mktemp("plain"))
    torch.manual_seed(0)
    model = Trainer.build_model(tiny_cfg("MODEL.ROI_HEADS.NAME", "CascadeROIHeads"))
    DetectionCheckpointer(model, save_dir=folder).save("plain")
    return os.path.join(folder, "plain.pth")


def test_plain_detectron2_weights_are_refused_with_tde(plain_weights):
    model = Trainer.build_model(tiny_cfg())
    with pytest.raises(RuntimeError) as err:
        TDECheckpointer(model).load(plain_weights)
    message = str(err.value)
    assert f"MODEL.WEIGHTS {plain_weights!r}" in message
    assert f"missing from the checkpoint: {', '.join(BUFFERS)}" in message
    assert "MODEL.TDE.TEST_TDE False (or MODEL.TDE.ALPHA 0)" in message


@pytest.mark.parametrize("opts", [("MODEL.TDE.TEST_TDE", False), ("MODEL.TDE.ALPHA", 0.0)])
def test_plain_detectron2_weights_load_with_tde_off(plain_weights, opts):
    model = Trainer.build_model(tiny_cfg(*opts))
    TDECheckpointer(model).load(plain_weights)
    plain = torch.load(plain_weights, map_location="cpu", weights_only=False)["model"]
    assert torch.equal(model.backbone.bottom_up.stem.conv1.weight,
                       plain["backbone.bottom_up.stem.conv1.weight"])


def test_zero_and_non_finite_head_directions_in_the_checkpoint(tmp_path):
    model = Trainer.build_model(tiny_cfg())
    for s in range(3):
        model.roi_heads.box_predictor[s].head_direction.ema.fill_(1.0)
    model.roi_heads.box_predictor[1].head_direction.ema.zero_()
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("zero")
    with pytest.raises(RuntimeError, match=re.escape(f"(zero in the checkpoint: {BUFFERS[1]})")):
        TDECheckpointer(Trainer.build_model(tiny_cfg())).load(str(tmp_path / "zero.pth"))
    model.roi_heads.box_predictor[1].head_direction.ema.fill_(float("nan"))
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("nan")
    with pytest.raises(FloatingPointError, match=re.escape(f"not finite in {BUFFERS[1]} (its")):
        TDECheckpointer(Trainer.build_model(tiny_cfg())).load(str(tmp_path / "nan.pth"))
    model.roi_heads.box_predictor[1].head_direction.ema.fill_(2.0)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("good")
    loaded = Trainer.build_model(tiny_cfg())
    TDECheckpointer(loaded).load(str(tmp_path / "good.pth"))
    assert torch.equal(loaded.roi_heads.box_predictor[1].head_direction.ema, torch.full((64,), 2.0))


def classifier(test_tde=True):
    return TDEImageClassifier(
        backbone=CifarResNet(depth=8), in_feature="res5",
        classifier=NormalizedClassifier(128, 5), head_direction=HeadDirection(128, 2, sync=False),
        alpha=1.5, test_tde=test_tde, pixel_mean=[0.0] * 3, pixel_std=[1.0] * 3)


def test_classifier_weights_without_head_direction(tmp_path):
    state = {k: v for k, v in classifier().state_dict().items() if k != "head_direction.ema"}
    torch.save({"model": state}, str(tmp_path / "no_direction.pth"))
    missing = re.escape("(missing from the checkpoint: head_direction.ema)")
    with pytest.raises(RuntimeError, match=missing):
        TDECheckpointer(classifier()).load(str(tmp_path / "no_direction.pth"))
    TDECheckpointer(classifier(test_tde=False)).load(str(tmp_path / "no_direction.pth"))
