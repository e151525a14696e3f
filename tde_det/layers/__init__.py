"""The TDE maths core (eq. 7, 8, 9 and Assumption 1) in pure PyTorch; no Detectron2 import."""
from .head_direction import HeadDirection, frozen_head_directions
from .normalized_classifier import NormalizedClassifier
from .tde_math import (
    CLASSIFIER_KINDS,
    background_exempted_probs,
    has_tde,
    tde_bias_logits,
    tde_logits,
    tde_logits_and_bias,
)

__all__ = [
    "CLASSIFIER_KINDS",
    "HeadDirection",
    "NormalizedClassifier",
    "background_exempted_probs",
    "frozen_head_directions",
    "has_tde",
    "tde_bias_logits",
    "tde_logits",
    "tde_logits_and_bias",
]
