"""Runs test_fused_kernels.py in Triton's CPU interpreter, in a fresh process (the interpreter
must be on before Triton is first imported), where there is no CUDA to compile the kernels."""
import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA test_fused_kernels.py runs the "
                    "compiled kernels itself")
def test_fused_kernels_in_the_triton_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p",
                          "no:cacheprovider", os.path.join(HERE, "test_fused_kernels.py")],
                         env=env, capture_output=True, text=True, cwd=HERE, timeout=600)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "passed" in summary and "skipped" not in summary and "failed" not in summary, summary
