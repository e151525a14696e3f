"""TEST.PRECISE_BN: BatchNorm statistics are recomputed, the head direction is left as training
left it (Detectron2's own hook would move it)."""
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.engine import hooks

from tde_det import add_tde_config
from tde_det.data.classification import register_fashion_mnist_lt
from tde_det.data.classification.synthetic import write_fashion_mnist_idx
from tde_det.engine import Trainer
from tde_det.engine.trainer import PreciseBNKeepingHeadDirections

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    root = write_fashion_mnist_idx(str(tmp_path_factory.mktemp("fm")), per_class=20,
                                   test_per_class=2)
    register_fashion_mnist_lt("precise_bn_fm", 2, seed=0, val_per_class=1, root=root)
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "fashion_mnist_lt_r10_deconfound.yaml"))
    cfg.merge_from_list([
        "DATASETS.TRAIN", "('precise_bn_fm_train',)", "DATASETS.TEST", "('precise_bn_fm_test',)",
        "SOLVER.IMS_PER_BATCH", "16", "DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", "cpu",
        "TEST.PRECISE_BN.ENABLED", "True", "TEST.PRECISE_BN.NUM_ITER", "2",
        "OUTPUT_DIR", str(tmp_path_factory.mktemp("out"))])
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
