"""Evaluators of tde-det."""
from .classification_evaluation import ClassificationEvaluator, accuracy_metrics

__all__ = ["ClassificationEvaluator", "accuracy_metrics"]
