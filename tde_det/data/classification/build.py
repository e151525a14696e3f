"""Train and test loaders of the classification task, on Detectron2's data API."""
import logging
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.data import (
    DatasetCatalog,
    DatasetFromList,
    MapDataset,
    MetadataCatalog,
    build_detection_train_loader,
)
from detectron2.data.samplers import InferenceSampler
from detectron2.utils.file_io import PathManager

from ..detection import check_invalid_annotation_policy
from ..map_skipping import MapSkippingUnreadable
from .mapper import ClassificationDatasetMapper
from .split_file import max_label, register_split_file_dataset

__all__ = [
    "build_classification_train_loader",
    "build_classification_test_loader",
    "existing_image_files",
    "get_classification_dataset_dicts",
    "register_split_file_datasets_from_config",
]

logger = logging.getLogger(__name__)
_MAX_LISTED = 10  # missing files named in a message


def register_split_file_datasets_from_config(cfg) -> None:
    """Register ``<NAME>_{train,val,test}`` from ``cfg.DATASETS.SPLIT_FILE`` (a user's image
    folder + split files); a no-op when NAME is empty.

    Registering the same files again is a no-op; a name already registered otherwise (a built-in
    dataset, or other files) raises ``ValueError`` before anything is registered.
    """
    c = cfg.DATASETS.SPLIT_FILE
    if not c.NAME:
        return
    if not c.TRAIN:
        raise ValueError("DATASETS.SPLIT_FILE.TRAIN must be set (its per-class counts define the "
                         "many/medium/few groups)")
    num_classes = c.NUM_CLASSES or max_label(c.TRAIN) + 1
    todo = {}
    for split, path in {"train": c.TRAIN, "val": c.VAL, "test": c.TEST}.items():
        name = f"{c.NAME}_{split}"
        if not path:
            continue
        if name not in DatasetCatalog.list():
            todo[name] = path
            continue
        meta = MetadataCatalog.get(name)
        old = (meta.get("split_file"), meta.get("image_root"), meta.get("num_classes"))
        if old != (path, c.IMAGE_ROOT, num_classes):
            raise ValueError(
                f"DATASETS.SPLIT_FILE.NAME {c.NAME!r}: dataset {name!r} is already registered "
                + (f"with split file {old[0]}, image root {old[1]} and {old[2]} classes"
                   if old[0] else "(a built-in dataset or one registered from Python)")
                + f", not {path} under {c.IMAGE_ROOT} with {num_classes} classes; "
                "choose another NAME")
    for name, path in todo.items():
        register_split_file_dataset(name, c.IMAGE_ROOT, path, num_classes,
                                    train_dataset=f"{c.NAME}_train")


def existing_image_files(dicts: List[Dict], dataset_name: str, skip: bool) -> List[Dict]:
    """``dicts`` without those whose "file_name" is not a file (dicts with an in-memory image
    are kept). A missing file is a ``FileNotFoundError`` that lists up to ten of them with their
    count; with ``skip`` (training with ``DATASETS.INVALID_ANNOTATIONS skip``) they are dropped
    and logged the same way, unless none exists."""
    missing = [i for i, d in enumerate(dicts)
               if "file_name" in d and not PathManager.isfile(d["file_name"])]
    if not missing:
        return dicts
    listed = "\n  ".join(dicts[i]["file_name"] for i in missing[:_MAX_LISTED])
    more = f"\n  ... and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
    what = (f"{len(missing)} of the {len(dicts)} image files of dataset {dataset_name} do not "
            f"exist:\n  {listed}{more}\n")
    if not skip or len(missing) == len(dicts):
        raise FileNotFoundError(
            what + "Check the image root (DATASETS.SPLIT_FILE.IMAGE_ROOT, or the dataset's folder "
            "under $DETECTRON2_DATASETS); to train without them set "
            "DATASETS.INVALID_ANNOTATIONS skip (DATASETS.CHECK_IMAGE_FILES False skips this "
            "check; evaluation needs every image).")
    logger.warning(what + "They are left out of training (DATASETS.INVALID_ANNOTATIONS skip).")
    dropped = set(missing)
    return [d for i, d in enumerate(dicts) if i not in dropped]


def get_classification_dataset_dicts(names: Sequence[str], num_classes: int,
                                     check_files: bool = False,
                                     skip_missing: bool = False) -> List[Dict]:
    """Concatenated dicts of the datasets ``names``, each checked to have ``num_classes``;
    with ``check_files`` each image file must exist (:func:`existing_image_files`)."""
    if isinstance(names, str):
        names = [names]
    dicts = []
    for name in names:
        meta = MetadataCatalog.get(name)
        if meta.get("num_classes", num_classes) != num_classes:
            raise ValueError(f"dataset {name} has {meta.num_classes} classes but "
                             f"MODEL.IMAGE_CLASSIFIER.NUM_CLASSES is {num_classes}")
        d = DatasetCatalog.get(name)
        if not d:
            raise ValueError(f"dataset {name} is empty")
        if check_files:
            d = existing_image_files(d, name, skip_missing)
        logger.info(f"Dataset {name}: {len(d)} images, {num_classes} classes")
        dicts.extend(d)
    return dicts


def build_classification_train_loader(cfg, mapper=None):
    """Infinite loader of lists of ``SOLVER.IMS_PER_BATCH / world size`` mapped dicts
    (``TrainingSampler``, no aspect-ratio grouping)."""
    skip = check_invalid_annotation_policy(cfg.DATASETS.INVALID_ANNOTATIONS) == "skip"
    dicts = get_classification_dataset_dicts(cfg.DATASETS.TRAIN,
                                             cfg.MODEL.IMAGE_CLASSIFIER.NUM_CLASSES,
                                             check_files=cfg.DATASETS.CHECK_IMAGE_FILES,
                                             skip_missing=skip)
    if mapper is None:
        mapper = ClassificationDatasetMapper(cfg, True)
    # a mapper's None (an unreadable image skipped) is replaced by another image
    dataset = MapSkippingUnreadable(DatasetFromList(dicts, copy=False), mapper)
    return build_detection_train_loader(dataset, mapper=None,
                                        total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
                                        aspect_ratio_grouping=False,
                                        num_workers=cfg.DATALOADER.NUM_WORKERS)


def _list_collate(batch):
    return batch


def build_classification_test_loader(cfg, dataset_name: str, mapper=None,
                                     batch_size: Optional[int] = None):
    """Each process gets its share of ``dataset_name`` (``InferenceSampler``), in lists of
    ``TEST.CLASSIFICATION.IMS_PER_BATCH`` mapped dicts."""
    dicts = get_classification_dataset_dicts([dataset_name],
                                             cfg.MODEL.IMAGE_CLASSIFIER.NUM_CLASSES,
                                             check_files=cfg.DATASETS.CHECK_IMAGE_FILES)
    if mapper is None:
        mapper = ClassificationDatasetMapper(cfg, False)
    dataset = MapDataset(DatasetFromList(dicts, copy=False), mapper)
    batch_sampler = torch.utils.data.BatchSampler(
        InferenceSampler(len(dataset)), batch_size or cfg.TEST.CLASSIFICATION.IMS_PER_BATCH,
        drop_last=False)
    return torch.utils.data.DataLoader(dataset, batch_sampler=batch_sampler,
                                       num_workers=cfg.DATALOADER.NUM_WORKERS,
                                       collate_fn=_list_collate)
