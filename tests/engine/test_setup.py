"""The tools' shared set-up: where a tool writes, and how its command line is split."""
import argparse
import os

import pytest
from detectron2.config import get_cfg

from tde_det import add_tde_config
from tde_det.engine import parse_tool_args, tool_argument_parser, tool_output_dir


def _cfg(output_dir, weights="runs/a/model_0009999.pth"):
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.OUTPUT_DIR, cfg.MODEL.WEIGHTS = str(output_dir), weights
    return cfg


def test_a_tool_writes_to_its_own_folder_never_over_a_training_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    cfg = _cfg(run)
    # the default: a subfolder named for the tool and the weights
    assert tool_output_dir(cfg, "visualize") == str(run / "visualize_model_0009999")
    # OUTPUT_DIR given on the command line, or the tool's --output: as given
    assert tool_output_dir(cfg, "eval", explicit=True) == str(run)
    assert tool_output_dir(cfg, "sweep_alpha", str(tmp_path / "mine")) == str(tmp_path / "mine")
    # ... unless it holds a training run: then the tool's subfolder of it
    (run / "metrics.json").write_text("{}\n")
    assert tool_output_dir(cfg, "eval", explicit=True) == str(run / "eval_model_0009999")
    assert tool_output_dir(cfg, "sweep_alpha", str(run)) == str(run / "sweep_alpha_model_0009999")
    (run / "metrics.json").unlink()
    (run / "last_checkpoint").write_text("model_0009999.pth")
    assert tool_output_dir(cfg, "eval", explicit=True) == str(run / "eval_model_0009999")
    assert tool_output_dir(_cfg(run, weights=""), "diagnose") == str(run / "diagnose")


def _parser():
    parser = tool_argument_parser("a tool", "tool")
    parser.add_argument("--values", type=float, nargs="+", default=[])
    parser.add_argument("--name", default="")
    parser.add_argument("--flag", action="store_true")
    return parser


def test_options_may_follow_the_overrides_and_a_list_ends_at_a_config_key():
    args = parse_tool_args(_parser(), ["--config-file=c.yaml", "--values", "0", "0.5",
                                       "MODEL.WEIGHTS", "w.pth", "MODEL.TDE.ALPHA", "-1",
                                       "--name=x", "OUTPUT_DIR", "out", "--flag"])
    assert args.config_file == "c.yaml" and args.values == [0.0, 0.5]
    assert args.opts == ["MODEL.WEIGHTS", "w.pth", "MODEL.TDE.ALPHA", "-1", "OUTPUT_DIR", "out"]
    assert args.name == "x" and args.flag


@pytest.mark.parametrize("argv, message", [
    (["--config-file", "c.yaml", "MODEL.WEIGHT", "w.pth"], "unrecognized arguments: "
     "MODEL.WEIGHT w.pth (a config override's KEY must name a key of the config)"),
    (["--config-file", "c.yaml", "--resume"], "unrecognized arguments: --resume"),
    (["--config-file", "c.yaml", "MODEL.WEIGHTS"], "config override MODEL.WEIGHTS has no value"),
    (["MODEL.WEIGHTS", "w.pth"], "the following arguments are required: --config-file"),
])
def test_bad_command_lines_are_refused_by_name(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_tool_args(_parser(), argv)
    assert message in capsys.readouterr().err


def test_an_existing_file_that_spells_a_key_is_no_override(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "MODEL.WEIGHTS").write_bytes(b"")
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", nargs="+")
    args = parse_tool_args(parser, ["--input", "MODEL.WEIGHTS", "MODEL.DEVICE", "cpu"])
    assert args.input == ["MODEL.WEIGHTS"] and args.opts == ["MODEL.DEVICE", "cpu"]


def test_only_a_whole_key_path_is_an_override():
    """MODEL.WEIGHTS.X and X.OUTPUT_DIR name no value of the config: not overrides."""
    for arg in ("MODEL.WEIGHTS.X", "X.OUTPUT_DIR", "MODEL"):
        with pytest.raises(SystemExit):
            parse_tool_args(_parser(), ["--config-file", "c.yaml", arg, "v"])
