"""Smoke test of tools/benchmarks/detection_lt.py on small generated IDX files (never the
outcome): two seeds, two iterations per model, the whole table, json and plot."""
import json
import math
import os
import subprocess
import sys

import pytest

from tde_det.data.classification.synthetic import write_fashion_mnist_idx
from tests.helpers.tools import REPO, load_tool


def test_pipeline_runs_and_gives_finite_numbers(tmp_path):
    root = write_fashion_mnist_idx(str(tmp_path / "fm"), per_class=30, test_per_class=10)
    out = tmp_path / "out"
    cmd = [sys.executable, os.path.join(REPO, "tools", "benchmarks", "detection_lt.py"),
           "--seeds", "0", "1", "--iters", "2", "--alphas", "0", "1", "--root", root,
           "--head-images", "12", "--ratio", "12", "--eval-images", "2", "--rare-max", "1",
           "--common-max", "3", "--output", str(out), "SOLVER.IMS_PER_BATCH", "2",
           "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[4/4] seed 1, de-confound: training" in proc.stdout and "ETA" in proc.stdout
    assert "| TDE w/o bg exemption |" in proc.stdout
    result = json.loads((out / "results.json").read_text())
    rows = ("baseline", "de-confound", "de-confound-TDE", "TDE w/o bg exemption")
    for label in rows:
        row = result["table"][label]
        assert len(row["seeds"]) == 2
        for task in ("bbox", "segm"):
            for m in ("AP", "APr", "APc", "APf", "AP-fixed", "APr-fixed", "APc-fixed",
                      "APf-fixed"):  # AP-fixed is on by default (--ap-fixed 300)
                value = row[f"{task}/{m}"]["mean"]
                assert math.isnan(value) or -1 <= value <= 100, (label, task, m, value)
    for run in result["runs"]:
        assert run["alpha_val"] in (0.0, 1.0)
        assert [r["alpha"] for r in run["test"]] == [r["alpha"] for r in run["test_no_bg"]] \
            == [0.0, 1.0]
        assert sorted(c["frequency"] for c in run["categories"]) == sorted("ffffcccrrr")
    # de-confound = the sweep's alpha 0; with and without background exemption it is eq. 7
    assert run["test"][0] == run["test_no_bg"][0]
    assert (out / "ap_vs_alpha.png").stat().st_size > 1000
    assert result["ap_fixed_k"] == 300
    assert "| APf | AP-fixed | APr-fixed |" in proc.stdout
    # the LVIS API's warning on every evaluation goes to log.txt only
    warning = "Assuming user provided the results in correct format"
    assert warning not in proc.stdout + proc.stderr
    assert warning in (out / "log.txt").read_text()


def test_negative_ap_fixed_k_is_refused():
    detection_lt = load_tool("benchmarks/detection_lt")
    with pytest.raises(SystemExit, match="--ap-fixed: K must be >= 0"):
        detection_lt.main(["--ap-fixed", "-1"])


def test_unknown_metric_is_a_clear_error():
    detection_lt = load_tool("benchmarks/detection_lt")
    run = {"baseline": {"bbox/AP": 1.0}, "test": [{"alpha": 0.0, "bbox/AP": 1.0}],
           "test_no_bg": [{"alpha": 0.0, "bbox/AP": 1.0}], "alpha_val": 0.0}
    with pytest.raises(ValueError, match=r"no column \['bbox/AP-fixed', .*available: \['bbox/AP'"):
        detection_lt.summarise([run], ["AP-fixed"])
