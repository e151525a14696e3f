"""Config set-up and command-line parsing shared by the command-line tools (``tools/*.py``)."""
import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import detectron2.utils.comm as comm
from detectron2.config import CfgNode, get_cfg
from detectron2.engine import default_setup
from detectron2.utils.logger import setup_logger

from tde_det.config import add_tde_config
from tde_det.data import register_datasets_from_config

from .resume_check import check_resume_config

__all__ = ["default_output_dir", "holds_training_run", "load_config", "parse_tool_args",
           "quiet_logging", "setup", "tool_argument_parser", "tool_output_dir"]

logger = logging.getLogger(__name__)


def default_output_dir(config_file: str) -> str:
    """``output/<config path below its nearest configs folder, without .yaml>`` (``output/<file
    name>`` outside one): ``configs/LVISv1/a.yaml`` writes to ``output/LVISv1/a``, so two
    experiments never share a folder (nor --resume each other's checkpoints)."""
    path = Path(os.path.abspath(config_file)).with_suffix("")
    root = next((p for p in path.parents if p.name == "configs"), path.parent)
    return os.path.join("output", *path.relative_to(root).parts)


def load_config(config_file: str, opts: Sequence[str] = ()) -> CfgNode:
    """Detectron2's config with every tde-det key, then ``config_file``, then the ``KEY VALUE``
    ``opts``; an ``OUTPUT_DIR`` the file leaves at Detectron2's default becomes
    :func:`default_output_dir`."""
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(config_file)
    if cfg.OUTPUT_DIR == get_cfg().OUTPUT_DIR:
        cfg.OUTPUT_DIR = default_output_dir(config_file)
    cfg.merge_from_list(list(opts))
    return cfg


def holds_training_run(folder: str) -> bool:
    """Whether ``folder`` is a training run's: it has the checkpointer's ``last_checkpoint``, or
    a ``metrics.json`` written by the trainer (its rows have an "iteration"; ``--eval-only``'s
    row has none)."""
    if os.path.isfile(os.path.join(folder, "last_checkpoint")):
        return True
    try:
        with open(os.path.join(folder, "metrics.json")) as f:
            return "iteration" in json.loads(f.readline() or "{}")
    except (OSError, ValueError):
        return os.path.isfile(os.path.join(folder, "metrics.json"))


def tool_output_dir(cfg: CfgNode, tool: str, output: str = "", explicit: bool = False) -> str:
    """The folder a tool (``"eval"`` for ``train_net.py --eval-only``) writes to, with its
    ``config.yaml`` and ``log.txt``: ``output`` (the tool's ``--output``) if given, else
    ``cfg.OUTPUT_DIR`` if ``explicit`` (given on the command line), else
    ``<OUTPUT_DIR>/<tool>_<weights name>``. A folder that holds a training run is never a
    tool's: the tool then writes to ``<that folder>/<tool>_<weights name>``, so the run's own
    ``config.yaml`` and ``log.txt`` stay as training left them."""
    stem = os.path.splitext(os.path.basename(cfg.MODEL.WEIGHTS.rstrip("/")))[0]
    own = f"{tool}_{stem}" if stem else tool
    folder = output or (cfg.OUTPUT_DIR if explicit else os.path.join(cfg.OUTPUT_DIR, own))
    if holds_training_run(folder):
        logger.warning(f"{folder} holds a training run: {tool} writes to its subfolder {own}")
        folder = os.path.join(folder, own)
    return folder


