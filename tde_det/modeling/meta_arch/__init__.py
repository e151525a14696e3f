"""Meta-architectures of tde-det. Importing this registers them in ``META_ARCH_REGISTRY``."""
from .tde_classifier import TDEImageClassifier
from .train_mean import set_train_mean_direction

__all__ = ["TDEImageClassifier", "set_train_mean_direction"]
