"""The tools' shared set-up: where a tool writes, and how its command line is split."""
import argparse
import os

import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog

from tde_det import add_tde_config
from tde_det.data.detection.synthetic import write_tiny_lvis
from tde_det.engine import (default_output_dir, detection_task, load_config, parse_tool_args,
                            setup, tool_argument_parser, tool_output_dir)


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
    # (--eval-only's metrics.json row, without "iteration", is no training run's)
    (run / "metrics.json").write_text('{"bbox/AP": 1.0, "eval/MODEL.TDE.ALPHA": 1.0}\n')
    assert tool_output_dir(cfg, "eval", explicit=True) == str(run)
    (run / "metrics.json").write_text('{"iteration": 19, "total_loss": 2.5}\n')
    assert tool_output_dir(cfg, "eval", explicit=True) == str(run / "eval_model_0009999")
    assert tool_output_dir(cfg, "sweep_alpha", str(run)) == str(run / "sweep_alpha_model_0009999")
    (run / "metrics.json").unlink()
    (run / "last_checkpoint").write_text("model_0009999.pth")
    assert tool_output_dir(cfg, "eval", explicit=True) == str(run / "eval_model_0009999")
    assert tool_output_dir(_cfg(run, weights=""), "diagnose") == str(run / "diagnose")


def test_output_dir_follows_the_config_path(tmp_path, monkeypatch):
    """A config that leaves OUTPUT_DIR at Detectron2's default writes to output/<its path below
    configs/>; one that sets it, or a command-line OUTPUT_DIR, wins."""
    folder = tmp_path / "configs" / "LVISv1"
    folder.mkdir(parents=True)
    (folder / "a.yaml").write_text("MODEL:\n  TDE:\n    ALPHA: 1.0\n")
    (folder / "b.yaml").write_text('_BASE_: "a.yaml"\nOUTPUT_DIR: "runs/b"\n')
    (tmp_path / "c.yaml").write_text('_BASE_: "configs/LVISv1/a.yaml"\n')
    assert default_output_dir(str(folder / "a.yaml")) == os.path.join("output", "LVISv1", "a")
    assert load_config(str(folder / "a.yaml")).OUTPUT_DIR == os.path.join("output", "LVISv1", "a")
    assert load_config(str(folder / "b.yaml")).OUTPUT_DIR == "runs/b"
    assert load_config(str(tmp_path / "c.yaml")).OUTPUT_DIR == os.path.join("output", "c")
    cfg = load_config(str(folder / "a.yaml"), ["OUTPUT_DIR", "mine", "MODEL.TDE.ALPHA", "2.0"])
    assert (cfg.OUTPUT_DIR, cfg.MODEL.TDE.ALPHA) == ("mine", 2.0)
    monkeypatch.chdir(tmp_path)  # setup() creates the folder and writes its config.yaml there
    args = argparse.Namespace(config_file=str(folder / "a.yaml"), opts=[], eval_only=False)
    assert setup(args).OUTPUT_DIR == os.path.join("output", "LVISv1", "a")
    assert (tmp_path / "output" / "LVISv1" / "a" / "config.yaml").is_file()


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


def test_datasets_are_registered_at_set_up_not_by_the_task_builders(tmp_path):
    paths = write_tiny_lvis(str(tmp_path / "data"), num_train=2, num_val=2, seed=0)
    config = tmp_path / "c.yaml"
    config.write_text("MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 6\n")
    opts = ["DATASETS.LVIS_CUSTOM.NAMES", "('setup_lvis_train', 'setup_lvis_val')",
            "DATASETS.LVIS_CUSTOM.JSON_FILES", f"('{paths['train']}', '{paths['val']}')",
            "DATASETS.LVIS_CUSTOM.IMAGE_ROOTS",
            f"('{paths['image_root']}', '{paths['image_root']}')",
            "DATASETS.TRAIN", "('setup_lvis_train',)", "DATASETS.TEST", "('setup_lvis_val',)",
            "OUTPUT_DIR", str(tmp_path / "out")]
    cfg = _cfg(tmp_path / "out")
    cfg.merge_from_list(opts)
    with pytest.raises(KeyError, match="'setup_lvis_train' is not a registered dataset"):
        detection_task.check_datasets(cfg)
    with pytest.raises(ValueError, match="No detection evaluator for dataset 'setup_lvis_val'"):
        detection_task.build_evaluator(cfg, "setup_lvis_val")
    assert "setup_lvis_val" not in DatasetCatalog.list()
    cfg = setup(argparse.Namespace(config_file=str(config), opts=opts, eval_only=True))
    assert len(DatasetCatalog.get("setup_lvis_train")) == 2
    detection_task.check_datasets(cfg)


def test_only_a_whole_key_path_is_an_override():
    """MODEL.WEIGHTS.X and X.OUTPUT_DIR name no value of the config: not overrides."""
    for arg in ("MODEL.WEIGHTS.X", "X.OUTPUT_DIR", "MODEL"):
        with pytest.raises(SystemExit):
            parse_tool_args(_parser(), ["--config-file", "c.yaml", arg, "v"])