def setup(args: argparse.Namespace, tool: str = "") -> CfgNode:
    """A frozen config from ``args.config_file`` and ``args.opts`` (:func:`load_config`), after
    Detectron2's ``default_setup`` (logging, output folder, seed); tde-det's own loggers (the
    evaluators' tables, the data checks) print like Detectron2's. For a ``tool``,
    ``OUTPUT_DIR`` becomes :func:`tool_output_dir` (with ``args.output`` if the tool has one);
    ``args.run_dir`` keeps the config's own ``OUTPUT_DIR``. With ``args.resume``, the model is
    first compared with the run's saved ``config.yaml`` (:func:`check_resume_config`), which
    ``default_setup`` overwrites. The datasets the config names are registered here
    (:func:`~tde_det.data.register_datasets_from_config`)."""
    cfg = load_config(args.config_file, args.opts)
    args.run_dir = cfg.OUTPUT_DIR
    if tool:
        cfg.OUTPUT_DIR = tool_output_dir(cfg, tool, getattr(args, "output", ""),
                                         explicit="OUTPUT_DIR" in args.opts[::2])
    cfg.freeze()
    if getattr(args, "resume", False):
        check_resume_config(cfg, args.run_dir)
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="tde_det")
    register_datasets_from_config(cfg)
    return cfg


def tool_argument_parser(description: str, tool: str, config_required: bool = True,
                         output_note: str = "") -> argparse.ArgumentParser:
    """A parser with ``--config-file`` and ``--output`` (see :func:`tool_output_dir`; help
    ending with ``output_note``); a tool adds its own options and parses with
    :func:`parse_tool_args` (which takes the trailing ``KEY VALUE`` overrides)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [--config-file FILE] [options] [KEY VALUE ...]",
        epilog="KEY VALUE ...: config overrides, as in Detectron2 (e.g. MODEL.WEIGHTS\n"
               "model_final.pth MODEL.TDE.ALPHA 1.0); each KEY names a key of the config.\n"
               "Options may come before or after them.")
    parser.add_argument("--config-file", default="", required=config_required, metavar="FILE",
                        help="path to the config file")
    parser.add_argument("--output", default="", metavar="FOLDER",
                        help=f"folder of the files, config.yaml and log.txt (default: "
                        f"OUTPUT_DIR if given on the command line, else <OUTPUT_DIR>/{tool}_"
                        f"<weights name>; never a training run's folder itself{output_note})")
    return parser


def parse_tool_args(parser: argparse.ArgumentParser,
                    argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """``parser``'s options, wherever they are, and the ``KEY VALUE`` config overrides as
    ``args.opts``: a KEY names a value of the config (tde-det's keys included) and is no
    existing path; its VALUE is the next argument, whatever it looks like. A multi-valued
    option (``--alphas``, ``--input``) thus ends at the first KEY."""
    keys = get_cfg()
    add_tde_config(keys)
    rest: List[str] = []
    opts: List[str] = []
    given, missing = iter(sys.argv[1:] if argv is None else argv), CfgNode()
    for arg in given:
        node = keys
        for part in arg.split("."):
            node = node.get(part, missing) if isinstance(node, CfgNode) else missing
        if isinstance(node, CfgNode) or os.path.exists(arg):  # no value of the config
            rest.append(arg)
        elif (value := next(given, None)) is None:
            parser.error(f"config override {arg} has no value (KEY VALUE)")
        else:
            opts += [arg, value]
    args, unknown = parser.parse_known_args(rest)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (a config override's KEY "
                     f"must name a key of the config)")
    args.opts = opts
    return args


def quiet_logging(output: str) -> None:
    """For the benchmark tools: Detectron2's and tde-det's INFO lines go to ``output/log.txt``,
    only warnings to the console (the LVIS API's, one per evaluation, only to the file).
    Detectron2's file handler is a ``StreamHandler`` on a file, so the console handlers are
    told apart by their stream."""
    console_levels = {"detectron2": logging.WARNING, "tde_det": logging.WARNING,
                      "fvcore": logging.WARNING, "lvis": logging.ERROR}
    for name, level in console_levels.items():
        for h in setup_logger(output, name=name, abbrev_name=name[:2]).handlers:
            if getattr(h, "stream", None) in (sys.stdout, sys.stderr):
                h.setLevel(level)
