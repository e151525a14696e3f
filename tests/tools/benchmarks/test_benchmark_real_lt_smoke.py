"""Smoke test of tools/benchmarks/real_lt.py on small generated IDX files (never the outcome):
the table's rows per schedule, the fair schedule, the margins, the direction ablation, the log."""
import json
import math
import os
import subprocess
import sys

from tde_det.data.classification.synthetic import write_fashion_mnist_idx
from tests.helpers.tools import REPO, load_tool

TINY = ["MODEL.SMALL_CNN.CHANNELS", "[4, 8, 8]", "SOLVER.IMS_PER_BATCH", "16",
        "TEST.CLASSIFICATION.IMS_PER_BATCH", "64"]


def run(*args):
    cmd = [sys.executable, os.path.join(REPO, "tools", "benchmarks", "real_lt.py"), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_schedules_margins_and_direction_ablation(tmp_path):
    # 110 images per class: 100 go to the balanced validation split, 10 to the train pool.
    root = write_fashion_mnist_idx(str(tmp_path / "fm"), per_class=110, test_per_class=5)
    out = tmp_path / "out"
    proc = run("--seeds", "0", "1", "--iters", "2", "--schedules", "1", "2", "--alphas", "0",
               "0.5", "1", "--methods", "baseline", "deconfound", "deconfound-momentum0",
               "--root", root, "--output", str(out), "--many-threshold", "8",
               "--few-threshold", "3", *TINY)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[12/12] seed 1, deconfound-momentum0, 2x (4 iters)" in proc.stdout
    assert "ETA" in proc.stdout and "Head-direction ablation" in proc.stdout
    result = json.loads((out / "results.json").read_text())
    s = result["summary"]
    rows = {"baseline", "de-confound", "de-confound-TDE", "de-confound, momentum 0",
            "de-confound-TDE, momentum 0"}
    assert set(s["fair"]) == rows and set(s["per_schedule"]) == rows
    for label, per in s["per_schedule"].items():
        assert sorted(per) == ["1.0", "2.0"]  # json keys
        assert [per[x]["max_iter"] for x in ("1.0", "2.0")] == [2, 4]
        for row in per.values():
            assert len(row["seeds"]) == 2
            for m in ("many", "medium", "few", "top1"):
                assert math.isfinite(row[m]["mean"]) and 0 <= row[m]["mean"] <= 100
    for label, row in s["fair"].items():
        best = max(s["per_schedule"][label].values(), key=lambda r: r["val_top1"]["mean"])
        assert row["val_top1"]["mean"] == best["val_top1"]["mean"]
    # Margins: every seed, each row minus the baseline.
    fair = s["margins"]["fair"]["de-confound-TDE"]
    assert fair["n"] == 2 and 0 <= fair["below"] <= 2
    b = {e["seed"]: e["top1"] for e in s["fair"]["baseline"]["seeds"]}
    t = {e["seed"]: e["top1"] for e in s["fair"]["de-confound-TDE"]["seeds"]}
    assert [e["top1"] for e in fair["seeds"]] == [t[k] - b[k] for k in (0, 1)]
    # The ablation: every direction, on the same trained models.
    ablation = s["ablation"]["de-confound-TDE"]["directions"]
    assert list(ablation) == ["ema", "ones", "train_mean", "random", "zero"]
    assert all(math.isclose(c, 1.0, abs_tol=1e-6) for c in ablation["ema"]["cos_with_ema"])
    assert ablation["zero"]["cos_with_ema"] == [0.0, 0.0]
    zero, plain = ablation["zero"], s["per_schedule"]["de-confound"]
    x = f"{s['ablation']['de-confound-TDE']['schedule']:.1f}"
    assert zero["top1"]["mean"] == plain[x]["top1"]["mean"]  # zero direction: eq. 7
    for run_ in result["runs"]:
        expected = 1 if run_["method"] == "baseline" else 5
        assert len(run_["directions"]) == expected
        for d in run_["directions"].values():
            assert d["alpha_val"] in (0.0, 0.5, 1.0)
    assert (out / "accuracy_vs_alpha.png").stat().st_size > 1000
    assert (out / "schedules_and_directions.png").stat().st_size > 1000
    # Detectron2's INFO lines reach the log file, not the console.
    log = (out / "log.txt").read_text()
    assert "Starting training from iteration 0" in log
    assert "Starting training" not in proc.stdout
    # --report-only: the same summary from runs.jsonl, nothing trained.
    again = run("--seeds", "0", "1", "--iters", "2", "--schedules", "1", "2", "--alphas", "0",
                "0.5", "1", "--methods", "baseline", "deconfound", "deconfound-momentum0",
                "--root", root, "--output", str(out), "--many-threshold", "8",
                "--few-threshold", "3", "--report-only", *TINY)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "training (elapsed" not in again.stdout
    assert json.loads((out / "results.json").read_text())["summary"] == s


def test_methods_and_schedules_set_the_config():
    tool = load_tool("benchmarks/real_lt")
    args = tool.parse_args(["--seeds", "3", "--schedules", "0.5", "2"])
    cfg, names = tool.make_cfg(args, "deconfound-momentum0", 3, 0.5)
    assert names == {s: f"fashion_mnist_lt_r100_s3_{s}" for s in ("train", "val", "test")}
    assert cfg.SOLVER.MOMENTUM == 0.0 and abs(cfg.SOLVER.BASE_LR - 0.5) < 1e-12  # lr / (1 - m)
    assert cfg.SOLVER.MAX_ITER == 404 and cfg.MODEL.TDE.CLASSIFIER == "deconfound"
    base, _ = tool.make_cfg(args, "baseline", 3, 2)
    assert base.MODEL.TDE.CLASSIFIER == "linear" and not base.MODEL.TDE.TEST_TDE
    assert base.SOLVER.MAX_ITER == 1616 and base.SOLVER.BASE_LR == 0.05
    avg, _ = tool.make_cfg(args, "deconfound-average", 3, 1)
    assert avg.MODEL.TDE.HEAD_DIRECTION_FORM == "average"


def test_any_registered_dataset_by_name(tmp_path):
    """A split-file dataset (DATASETS.SPLIT_FILE), its names, classes and thresholds given."""
    from tde_det.data.classification.synthetic import write_image_folder

    root = write_image_folder(str(tmp_path / "folder"), num_classes=4, per_class=12, ratio=3,
                              val_per_class=2, test_per_class=2)
    folder = {"image_root": root, **{s: os.path.join(root, f"{s}.txt")
                                     for s in ("train", "val", "test")}}
    out = tmp_path / "out"
    proc = run("--seeds", "0", "--iters", "2", "--schedules", "1", "--alphas", "0", "1",
               "--methods", "baseline", "deconfound", "--directions", "ema", "zero",
               "--train", "mine_train", "--val", "mine_val", "--test", "mine_test",
               "--num-classes", "4", "--many-threshold", "8", "--few-threshold", "5",
               "--output", str(out), *TINY, "DATASETS.SPLIT_FILE.NAME", "mine",
               "DATASETS.SPLIT_FILE.IMAGE_ROOT", folder["image_root"],
               "DATASETS.SPLIT_FILE.TRAIN", folder["train"], "DATASETS.SPLIT_FILE.VAL",
               folder["val"], "DATASETS.SPLIT_FILE.TEST", folder["test"],
               "INPUT.FORMAT", "RGB", "MODEL.PIXEL_MEAN", "[128, 128, 128]",
               "MODEL.PIXEL_STD", "[64, 64, 64]", "INPUT.CLASSIFICATION.CROP_SIZE", "32")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    assert result["dataset"] == "mine_test" and result["many_threshold"] == 8
    assert set(result["summary"]["fair"]) == {"baseline", "de-confound", "de-confound-TDE"}
    assert list(result["summary"]["ablation"]["de-confound-TDE"]["directions"]) == ["ema",
                                                                                   "zero"]
