"""Detectron2's ``DatasetMapper``, naming an image it cannot read, or skipping it in training.

Detectron2's mapper reads the image inside a data-loader worker. A corrupt or truncated file
then stops training with PIL's message, which for a truncated JPEG does not say which file it
is. The loaders of the detection task use :class:`CheckedDatasetMapper` instead, and in training
:class:`~tde_det.data.map_skipping.MapSkippingUnreadable`, which maps another image where the
mapper skipped one.
"""
from typing import Dict, Optional

from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils

from ..map_skipping import MapSkippingUnreadable, UnreadableImages

__all__ = ["CheckedDatasetMapper", "MapSkippingUnreadable"]


def _read_problem(file_name: str, image_format: str) -> Optional[str]:
    """Why the image cannot be read (Detectron2's ``read_image``), or None if it can."""
    try:
        utils.read_image(file_name, format=image_format)
    except Exception as e:  # PIL, OSError, ...: any of them means the image is unusable
        return f"{type(e).__name__}: {e}"
    return None


class CheckedDatasetMapper(DatasetMapper):
    """``DatasetMapper`` (the same output) that, when mapping fails because the image cannot be
    read, either raises ``OSError`` naming the file, or -- in training, with ``skip_unreadable``
    (``DATASETS.INVALID_ANNOTATIONS skip``) -- logs the file (once per process) and returns
    None (:class:`MapSkippingUnreadable` then maps another image). Evaluation never skips: an
    image left out would change the metrics. Any other error is raised unchanged."""

    @configurable
    def __init__(self, is_train: bool, *, skip_unreadable: bool = False, **kwargs):
        super().__init__(is_train, **kwargs)
        self.unreadable = UnreadableImages(skip_unreadable, is_train)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret["skip_unreadable"] = cfg.DATASETS.INVALID_ANNOTATIONS == "skip"
        return ret

    def __call__(self, dataset_dict: Dict) -> Optional[Dict]:
        file_name = dataset_dict.get("file_name")
        if self.unreadable.skipped(file_name):
            return None
        try:
            return super().__call__(dataset_dict)
        except Exception as e:
            problem = _read_problem(file_name, self.image_format) if file_name else None
            if problem is None:  # not the image: a real error
                raise
            self.unreadable.skip_or_raise(file_name, problem, e)
            return None
