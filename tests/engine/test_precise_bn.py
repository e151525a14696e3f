"""TEST.PRECISE_BN: BatchNorm statistics are recomputed, the head direction is left as training
left it (PreciseBN's passes run without gradients: not training steps)."""
import pytest
import torch
from detectron2.engine import hooks
from tests.helpers.tiny_fashion_mnist import tiny_fashion_mnist_cfg

from tde_det.engine import Trainer


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    cfg = tiny_fashion_mnist_cfg("precise_bn_fm", str(tmp_path_factory.mktemp("fm")), True,
                                 "TEST.PRECISE_BN.ENABLED", "True", "TEST.PRECISE_BN.NUM_ITER", "2")
    torch.manual_seed(0)
    return Trainer(cfg)


def _state(model):
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    return model.head_direction.ema.clone(), bn.running_mean.clone(), bn


def test_precise_bn_keeps_the_head_direction(trainer):
    (hook,) = [h for h in trainer._hooks if isinstance(h, hooks.PreciseBN)]
    assert not hook._disabled
    model = trainer.model.train()
    model.head_direction.update(torch.randn(3, model.head_direction.dim))  # a trained x_bar
    ema, running_mean, bn = _state(model)
    hook.update_stats()
    assert torch.equal(model.head_direction.ema, ema)
    assert not torch.equal(bn.running_mean, running_mean)  # the hook did run the model


def test_a_training_step_moves_it(trainer):
    """The control: the same forward passes with gradients (a training step) update x_bar."""
    model = trainer.model.train()
    ema, _, _ = _state(model)
    model(next(iter(trainer.build_train_loader(trainer.cfg))))
    assert not torch.equal(model.head_direction.ema, ema)
