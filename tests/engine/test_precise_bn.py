"""TEST.PRECISE_BN: BatchNorm statistics are recomputed, the head direction is left as training
left it (Detectron2's own hook would move it)."""
import pytest
import torch
from detectron2.engine import hooks
from tests.helpers.tiny_fashion_mnist import tiny_fashion_mnist_cfg

from tde_det.engine import Trainer
from tde_det.engine.trainer import PreciseBNKeepingHeadDirections


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
    assert type(hook) is PreciseBNKeepingHeadDirections and not hook._disabled
    model = trainer.model.train()
    model.head_direction.update(torch.randn(3, model.head_direction.dim))  # a trained x_bar
    ema, running_mean, bn = _state(model)
    hook.update_stats()
    assert torch.equal(model.head_direction.ema, ema)
    assert not torch.equal(bn.running_mean, running_mean)  # the hook did run the model
    assert model.head_direction.frozen is False  # restored


def test_detectron2_precise_bn_would_move_it(trainer):
    """The control: Detectron2's hook on the same model updates x_bar in its forward passes."""
    model = trainer.model.train()
    ema, _, _ = _state(model)
    hooks.PreciseBN(0, model, trainer.build_train_loader(trainer.cfg), 2).update_stats()
    assert not torch.equal(model.head_direction.ema, ema)
