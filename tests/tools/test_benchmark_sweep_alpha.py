"""tools/benchmark_sweep_alpha.py on tiny sizes prints its table with finite numbers (timings are
never compared: they belong to the benchmark, not to a unit test)."""
import math
import os
import subprocess
import sys

import pytest

from tools_helpers import REPO


@pytest.mark.parametrize("task,images,rows,labels", [
    ("classification", "2", 20, ["classification"]),
    ("detection", "2", 2, ["detection, evaluations in 1 process",
                           "detection, evaluations in 2 processes"])])
def test_tiny_run_prints_the_table(task, images, rows, labels):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "benchmark_sweep_alpha.py"),
                           "--tasks", task, "--images", images, "--repeats", "1",
                           "--eval-workers", "2"], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(f"| {task}")]
    assert [ln.split("|")[1].strip() for ln in lines] == labels, proc.stdout
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] == str(rows) and len(cells) == 7
        values = [float(c) for c in cells[2:5]] + [float(c.rstrip("x")) for c in cells[5:]]
        assert all(math.isfinite(v) and v >= 0 for v in values), line
