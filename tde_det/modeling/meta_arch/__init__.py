"""Meta-architectures of tde-det. Importing this registers them in ``META_ARCH_REGISTRY``."""
from .tde_classifier import TDEImageClassifier

__all__ = ["TDEImageClassifier"]
