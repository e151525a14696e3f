"""The classification task module: dispatch, the mu schedule and its hook."""
from types import SimpleNamespace

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.utils.events import EventStorage

from tde_det import add_tde_config
from tde_det.engine import classification_task, task_for
from tde_det.engine.mu_schedule_hook import MuScheduleHook, scheduled_mu
from tde_det.layers import HeadDirection


def test_dispatch_to_the_classification_task():
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "TDEImageClassifier"
    assert "TDEImageClassifier" in classification_task.META_ARCHITECTURES
    assert task_for(cfg) is classification_task


@pytest.mark.parametrize("lr, mu", [(0.2, 0.9), (0.02, 0.9), (0.01, 0.95), (0.004, 0.98),
                                    (0.0, 1.0)])
def test_official_mu_schedule(lr, mu):
    # mu = 1 - 0.1 * min(50 * lr, 1)
    assert scheduled_mu(lr, 0.9, 50.0) == pytest.approx(mu)


def test_hook_sets_mu_of_every_head_direction_from_the_largest_lr():
    hds = [HeadDirection(4, 2, mu=0.9), HeadDirection(4, 2, mu=0.9)]
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD([{"params": [params[0]], "lr": 0.01},
                           {"params": [params[1]], "lr": 0.001}], lr=0.01)
    hook = MuScheduleHook(hds, base_mu=0.9, lr_scale=50.0)
    with EventStorage(0) as storage:
        hook.trainer = SimpleNamespace(optimizer=opt, storage=storage)
        hook.before_step()
        assert [h.mu for h in hds] == [pytest.approx(0.95)] * 2
        assert storage.latest()["head_direction_mu"][0] == pytest.approx(0.95)
    with pytest.raises(ValueError, match="no HeadDirection"):
        MuScheduleHook([], 0.9, 50.0)


def test_build_hooks_follows_the_config():
    cfg = get_cfg()
    add_tde_config(cfg)
    model = torch.nn.Sequential(HeadDirection(4, 2))
    trainer = SimpleNamespace(model=model)
    assert classification_task.build_hooks(cfg, trainer) == []  # "constant"
    cfg.MODEL.TDE.MU_SCHEDULE = "lr"
    cfg.MODEL.TDE.MU = 0.9
    (hook,) = classification_task.build_hooks(cfg, trainer)
    assert isinstance(hook, MuScheduleHook) and hook.head_directions == [model[0]]
    cfg.MODEL.TDE.MU_LR_SCALE = -50.0  # mu would leave [0, 1] at the first iteration
    with pytest.raises(ValueError, match=r"MODEL.TDE.MU_LR_SCALE must be a finite number >= 0.0, "
                                         r"got -50.0"):
        classification_task.build_hooks(cfg, trainer)
    cfg.MODEL.TDE.MU_SCHEDULE = "cosine"
    with pytest.raises(ValueError, match="MU_SCHEDULE"):
        classification_task.build_hooks(cfg, trainer)


def test_test_datasets_are_checked_before_training(tmp_path):
    from tde_det.engine import Trainer

    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "TDEImageClassifier"
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.DATASETS.TRAIN = ("cifar10_lt_r10_train",)
    cfg.DATASETS.TEST = ("cifar10_lt_r10_val", "cifar10_lt_r10_test")
    classification_task.check_datasets(cfg)
    cfg.DATASETS.TEST = ("cifar10_lt_r10_tset",)
    with pytest.raises(KeyError, match="DATASETS.TEST: 'cifar10_lt_r10_tset' is not a "
                                       "registered dataset; did you mean 'cifar10_lt_r10_test'"):
        Trainer(cfg)  # before the model and the data are built
    cfg.DATASETS.TEST, cfg.DATASETS.TRAIN = (), ("cifar10_lt_r10_trian",)
    with pytest.raises(KeyError, match="DATASETS.TRAIN: 'cifar10_lt_r10_trian' is not a"):
        Trainer(cfg)


def test_test_time_augmentation_is_refused_for_a_classifier():
    from tde_det.engine import check_test_time_augmentation

    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "TDEImageClassifier"
    check_test_time_augmentation(cfg)  # off: nothing to check
    cfg.TEST.AUG.ENABLED = True
    with pytest.raises(ValueError, match="TEST.AUG.ENABLED.*TDEImageClassifier is a classifier"):
        check_test_time_augmentation(cfg)
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    check_test_time_augmentation(cfg)  # detection: allowed


@pytest.mark.parametrize("key, value, match", [
    ("TOPK", 0, r"TEST.CLASSIFICATION.TOPK must be an integer >= 1, got 0"),
    ("IMS_PER_BATCH", 0, r"TEST.CLASSIFICATION.IMS_PER_BATCH must be an integer >= 1, got 0"),
    ("MANY_THRESHOLD", -1, r"TEST.CLASSIFICATION.MANY_THRESHOLD must be an integer >= 0"),
    ("FEW_THRESHOLD", 102, r"TEST.CLASSIFICATION.FEW_THRESHOLD=102 exceeds MANY_THRESHOLD=100 "
                           r"\+ 1: .* the groups would overlap"),
])
def test_evaluation_keys_are_checked_before_training(tmp_path, key, value, match):
    from tde_det.engine import Trainer

    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "TDEImageClassifier"
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ("cifar10_lt_r10_train",), ("cifar10_lt_r10_val",)
    classification_task.check_datasets(cfg)
    cfg.TEST.CLASSIFICATION[key] = value
    with pytest.raises(ValueError, match=match):
        Trainer(cfg)  # before the model and the data are built


def test_few_threshold_may_be_one_above_many_threshold():
    """FEW 101, MANY 100: n <= 100 is few and n >= 101 many (no medium group); no class fits
    two definitions."""
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.TEST.CLASSIFICATION.FEW_THRESHOLD = 101
    classification_task.check_evaluation_config(cfg)


def test_empty_train_or_test_splits_name_the_key(tmp_path):
    from tde_det.engine import Trainer

    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "TDEImageClassifier"
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (), ("cifar10_lt_r10_val",)
    with pytest.raises(ValueError, match="DATASETS.TRAIN is empty"):
        Trainer(cfg)
    cfg.DATASETS.TEST = ()
    with pytest.raises(ValueError, match="DATASETS.TEST is empty: there is nothing to evaluate"):
        classification_task.check_datasets(cfg, training=False)
