"""Loaders, evaluators and hooks of the detection task (TDE cascade ROI heads on LVIS)."""
import logging
import os
from typing import List, Optional, Sequence

from detectron2.config import CfgNode
from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.data.build import _train_loader_from_config
from detectron2.data.common import DatasetFromList
from detectron2.engine import HookBase
from detectron2.evaluation import COCOEvaluator
from detectron2.utils.file_io import PathManager

from tde_det.data.detection import (
    CheckedDatasetMapper,
    MapSkippingUnreadable,
    check_lvis_api_fields,
)
from tde_det.evaluation.ap_fixed import APFixedLVISEvaluator, check_ap_fixed_settings
from tde_det.evaluation.lvis_records import RecordsLVISEvaluator

from .dataset_checks import check_config_splits
from .head_direction_hook import HeadDirectionPrinter

__all__ = ["build_train_loader", "build_test_loader", "build_evaluator", "build_hooks",
           "check_ap_fixed_config", "check_num_classes", "check_datasets",
           "untrained_frozen_backbone_warning"]

logger = logging.getLogger(__name__)


def check_num_classes(cfg: CfgNode, dataset_name: str) -> None:
    """Raise a clear error if the dataset's number of categories is not
    MODEL.ROI_HEADS.NUM_CLASSES (LVIS v1.0: 1203, v0.5: 1230)."""
    classes = getattr(MetadataCatalog.get(dataset_name), "thing_classes", None)
    if classes is not None and len(classes) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
        raise ValueError(f"Dataset {dataset_name!r} has {len(classes)} categories but "
                         f"MODEL.ROI_HEADS.NUM_CLASSES is {cfg.MODEL.ROI_HEADS.NUM_CLASSES}; "
                         f"set MODEL.ROI_HEADS.NUM_CLASSES {len(classes)}")


def build_train_loader(cfg: CfgNode):
    """Detectron2's train loader (DATALOADER.SAMPLER_TRAIN "RepeatFactorTrainingSampler" with
    DATALOADER.REPEAT_THRESHOLD gives LVIS's repeat-factor sampling). An image that cannot be
    read is an error naming it, or with DATASETS.INVALID_ANNOTATIONS skip a logged skip
    (:class:`~tde_det.data.detection.CheckedDatasetMapper`)."""
    for name in cfg.DATASETS.TRAIN:
        check_num_classes(cfg, name)
    # Detectron2's loader from its own reading of the config, the images mapped by
    # MapSkippingUnreadable (the dicts kept serialised, as Detectron2 keeps them)
    kwargs = _train_loader_from_config(cfg, CheckedDatasetMapper(cfg, True))
    dataset = kwargs.pop("dataset")
    if isinstance(dataset, list):
        dataset = DatasetFromList(dataset, copy=False)
    return build_detection_train_loader(
        dataset=MapSkippingUnreadable(dataset, kwargs.pop("mapper")), mapper=None, **kwargs)


def build_test_loader(cfg: CfgNode, dataset_name: str):
    """Detectron2's test loader; an image that cannot be read is an error naming it."""
    check_num_classes(cfg, dataset_name)
    return build_detection_test_loader(cfg, dataset_name,
                                       mapper=CheckedDatasetMapper(cfg, False))


EVALUATOR_TYPES = ("lvis", "coco")


def _evaluator_type_problem(dataset_name: str) -> Optional[str]:
    evaluator_type = getattr(MetadataCatalog.get(dataset_name), "evaluator_type", None)
    if evaluator_type in EVALUATOR_TYPES:
        return None
    return (f"No detection evaluator for dataset {dataset_name!r} with metadata "
            f"evaluator_type={evaluator_type!r}; tde-det evaluates 'lvis' and 'coco' "
            f"datasets (register LVIS-format data with DATASETS.LVIS_CUSTOM.*)")


def _ap_fixed_problem(dataset_name: str) -> str:
    evaluator_type = getattr(MetadataCatalog.get(dataset_name), "evaluator_type", None)
    return (f"TEST.AP_FIXED.ENABLED True: AP-fixed is an LVIS metric (per-category top K "
            f"with the LVIS API, frequency groups r/c/f), but {dataset_name!r} has "
            f"evaluator_type={evaluator_type!r}; evaluate an LVIS split (metadata "
            f"evaluator_type 'lvis' with its json_file) or set TEST.AP_FIXED.ENABLED False")


def check_ap_fixed_config(cfg: CfgNode, key: str, splits: Sequence[str]) -> None:
    """With ``TEST.AP_FIXED.ENABLED``: the ``TEST.AP_FIXED`` values, and every split an LVIS
    one with its annotation file (a ValueError naming the key and the split)."""
    if not cfg.TEST.AP_FIXED.ENABLED:
        return
    fixed = cfg.TEST.AP_FIXED
    check_ap_fixed_settings(fixed.DETS_PER_CLASS, fixed.DETS_PER_IMAGE, fixed.SCORE_THRESH)
    for name in splits:
        metadata = MetadataCatalog.get(name)
        if getattr(metadata, "evaluator_type", None) != "lvis" \
                or not getattr(metadata, "json_file", None):
            raise ValueError(f"{key}: {_ap_fixed_problem(name)}")
    if fixed.SCORE_THRESH < cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST:
        logger.info(f"AP-fixed candidates come from the box head's pass at "
                    f"MODEL.ROI_HEADS.SCORE_THRESH_TEST {cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST}"
                    f" (TEST.AP_FIXED.SCORE_THRESH {fixed.SCORE_THRESH} is below it)")


