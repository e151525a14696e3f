"""tools/benchmarks/sweep_alpha.py on tiny sizes prints its table with finite numbers (timings are
never compared: they belong to the benchmark, not to a unit test)."""
import math
import os

import pytest

from tests.helpers.tools import load_tool, run_tool, table_rows


@pytest.mark.parametrize("task,images,rows,labels", [
    ("classification", "2", 20, ["classification"]),
    ("detection", "2", 2, ["detection, evaluations in 1 process",
                           "detection, evaluations in 2 processes"])])
def test_tiny_run_prints_the_table(task, images, rows, labels):
    proc = run_tool("benchmarks/sweep_alpha.py", "--tasks", task, "--images", images,
                    "--repeats", "1", "--eval-workers", "2",
                    env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = table_rows(proc.stdout, task)
    assert [cells[0] for cells in table] == labels, proc.stdout
    for cells in table:
        assert cells[1] == str(rows) and len(cells) == 7
        values = [float(c) for c in cells[2:5]] + [float(c.rstrip("x")) for c in cells[5:]]
        assert all(math.isfinite(v) and v >= 0 for v in values), cells


def test_the_paper_size_detector_config_builds(tmp_path):
    """--detector full: every override is a key of the tiny config, and the model builds with
    the paper's sizes (not run here: it takes minutes)."""
    bench = load_tool("benchmarks/sweep_alpha")
    from detectron2.modeling import build_model

    cfg = bench._cfg("TinyLVIS/cascade_R_18_tde.yaml", str(tmp_path), **bench.FULL_DETECTOR)
    assert cfg.MODEL.RESNETS.DEPTH == 101 and cfg.INPUT.MIN_SIZE_TEST == 800
    heads = build_model(cfg).roi_heads
    assert heads.mask_head.mask_fcn4.out_channels == 256
    assert heads.box_head[0].fc1.out_features == 1024
    with pytest.raises(KeyError, match="MODEL.RESNETS.DEPHT"):
        bench._cfg("TinyLVIS/cascade_R_18_tde.yaml", str(tmp_path), **{"MODEL.RESNETS.DEPHT": 1})
