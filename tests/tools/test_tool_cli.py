"""What the tools' command lines have in common: help, ``--option=value``, options after the
overrides, no option a tool does not use, and output that never lands on a training run's
record (its config.yaml and log.txt)."""
import os

import pytest

from tests.helpers.tools import REPO, load_tool, lvis_overrides, run_tool

TOOLS = {name: load_tool(name) for name in ("diagnose", "sweep_alpha", "visualize")}
TRAIN_NET_ONLY = ("--resume", "--eval-only", "--num-gpus", "--num-machines", "--machine-rank",
                  "--dist-url")


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_every_option_is_one_the_tool_uses_and_has_help(name):
    parser = TOOLS[name].build_parser()
    options = [o for a in parser._actions for o in a.option_strings]
    assert not set(TRAIN_NET_ONLY) & set(options)
    assert all(a.help for a in parser._actions), [a.dest for a in parser._actions if not a.help]


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_config_file_with_equals_and_options_after_the_overrides(name):
    args = TOOLS[name].parse_args(["--config-file=c.yaml", "MODEL.WEIGHTS", "w.pth",
                                   "--dataset=split", "--output", "out"])
    assert args.config_file == "c.yaml" and args.dataset == "split"
    assert args.output == "out" and args.opts == ["MODEL.WEIGHTS", "w.pth"]


def test_sweep_alphas_anywhere():
    sweep = TOOLS["sweep_alpha"]
    args = sweep.parse_args(["--config-file", "c.yaml", "MODEL.WEIGHTS", "w.pth", "--alphas=1.5"])
    assert args.alphas == [1.5] and args.opts == ["MODEL.WEIGHTS", "w.pth"]
    args = sweep.parse_args(["--config-file", "c.yaml", "--alphas", "0", "0.5", "MODEL.WEIGHTS",
                             "w.pth", "--per-alpha-masks"])
    assert args.alphas == [0.0, 0.5] and args.opts == ["MODEL.WEIGHTS", "w.pth"]
    assert args.per_alpha_masks


def test_diagnose_help_and_its_two_uses():
    proc = run_tool("diagnose.py", "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--metrics-json" in proc.stdout and "KEY VALUE" in proc.stdout
    diagnose = TOOLS["diagnose"]
    assert diagnose.parse_args(["--metrics-json", "m.json"]).config_file == ""
    for argv, message in ((["--dataset", "x"], "give --config-file"),
                          (["--metrics-json", "m.json", "MODEL.DEVICE", "cpu"],
                           "need --config-file")):
        with pytest.raises(SystemExit):
            diagnose.parse_args(argv)


def test_visualize_refuses_input_with_dataset(capsys):
    with pytest.raises(SystemExit):
        TOOLS["visualize"].parse_args(["--config-file", "c.yaml", "--input", "a.jpg",
                                       "--dataset", "split"])
    assert "give --input or --dataset, not both" in capsys.readouterr().err


def test_tools_leave_the_training_run_as_it_was(tiny_detector, tmp_path):
    """The config's OUTPUT_DIR holds a training run: visualize, diagnose and --eval-only each
    write to their own subfolder of it, and the run's config.yaml and log.txt stay as they
    were."""
    _, _, paths, weights = tiny_detector
    run = tmp_path / "run"
    run.mkdir()
    record = {"config.yaml": "MODEL:\n  TDE:\n    ALPHA: 1.5\n", "log.txt": "training log\n",
              "metrics.json": '{"iteration": 0}\n'}
    for name, text in record.items():
        (run / name).write_text(text)
    config = tmp_path / "run_config.yaml"
    config.write_text(f"_BASE_: {os.path.join(REPO, 'configs', 'TinyLVIS/cascade_R_18_tde.yaml')}"
                      f"\nOUTPUT_DIR: {run}\n")
    common = ["--config-file", str(config), *lvis_overrides(paths), "MODEL.WEIGHTS", weights,
              "MODEL.TDE.ALPHA", "0.5"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = run_tool("visualize.py", *common, "--dataset", "tools_lvis_val", "--max-images", "1",
                    "--confidence-threshold", "1", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # nothing above the threshold: said in the log (and in the panel's title)
    assert "TDE (alpha=0.5): no detection with score >= 1" in proc.stdout + proc.stderr
    proc = run_tool("diagnose.py", *common, "--dataset", "tools_lvis_val", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_tool("train_net.py", "--eval-only", *common, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "diagnose_model_final" / "per_class.png").is_file()
    for tool in ("visualize", "diagnose", "eval"):
        own = run / f"{tool}_model_final"
        assert "ALPHA: 0.5" in (own / "config.yaml").read_text()
        assert (own / "log.txt").is_file()
    assert (run / "eval_model_final" / "inference" / "lvis_instances_results.json").is_file()
    assert {n: (run / n).read_text() for n in record} == record
