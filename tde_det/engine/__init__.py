from .trainer import Trainer, task_for

__all__ = ["Trainer", "task_for"]