def check_datasets(cfg: CfgNode, training: bool = True,
                   test: Optional[Sequence[str]] = None) -> None:
    """Before training or evaluating: every ``DATASETS.TEST`` split (and, when ``training``,
    ``DATASETS.TRAIN`` split) is registered; every test split has
    ``MODEL.ROI_HEADS.NUM_CLASSES`` classes, an evaluator, and its annotation file (metadata
    ``json_file``) exists and, for the LVIS evaluator, has what the LVIS API reads
    (:func:`~tde_det.data.detection.check_lvis_api_fields`; the only check that parses a
    file). A clear error now rather than at the first evaluation. ``test``: the splits of a
    tool's ``--dataset``, checked instead of ``DATASETS.TEST``."""
    key, test = check_config_splits(cfg, training, test)
    for name in test:
        check_num_classes(cfg, name)
        problem = _evaluator_type_problem(name)
        if problem:
            raise ValueError(f"{key}: {problem}")
        json_file = getattr(MetadataCatalog.get(name), "json_file", None)
        if json_file and not PathManager.isfile(json_file):
            raise FileNotFoundError(f"{key}: the annotation file of {name!r}, "
                                    f"{json_file}, does not exist; evaluating the model "
                                    f"needs it")
        if json_file and getattr(MetadataCatalog.get(name), "evaluator_type", None) == "lvis":
            check_lvis_api_fields(json_file, f"{key}: {name!r}", masks=cfg.MODEL.MASK_ON)
    check_ap_fixed_config(cfg, key, test)


def build_evaluator(cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None):
    """``LVISEvaluator`` or ``COCOEvaluator`` from the dataset's metadata ``evaluator_type``,
    writing its files to ``output_folder`` (None: ``OUTPUT_DIR/inference``; "": no files)."""
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
    evaluator_type = getattr(MetadataCatalog.get(dataset_name), "evaluator_type", None)
    tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
    if evaluator_type == "lvis" and cfg.TEST.AP_FIXED.ENABLED:
        fixed = cfg.TEST.AP_FIXED  # the standard metrics and AP-fixed beside them
        return APFixedLVISEvaluator(dataset_name, tasks, output_dir=output_folder,
                                    max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
                                    fast_eval=cfg.TEST.FAST_LVIS_EVAL,
                                    dets_per_class=fixed.DETS_PER_CLASS,
                                    dets_per_image=fixed.DETS_PER_IMAGE,
                                    score_thresh=fixed.SCORE_THRESH)
    if evaluator_type == "lvis":
        # LVISEvaluator, which the alpha sweep can also give shared mask encodings
        return RecordsLVISEvaluator(dataset_name, tasks, output_dir=output_folder,
                                    max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
                                    fast_eval=cfg.TEST.FAST_LVIS_EVAL)
    if cfg.TEST.AP_FIXED.ENABLED:
        raise ValueError(_ap_fixed_problem(dataset_name))
    if evaluator_type == "coco":
        # The compiled COCOeval may be missing (Detectron2 without its C++ extension).
        return COCOEvaluator(dataset_name, tasks, output_dir=output_folder,
                             max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
                             use_fast_impl=False)
    raise ValueError(_evaluator_type_problem(dataset_name))


def untrained_frozen_backbone_warning(cfg: CfgNode) -> Optional[str]:
    """A warning when training starts from no weights (``MODEL.WEIGHTS ""``) with parts of the
    backbone frozen (``MODEL.BACKBONE.FREEZE_AT`` > 0 or ``FrozenBN``): they would stay at their
    random initialisation for the whole run. None when the set-up is fine."""
    if cfg.MODEL.WEIGHTS:
        return None
    frozen = []
    if cfg.MODEL.BACKBONE.FREEZE_AT > 0:
        frozen.append(f"MODEL.BACKBONE.FREEZE_AT {cfg.MODEL.BACKBONE.FREEZE_AT}")
    if "resnet" in cfg.MODEL.BACKBONE.NAME and cfg.MODEL.RESNETS.NORM == "FrozenBN":
        frozen.append("MODEL.RESNETS.NORM FrozenBN")
    if not frozen:
        return None
    return (f"Training from random weights (MODEL.WEIGHTS is empty) with {' and '.join(frozen)}: "
            f"the frozen layers keep their random initialisation. Set MODEL.WEIGHTS to ImageNet "
            f"weights (e.g. detectron2://ImageNetPretrained/MSRA/R-101.pkl), or train from scratch "
            f"with MODEL.BACKBONE.FREEZE_AT 0 and MODEL.RESNETS.NORM BN/SyncBN/GN.")


def build_hooks(cfg: CfgNode, trainer) -> List[HookBase]:
    """The console line of the head-direction metrics, unless ``MODEL.TDE.LOG_PERIOD`` is 0.
    Warns (once, at the start of training) about a frozen backbone that was never loaded."""
    warning = untrained_frozen_backbone_warning(cfg)
    if warning:
        logger.warning(warning)
    return [HeadDirectionPrinter()] if cfg.MODEL.TDE.LOG_PERIOD > 0 else []
