"""Datasets of tde-det. Importing this registers them in Detectron2's ``DatasetCatalog``."""
from . import classification as _classification  # noqa: F401  (registration)
from . import detection as _detection  # noqa: F401  (registration)
