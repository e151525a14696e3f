from .checkpoint import TDECheckpointer
from .setup import parse_tool_args, setup, tool_argument_parser, tool_output_dir
from .trainer import Trainer, check_test_time_augmentation, task_for

__all__ = ["TDECheckpointer", "Trainer", "check_test_time_augmentation", "parse_tool_args",
           "setup", "task_for", "tool_argument_parser", "tool_output_dir"]
