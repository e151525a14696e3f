from .checkpoint import TDECheckpointer
from .setup import (default_output_dir, load_config, parse_tool_args, setup, tool_argument_parser,
                    tool_output_dir)
from .trainer import Trainer, check_test_time_augmentation, task_for

__all__ = ["TDECheckpointer", "Trainer", "check_test_time_augmentation", "default_output_dir",
           "load_config", "parse_tool_args", "setup", "task_for", "tool_argument_parser",
           "tool_output_dir"]
