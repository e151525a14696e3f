"""Datasets of tde-det. Importing this registers the built-in ones in Detectron2's
``DatasetCatalog``; :func:`register_datasets_from_config` registers those a config names."""
from . import classification as _classification  # noqa: F401  (registration)
from . import detection as _detection  # noqa: F401  (registration)
from .classification import register_split_file_datasets_from_config, set_fashion_mnist_root
from .detection import register_lvis_datasets_from_config

__all__ = ["register_datasets_from_config"]


def register_datasets_from_config(cfg) -> None:
    """Register the datasets ``cfg`` names and apply its data options, once when a run is set
    up (``tde_det.engine.setup``, ``Trainer``): ``DATASETS.LVIS_CUSTOM`` with the LVIS-format
    loaders' policy (``DATASETS.INVALID_ANNOTATIONS``, ``DATASETS.CHECK_IMAGE_FILES``,
    ``INPUT.MASK_FORMAT``, ``MODEL.MASK_ON``), ``DATASETS.SPLIT_FILE`` and
    ``DATASETS.FASHION_MNIST.ROOT``. Registering the same files again is a no-op."""
    register_lvis_datasets_from_config(cfg)
    register_split_file_datasets_from_config(cfg)
    set_fashion_mnist_root(cfg.DATASETS.FASHION_MNIST.ROOT)
