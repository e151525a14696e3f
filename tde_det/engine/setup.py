"""Config set-up shared by the command-line tools (``tools/*.py``)."""
import argparse

import detectron2.utils.comm as comm
from detectron2.config import CfgNode, get_cfg
from detectron2.engine import default_setup
from detectron2.utils.logger import setup_logger

from tde_det.config import add_tde_config

from .resume_check import check_resume_config

__all__ = ["setup"]


def setup(args: argparse.Namespace) -> CfgNode:
    """A frozen config from ``args.config_file`` and ``args.opts`` with every tde-det key, after
    Detectron2's ``default_setup`` (logging, output folder, seed); tde-det's own loggers (the
    evaluators' tables, the data checks) print like Detectron2's. With ``args.resume``, the
    model is first compared with the run's saved ``config.yaml`` (:func:`check_resume_config`),
    which ``default_setup`` overwrites."""
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    if getattr(args, "resume", False):
        check_resume_config(cfg)
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="tde_det")
    return cfg
