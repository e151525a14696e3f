"""The TDE layers in pure PyTorch, no Detectron2 import: the maths of eq. 7, 8, 9 and
Assumption 1 (:mod:`.tde_math`), the classifier and head-direction modules, their validation
(:mod:`.checks`) and optional Triton kernels for training steps (:mod:`.fused`)."""
from .checks import CLASSIFIER_KINDS, TEST_DIRECTIONS, has_tde
from .fixed_direction import fixed_direction
from .head_direction import HeadDirection
from .normalized_classifier import NormalizedClassifier
from .tde_math import background_exempted_probs

__all__ = [
    "CLASSIFIER_KINDS",
    "HeadDirection",
    "NormalizedClassifier",
    "TEST_DIRECTIONS",
    "background_exempted_probs",
    "fixed_direction",
    "has_tde",
]
