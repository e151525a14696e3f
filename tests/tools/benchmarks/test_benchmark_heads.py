"""tools/benchmarks/heads.py --quick runs and prints the three ratio lines (timings are never
asserted: they belong to the benchmark, not to a unit test)."""
import os
import re
import subprocess
import sys

from tests.helpers.tools import REPO


def test_quick_run_prints_ratios():
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "benchmarks", "heads.py"),
                           "--quick", "--repeats", "1", "--device", "cpu", "--breakdown"], cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for measure in ("inference per image (s)", "training step (s)",
                    "peak memory over baseline (MiB)"):
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(f"| {measure}"))
        assert re.search(r"\| \d+\.\d+x \| <= 1\.0[23]x (ok|MISSED) \|$", line), line
        stock, tde = (float(v) for v in line.split("|")[2:4])
        assert stock > 0 and tde > 0  # the heads' own memory, above the process baseline
    assert "50 / 50 detections" in proc.stdout  # both heads send the same boxes to the mask head
    ops = {}
    for variant in ("stock CascadeROIHeads", "TDECascadeROIHeads",
                    "TDECascadeROIHeads, an iteration that logs fg_cos",
                    "TDECascadeROIHeads without the head-direction update"):
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(f"| {variant} |"))
        assert float(line.split("|")[2]) > 0, line
        ops[variant] = int(line.split("|")[4])  # ATen operators per step on the CPU
    # Counts, not timings: each extra piece of work runs more operators.
    assert ops["stock CascadeROIHeads"] < ops["TDECascadeROIHeads without the head-direction " \
                                             "update"] < ops["TDECascadeROIHeads"] \
        < ops["TDECascadeROIHeads, an iteration that logs fg_cos"], ops
    assert "FUSED_KERNELS" not in proc.stdout  # the CPU runs the eager maths: no fused row


def test_fused_on_the_cpu_is_refused():
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "benchmarks", "heads.py"),
                           "--quick", "--fused", "--device", "cpu"], cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env={k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"})
    assert proc.returncode == 2 and "--fused" in proc.stderr and "CUDA" in proc.stderr, \
        proc.stderr[-2000:]
