"""The one trainer of tde-det: Detectron2's ``DefaultTrainer`` with the task's loaders, evaluators
and hooks.

Detection (TDE cascade ROI heads) and image classification share ``tools/train_net.py``; each task
module (``detection_task``, ``classification_task``) provides the same four functions and the
trainer asks the one that matches ``cfg.MODEL.META_ARCHITECTURE``.
"""
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from types import ModuleType
from typing import Dict, List, Optional, Sequence

from detectron2.config import CfgNode
from detectron2.engine import DefaultTrainer, HookBase, hooks
from detectron2.engine.train_loop import TrainerBase
from detectron2.evaluation.testing import flatten_results_dict
from detectron2.modeling import GeneralizedRCNNWithTTA
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import setup_logger

from tde_det.data import register_datasets_from_config
from tde_det.evaluation.ap_fixed import ap_fixed_csv_lines
from tde_det.evaluation.ap_fixed_inference import APFixedInference

from . import classification_task, detection_task
from .head_direction_hook import FiniteHeadDirections, named_head_directions

logger = logging.getLogger(__name__)


def task_for(cfg: CfgNode) -> ModuleType:
    """The task module (classification or detection) that serves this config."""
    if cfg.MODEL.META_ARCHITECTURE in classification_task.META_ARCHITECTURES:
        return classification_task
    return detection_task


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` whose loaders, evaluators and extra hooks come from the config's task.
    Before it builds anything, the datasets the config names are registered (as by
    :func:`~tde_det.engine.setup`, for a config built in Python) and checked (the task's
    ``check_datasets``): Detectron2 would meet the test splits only at the first evaluation."""

    def __init__(self, cfg: CfgNode):
        if not logging.getLogger("tde_det").handlers:
            setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="tde_det")
        register_datasets_from_config(cfg)
        self.check_datasets(cfg)
        super().__init__(cfg)

    def train(self) -> Optional[Dict]:
        """Detectron2's training loop; returns :attr:`last_eval_results` (the last evaluation's
        results, for classifiers as for detectors; empty without ``DATASETS.TEST``), not only
        when ``TEST.EXPECTED_RESULTS`` is set."""
        super().train()
        return self.last_eval_results

    @property
    def last_eval_results(self) -> Optional[Dict]:
        """The results of the last evaluation during or after training (``TEST.EVAL_PERIOD``,
        the final one), None before any."""
        return getattr(self, "_last_eval_results", None)

    def load_state_dict(self, state_dict: Dict) -> None:
        """Detectron2's, which also takes the trainer state that Detectron2 0.6 saved when a
        later Detectron2 runs: 0.6 kept the iteration and the hooks' states (the LR scheduler's)
        but not the optimizer's, which later versions expect in "_trainer" (a bare KeyError).
        The optimizer then starts afresh, as it did on every resume under 0.6, with a warning;
        so it does when its saved state does not fit the parameters (a model changed on purpose,
        ``RESUME_ALLOW_MODEL_CHANGE``)."""
        inner = state_dict.get("_trainer")
        if inner is not None and not _optimizer_state_fits(self.optimizer, inner.get("optimizer")):
            logger.warning("The checkpoint's optimizer state (momentum buffers) does not fit the "
                           "model's parameters (a changed model): it starts afresh")
            state_dict = dict(state_dict, _trainer=dict(inner,
                                                        optimizer=self.optimizer.state_dict()))
        if "_trainer" in state_dict or "state_dict" not in vars(DefaultTrainer):
            super().load_state_dict(state_dict)
            return
        TrainerBase.load_state_dict(self, state_dict)
        self._trainer.iter = self.iter
        lost = ["the optimizer's state (momentum buffers)"]
        if self.cfg.SOLVER.AMP.ENABLED:
            lost.append("the AMP grad scaler")
        logger.warning(
            f"Resuming from a checkpoint of Detectron2 0.6's trainer (no '_trainer' state): the "
            f"model, the iteration ({self.iter}) and the hooks' states (LR scheduler) are "
            f"restored; 0.6 did not save {' and '.join(lost)}, which start afresh.")

    @classmethod
    def check_datasets(cls, cfg: CfgNode, training: bool = True,
                       test: Optional[Sequence[str]] = None) -> None:
        """The task's checks of ``DATASETS.TEST`` (or of the splits ``test``) and, when
        ``training``, of ``DATASETS.TRAIN``, before the model is built: ``--eval-only`` and
        the tools call it with ``training=False``."""
        task_for(cfg).check_datasets(cfg, training=training, test=test)

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
        put into the ``EventStorage`` is written in the same iteration. Before the checkpointer
        and the evaluation, :class:`FiniteHeadDirections` stops training at a non-finite head
        direction. With ``TEST.AUG.ENABLED``, the model is also evaluated with test-time
        augmentation after training (:meth:`test_with_TTA`)."""
        check_test_time_augmentation(self.cfg)
        ret = super().build_hooks()
        directions = named_head_directions(self.model)
        if directions:  # before the checkpointer and evaluation see a non-finite x_bar
            at = next((i for i, h in enumerate(ret) if isinstance(h, (
                hooks.PreciseBN, hooks.PeriodicCheckpointer, hooks.EvalHook))), len(ret))
            ret.insert(at, FiniteHeadDirections(directions))
        extra = task_for(self.cfg).build_hooks(self.cfg, self)
        writer_at = next(
            (i for i, h in enumerate(ret) if isinstance(h, hooks.PeriodicWriter)), len(ret)
        )
        if self.cfg.TEST.AUG.ENABLED:  # after training, before the writer's last write
            extra = [*extra, hooks.EvalHook(0, lambda: self.test_with_TTA(self.cfg, self.model))]
        return ret[:writer_at] + list(extra) + ret[writer_at:]

    @classmethod
    def test(cls, cfg: CfgNode, model, evaluators=None) -> Dict:
        """Detectron2's ``test``, then the TDE settings the model was evaluated with
        (:func:`evaluated_tde_settings`) logged after the results and, during training, put
        into the ``EventStorage`` as ``eval/<key>`` (so ``metrics.json`` has them beside the
        AP). With ``TEST.AP_FIXED.ENABLED`` (detection) the model runs wrapped in
        :class:`~tde_det.evaluation.ap_fixed_inference.APFixedInference` (the same outputs, and
        the candidates the AP-fixed evaluator needs), and the AP-fixed metrics get their own
        "copypaste" lines (Detectron2's leave out names with "-")."""
        ap_fixed = cfg.TEST.AP_FIXED.ENABLED and task_for(cfg) is detection_task
        if ap_fixed:
            model = APFixedInference(model)
        results = super().test(cfg, model, evaluators)
        if ap_fixed and comm.is_main_process():
            nested = all(isinstance(v, Mapping) and all(isinstance(m, Mapping)
                                                        for m in v.values())
                         for v in results.values())
            for of_dataset in (results.values() if nested else [results]):
                for line in ap_fixed_csv_lines(of_dataset):
                    logger.info(line)
        settings = evaluated_tde_settings(model)
        if settings:
            logger.info("Evaluated with " + ", ".join(
                f"{k} {' / '.join(map(str, v))}" for k, v in settings.items()))
            try:
                storage = get_event_storage()
            except AssertionError:  # not training: --eval-only
                storage = None
            if storage is not None:
                storage.put_scalars(**{f"eval/{k}": float(v[0]) for k, v in settings.items()
                                       if len(v) == 1}, smoothing_hint=False)
        return results

    @classmethod
    def test_with_TTA(cls, cfg: CfgNode, model) -> Dict:
        """Evaluate ``model`` with Detectron2's test-time augmentation (``TEST.AUG``: the
        ``MIN_SIZES`` and, with ``FLIP``, their flips, merged by ``GeneralizedRCNNWithTTA``) on
        every ``DATASETS.TEST``; results under the metrics' names + "_TTA", files in
        ``OUTPUT_DIR/inference_TTA``. Detection only: a classifier has no TTA."""
        check_test_time_augmentation(cfg)
        if cfg.TEST.AP_FIXED.ENABLED:  # the merged boxes of TTA come without candidates
            logger.info("test-time augmentation reports the standard metrics only (no "
                        "AP-fixed)")
            cfg = cfg.clone()
            cfg.defrost()
            cfg.TEST.AP_FIXED.ENABLED = False
            cfg.freeze()
        logger.info("Evaluating with test-time augmentation (TEST.AUG) ...")
        evaluators = [cls.build_evaluator(cfg, name,
                                          os.path.join(cfg.OUTPUT_DIR, "inference_TTA", name))
                      for name in cfg.DATASETS.TEST]
        results = cls.test(cfg, GeneralizedRCNNWithTTA(cfg, model), evaluators)
        return OrderedDict((task + "_TTA", metrics) for task, metrics in results.items())


def _optimizer_state_fits(optimizer, saved: Optional[Dict]) -> bool:
    """Whether an optimizer ``state_dict`` can be loaded into ``optimizer``: the same parameter
    groups and sizes, every saved per-parameter tensor of its parameter's shape."""
    if saved is None:
        return True
    params = [p for group in optimizer.param_groups for p in group["params"]]
    sizes = [len(g["params"]) for g in saved.get("param_groups", [])]
    if sizes != [len(g["params"]) for g in optimizer.param_groups]:
        return False
    for index, state in saved.get("state", {}).items():
        if not 0 <= int(index) < len(params):
            return False
        for value in state.values():
            if hasattr(value, "shape") and value.dim() > 0 and value.shape != params[index].shape:
                return False
    return True


def write_eval_only_metrics(output_dir: str, results: Dict, model) -> None:
    """``--eval-only``: append one row to ``output_dir/metrics.json`` (training's file, which
    Detectron2 writes only when training) with the results as ``bbox/AP``... and the TDE
    settings the model was evaluated with as ``eval/MODEL.TDE.*`` (True as 1.0)."""
    row = {k: float(v) for k, v in flatten_results_dict(results).items()}
    row.update({f"eval/{k}": float(v[0]) for k, v in evaluated_tde_settings(model).items()
                if len(v) == 1})
    with PathManager.open(os.path.join(output_dir, "metrics.json"), "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")


def evaluated_tde_settings(model) -> Dict[str, List]:
    """``{"MODEL.TDE.ALPHA": [...], "MODEL.TDE.TEST_TDE": [...], "MODEL.TDE.BACKGROUND_EXEMPTED":
    [...]}``: the distinct values of the TDE modules of ``model`` (box predictors, classifier),
    read from the model, not the config (one value each unless they differ); the last key for
    detectors only. Empty for a model without TDE modules."""
    attributes = {"MODEL.TDE.ALPHA": "alpha", "MODEL.TDE.TEST_TDE": "test_tde",
                  "MODEL.TDE.BACKGROUND_EXEMPTED": "background_exempted"}
    modules = [m for m in model.modules() if hasattr(m, "test_tde") and hasattr(m, "alpha")]
    settings = {}
    for key, name in attributes.items():
        values = [getattr(m, name) for m in modules if hasattr(m, name)]
        if values:
            settings[key] = sorted(set(values))
    return settings


def check_test_time_augmentation(cfg: CfgNode) -> None:
    """Raise a clear error for ``TEST.AUG.ENABLED`` with a classifier: Detectron2's
    test-time augmentation merges boxes (``GeneralizedRCNNWithTTA``)."""
    if cfg.TEST.AUG.ENABLED and task_for(cfg) is classification_task:
        raise ValueError(
            f"TEST.AUG.ENABLED is Detectron2's test-time augmentation of detectors "
            f"(GeneralizedRCNNWithTTA); {cfg.MODEL.META_ARCHITECTURE} is a classifier: set "
            f"TEST.AUG.ENABLED False")
