"""tde-det: Total-Direct-Effect long-tailed recognition as a Detectron2 project.

Importing the package registers everything a config can name (ROI heads, meta-architectures,
backbones, datasets), like Detectron2's own projects.
"""
from .config import add_tde_config
from . import modeling as _  # noqa: F401  (registration)
from . import data as _data  # noqa: F401  (dataset registration)

__version__ = "0.1.0"
__all__ = ["add_tde_config"]
