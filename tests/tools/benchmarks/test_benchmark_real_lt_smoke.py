"""Smoke test of tools/benchmarks/real_lt.py on small generated IDX files (never the outcome)."""
import json
import math
import os
import subprocess
import sys

from tde_det.data.classification.synthetic import write_fashion_mnist_idx
from tests.helpers.tools import REPO


def test_pipeline_runs_and_gives_finite_numbers(tmp_path):
    # 110 images per class: 100 go to the balanced validation split, up to 10 to training.
    root = write_fashion_mnist_idx(str(tmp_path / "fm"), per_class=110, test_per_class=5)
    out = tmp_path / "out"
    cmd = [sys.executable, os.path.join(REPO, "tools", "benchmarks", "real_lt.py"), "--seeds", "0",
           "1", "--iters", "3", "--alphas", "0", "0.5", "1", "--root", root, "--output",
           str(out), "MODEL.SMALL_CNN.CHANNELS", "[4, 8, 8]", "SOLVER.IMS_PER_BATCH", "16",
           "TEST.CLASSIFICATION.MANY_THRESHOLD", "8", "TEST.CLASSIFICATION.FEW_THRESHOLD", "3"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[8/8] seed 1, deconfound" in proc.stdout and "de-confound-TDE" in proc.stdout
    result = json.loads((out / "results.json").read_text())
    assert set(result["table"]) == {"baseline", "cosine", "cosine-TDE", "capsule",
                                    "capsule-TDE", "de-confound", "de-confound-TDE"}
    for row in result["table"].values():
        assert len(row["seeds"]) == 2
        for m in ("many", "medium", "few", "top1"):
            assert math.isfinite(row[m]["mean"]) and 0 <= row[m]["mean"] <= 100
    for run in result["runs"]:
        assert run["alpha_val"] in (0.0, 0.5, 1.0)
        assert len(run["test"]) == (1 if run["classifier"] == "baseline" else 3)
    assert (out / "accuracy_vs_alpha.png").stat().st_size > 1000
