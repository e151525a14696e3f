"""The TDE layers in pure PyTorch, no Detectron2 import: the maths of eq. 7, 8, 9 and
Assumption 1 (:mod:`.tde_math`), the classifier and head-direction modules, their validation
(:mod:`.checks`) and optional Triton kernels for training steps (:mod:`.fused`)."""
from .checks import CLASSIFIER_KINDS, has_tde
from .head_direction import HeadDirection
from .normalized_classifier import NormalizedClassifier
from .tde_math import background_exempted_probs

__all__ = [
    "CLASSIFIER_KINDS",
    "HeadDirection",
    "NormalizedClassifier",
    "background_exempted_probs",
    "has_tde",
]
