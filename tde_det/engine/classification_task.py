"""Loaders, evaluators and hooks of the image-classification task (ImageNet-LT, CIFAR-LT)."""
import os
from typing import List, Optional, Sequence

from detectron2.config import CfgNode
from detectron2.engine import HookBase

from tde_det.data.classification import (
    build_classification_test_loader,
    build_classification_train_loader,
)
from tde_det.evaluation import ClassificationEvaluator
from tde_det.layers import HeadDirection
from tde_det.layers.checks import check_real

from .dataset_checks import check_config_splits
from .mu_schedule_hook import MuScheduleHook

__all__ = ["META_ARCHITECTURES", "build_train_loader", "build_test_loader", "build_evaluator",
           "build_hooks", "check_datasets", "check_evaluation_config"]

META_ARCHITECTURES = frozenset({"TDEImageClassifier"})

MU_SCHEDULES = ("constant", "lr")


def check_datasets(cfg: CfgNode, training: bool = True,
                   test: Optional[Sequence[str]] = None) -> None:
    """Before training or evaluating: every ``DATASETS.TEST`` split (and, when ``training``,
    ``DATASETS.TRAIN`` split) is registered (a clear error now rather than at the first
    evaluation). ``test``: the splits of a tool's ``--dataset``, checked instead of
    ``DATASETS.TEST``."""
    check_config_splits(cfg, training, test)
    check_evaluation_config(cfg)
    if cfg.TEST.AP_FIXED.ENABLED:
        raise ValueError(f"TEST.AP_FIXED.ENABLED True: AP-fixed is an LVIS detection metric; "
                         f"{cfg.MODEL.META_ARCHITECTURE} is a classifier: set "
                         f"TEST.AP_FIXED.ENABLED False")


def check_evaluation_config(cfg: CfgNode) -> None:
    """``TEST.CLASSIFICATION``'s batch size, top-k and shot-group thresholds, checked before
    training rather than at the first evaluation; a ValueError names the key."""
    c = cfg.TEST.CLASSIFICATION
    for key, low in (("IMS_PER_BATCH", 1), ("TOPK", 1), ("MANY_THRESHOLD", 0),
                     ("FEW_THRESHOLD", 0)):
        value = c.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"TEST.CLASSIFICATION.{key} must be an integer >= {low}, "
                             f"got {value!r}")
    if c.FEW_THRESHOLD > c.MANY_THRESHOLD + 1:
        raise ValueError(f"TEST.CLASSIFICATION.FEW_THRESHOLD={c.FEW_THRESHOLD} exceeds "
                         f"MANY_THRESHOLD={c.MANY_THRESHOLD} + 1: a class with n training "
                         f"images is few when n < FEW_THRESHOLD and many when n > "
                         f"MANY_THRESHOLD, so the groups would overlap")


def build_train_loader(cfg: CfgNode):
    return build_classification_train_loader(cfg)


def build_test_loader(cfg: CfgNode, dataset_name: str):
    return build_classification_test_loader(cfg, dataset_name)


def build_evaluator(cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None):
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
    c = cfg.TEST.CLASSIFICATION
    return ClassificationEvaluator(dataset_name, output_dir=output_folder,
                                   many_threshold=c.MANY_THRESHOLD, few_threshold=c.FEW_THRESHOLD,
                                   topk=c.TOPK, alpha=cfg.MODEL.TDE.ALPHA)


def build_hooks(cfg: CfgNode, trainer) -> List[HookBase]:
    """The mu schedule hook when ``MODEL.TDE.MU_SCHEDULE`` is "lr"."""
    schedule = cfg.MODEL.TDE.MU_SCHEDULE
    if schedule not in MU_SCHEDULES:
        raise ValueError(f"MODEL.TDE.MU_SCHEDULE must be one of {MU_SCHEDULES}, got {schedule!r}")
    if schedule == "constant":
        return []
    check_real("MODEL.TDE.MU_LR_SCALE", cfg.MODEL.TDE.MU_LR_SCALE, 0.0, low_inclusive=True)
    head_directions = [m for m in trainer.model.modules() if isinstance(m, HeadDirection)]
    return [MuScheduleHook(head_directions, cfg.MODEL.TDE.MU, cfg.MODEL.TDE.MU_LR_SCALE)]
