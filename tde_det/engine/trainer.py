"""The one trainer of tde-det: Detectron2's ``DefaultTrainer`` with the task's loaders, evaluators
and hooks.

Detection (TDE cascade ROI heads) and image classification share ``tools/train_net.py``; each task
module (``detection_task``, ``classification_task``) provides the same four functions and the
trainer asks the one that matches ``cfg.MODEL.META_ARCHITECTURE``.
"""
from types import ModuleType
from typing import List, Optional

from detectron2.config import CfgNode
from detectron2.engine import DefaultTrainer, HookBase, hooks

from tde_det.layers import frozen_head_directions

from . import classification_task, detection_task
from .head_direction_hook import HeadDirectionLogger


def task_for(cfg: CfgNode) -> ModuleType:
    """The task module (classification or detection) that serves this config."""
    if cfg.MODEL.META_ARCHITECTURE in classification_task.META_ARCHITECTURES:
        return classification_task
    return detection_task


class PreciseBNKeepingHeadDirections(hooks.PreciseBN):
    """Detectron2's ``PreciseBN`` (``TEST.PRECISE_BN``), whose forward passes (training mode,
    to recompute BatchNorm statistics; not training steps) leave every head direction x_bar
    as training left it (:func:`~tde_det.layers.frozen_head_directions`). Detectron2's hook
    would move x_bar by ``TEST.PRECISE_BN.NUM_ITER`` updates."""

    def update_stats(self):
        if self._disabled:
            return
        with frozen_head_directions(self._model):
            super().update_stats()


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` whose loaders, evaluators and extra hooks come from the config's task."""

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        return task_for(cfg).build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        return task_for(cfg).build_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None):
        return task_for(cfg).build_evaluator(cfg, dataset_name, output_folder)

    def build_hooks(self) -> List[HookBase]:
        """Detectron2's hooks, with the task's hooks placed before the writer so that what they
        put into the ``EventStorage`` is written in the same iteration.

        The writer runs every 20 iterations and writes only the latest value of each scalar, so
        a ``MODEL.TDE.LOG_PERIOD`` below 20 would lose all but one head-direction log of each 20
        iterations from ``metrics.json``: the writer then runs every ``LOG_PERIOD`` iterations
        (so does the console's line). Detectron2's ``PreciseBN`` hook becomes
        :class:`PreciseBNKeepingHeadDirections`."""
        ret = super().build_hooks()
        for i, h in enumerate(ret):  # Detectron2 0.6's attributes
            if type(h) is hooks.PreciseBN and not h._disabled:
                ret[i] = PreciseBNKeepingHeadDirections(h._period, h._model, h._data_loader,
                                                        h._num_iter)
        extra = task_for(self.cfg).build_hooks(self.cfg, self)
        writer_at = next(
            (i for i, h in enumerate(ret) if isinstance(h, hooks.PeriodicWriter)), len(ret)
        )
        periods = [h.period for h in extra if isinstance(h, HeadDirectionLogger)]
        period = min(periods, default=0)
        if writer_at < len(ret) and 0 < period < ret[writer_at]._period:
            # Detectron2 0.6 keeps the period and the writers in these attributes
            ret[writer_at] = hooks.PeriodicWriter(ret[writer_at]._writers, period=period)
        return ret[:writer_at] + list(extra) + ret[writer_at:]
