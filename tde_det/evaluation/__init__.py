"""Evaluators of tde-det."""
from .classification_evaluation import ClassificationEvaluator, accuracy_metrics
from .lvis_records import RecordsLVISEvaluator

__all__ = ["ClassificationEvaluator", "RecordsLVISEvaluator", "accuracy_metrics"]
