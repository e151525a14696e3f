"""Dataset dict -> model input for image classification, with Detectron2 augmentations."""
import sys
from typing import Dict, List, Optional

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from ..detection import check_invalid_annotation_policy
from ..map_skipping import UnreadableImages
from .transforms import CenterCrop, ColorJitter, PadRandomCrop, RandomResizedCrop

__all__ = ["ClassificationDatasetMapper", "build_classification_augmentation"]


def build_classification_augmentation(cfg, is_train: bool) -> List[T.Augmentation]:
    """The official code's augmentations, from ``cfg.INPUT.CLASSIFICATION``.

    "imagenet": train RandomResizedCrop + flip + ColorJitter; test Resize + CenterCrop.
    "cifar": train pad + RandomCrop + flip; test none. "none": nothing.
    """
    c = cfg.INPUT.CLASSIFICATION
    kind = c.AUGMENTATION
    augs: List[T.Augmentation] = []
    if kind == "imagenet":
        if is_train:
            augs.append(RandomResizedCrop(c.CROP_SIZE, tuple(c.RESIZED_CROP_SCALE),
                                          tuple(c.RESIZED_CROP_RATIO)))
        else:
            if c.TEST_RESIZE > 0:
                augs.append(T.ResizeShortestEdge(c.TEST_RESIZE, sys.maxsize, "choice"))
            if c.TEST_CROP_SIZE > 0:
                augs.append(CenterCrop(c.TEST_CROP_SIZE))
    elif kind == "cifar":
        if is_train:
            augs.append(PadRandomCrop(c.CROP_SIZE, c.PAD))
    elif kind != "none":
        raise ValueError(f"INPUT.CLASSIFICATION.AUGMENTATION must be 'imagenet', 'cifar' or "
                         f"'none', got {kind!r}")
    if is_train and kind != "none":
        if c.FLIP_PROB > 0:
            augs.append(T.RandomFlip(prob=c.FLIP_PROB, horizontal=True, vertical=False))
        if kind == "imagenet" and any(s > 0 for s in c.COLOR_JITTER):
            augs.append(ColorJitter(*c.COLOR_JITTER, image_format=cfg.INPUT.FORMAT))
    return augs


class ClassificationDatasetMapper:
    """Read the image ("file_name", or an in-memory "image" array in RGB), apply the
    augmentations, return ``{"image": CHW uint8 tensor, "label", "image_id"}``.

    An image file that cannot be read is an ``OSError`` naming it; in training with
    ``skip_unreadable`` (``DATASETS.INVALID_ANNOTATIONS skip``) it is logged once and the
    mapper returns None (the train loader's
    :class:`~tde_det.data.map_skipping.MapSkippingUnreadable` then maps another image).
    Evaluation never skips: an image left out would change the accuracies."""

    @configurable
    def __init__(self, is_train: bool, *, augmentations: List[T.Augmentation],
                 image_format: str = "RGB", skip_unreadable: bool = False):
        self.is_train = is_train
        self.augmentations = list(augmentations)
        self.image_format = image_format
        self.unreadable = UnreadableImages(skip_unreadable, is_train)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        policy = check_invalid_annotation_policy(cfg.DATASETS.INVALID_ANNOTATIONS)
        return {"is_train": is_train,
                "augmentations": build_classification_augmentation(cfg, is_train),
                "image_format": cfg.INPUT.FORMAT,
                "skip_unreadable": policy == "skip"}

    def read(self, dataset_dict: Dict) -> Optional[np.ndarray]:
        """The image as HWC (None: a training image skipped because it cannot be read)."""
        if "image" in dataset_dict:
            image = np.asarray(dataset_dict["image"])
            if image.ndim == 3 and image.shape[2] == 3 and self.image_format == "BGR":
                image = image[:, :, ::-1]
        else:
            name = dataset_dict["file_name"]
            if self.unreadable.skipped(name):
                return None
            try:
                image = utils.read_image(name, format=self.image_format)
            except Exception as e:
                self.unreadable.skip_or_raise(name, f"{type(e).__name__}: {e}", e)
                return None
        return image[:, :, None] if image.ndim == 2 else image

    def __call__(self, dataset_dict: Dict) -> Optional[Dict]:
        image = self.read(dataset_dict)
        if image is None:
            return None
        image, _ = T.apply_augmentations(self.augmentations, image)
        return {
            "image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "label": int(dataset_dict["label"]),
            "image_id": dataset_dict.get("image_id"),
        }
