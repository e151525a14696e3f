from .checkpoint import TDECheckpointer
from .setup import setup
from .trainer import Trainer, check_test_time_augmentation, task_for

__all__ = ["TDECheckpointer", "Trainer", "check_test_time_augmentation", "setup", "task_for"]
