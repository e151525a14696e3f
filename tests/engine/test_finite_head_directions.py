"""FiniteHeadDirections: training stops at the first iteration whose head direction is not finite
(the loss does not use it, so training would go on with a NaN x_bar), naming stage and
iteration, for the detector's cascade stages and for the image classifier."""
import os
from types import SimpleNamespace

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.engine import HookBase, hooks
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from tests.helpers.tiny_fashion_mnist import tiny_fashion_mnist_cfg

from tde_det import add_tde_config
from tde_det.data.detection.synthetic import write_tiny_lvis
from tde_det.engine import Trainer
from tde_det.engine.head_direction_hook import FiniteHeadDirections, named_head_directions
from tde_det.modeling.roi_heads import TDEFastRCNNOutputLayers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class NaNAt(HookBase):
    """Puts a NaN into ``direction``'s x_bar before iteration ``it`` (a diverged update)."""

    def __init__(self, direction, it):
        self.direction, self.it = direction, it

    def before_step(self):
        if self.trainer.iter == self.it:
            self.direction.ema[0] = float("nan")


def test_a_non_finite_feature_batch_stops_at_that_iteration():
    predictors = torch.nn.ModuleList([TDEFastRCNNOutputLayers(
        ShapeSpec(channels=4), box2box_transform=Box2BoxTransform((10.0, 10, 5, 5)),
        num_classes=2, cls_agnostic_bbox_reg=True, mu=0.9, sync_head_direction=False).train()
        for _ in range(3)])
    model = torch.nn.Module()
    model.roi_heads = torch.nn.Module()
    model.roi_heads.box_predictor = predictors
    hook = FiniteHeadDirections(named_head_directions(model))
    hook.trainer = SimpleNamespace(iter=0)
    labels = torch.tensor([0, 1, 2])
    for it in range(3):
        hook.trainer.iter = it
        for k, p in enumerate(predictors):
            x = torch.rand(3, 4)
            if (k, it) == (1, 2):
                x[0, 1] = float("inf")  # a foreground row
            p(x, labels)
        if it < 2:
            hook.after_step()
    with pytest.raises(FloatingPointError, match=r"at iteration=2: stage 1 \(buffer "
                                                 r"'roi_heads.box_predictor.1.head_direction.ema'\)"):
        hook.after_step()


@pytest.fixture(scope="module")
def lvis(tmp_path_factory):
    return write_tiny_lvis(str(tmp_path_factory.mktemp("lvis")), num_train=4, num_val=2)


def test_detection_training_stops_naming_the_stage(lvis, tmp_path):
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "TinyLVIS/cascade_R_18_tde.yaml"))
    cfg.merge_from_list([
        "DATASETS.LVIS_CUSTOM.NAMES", "('finite_hd_train',)",
        "DATASETS.LVIS_CUSTOM.JSON_FILES", f"('{lvis['train']}',)",
        "DATASETS.LVIS_CUSTOM.IMAGE_ROOTS", f"('{lvis['image_root']}',)",
        "DATASETS.TRAIN", "('finite_hd_train',)", "DATASETS.TEST", "()",
        "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "1", "OUTPUT_DIR", str(tmp_path)])
    trainer = Trainer(cfg)
    kinds = [type(h) for h in trainer._hooks]
    assert kinds.index(FiniteHeadDirections) < kinds.index(hooks.PeriodicCheckpointer)
    trainer.register_hooks([NaNAt(trainer.model.roi_heads.box_predictor[1].head_direction, 1)])
    with pytest.raises(FloatingPointError, match=r"at iteration=1: stage 1 \(buffer "
                                                 r"'roi_heads.box_predictor.1.head_direction.ema'\)"):
        trainer.train()
    # the checkpointer (every iteration) saved iteration 0 only: not the NaN one
    assert not os.path.exists(tmp_path / "model_0000001.pth")
    assert os.path.exists(tmp_path / "model_0000000.pth")


def test_classifier_training_stops_too(tmp_path):
    trainer = Trainer(tiny_fashion_mnist_cfg("finite_hd_fm", str(tmp_path), False,
                                             "SOLVER.MAX_ITER", "5"))
    trainer.register_hooks([NaNAt(trainer.model.head_direction, 3)])
    with pytest.raises(FloatingPointError,
                       match=r"at iteration=3: \(buffer 'head_direction.ema'\)"):
        trainer.train()
