from .setup import setup
from .trainer import Trainer, task_for

__all__ = ["Trainer", "setup", "task_for"]
