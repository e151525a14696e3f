"""tools/benchmarks/ap_fixed.py --quick prints its table with the ratio line (timings and memory
are never compared: they belong to the benchmark), and the counts follow from the split."""
import math

from tests.helpers.tools import run_tool, table_rows


def test_quick_run_prints_counts_and_ratios():
    proc = run_tool("benchmarks/ap_fixed.py", "--quick")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = table_rows(proc.stdout, "standard", "AP-fixed")
    assert [r[0] for r in rows] == ["standard", "AP-fixed", "AP-fixed / standard"], proc.stdout
    standard, fixed = ([int(v) for v in r[1:3]] for r in rows[:2])
    assert standard == [400 * 200, 400 * 200]  # 200 candidates per image, all under 300
    # K = 200 per class: the heaps hold at most 1203 x 200, and every record held had a mask
    assert fixed[1] <= min(1203 * 200, 400 * 200) and fixed[0] >= fixed[1] > 0
    for r in rows[:2]:
        assert all(math.isfinite(float(v)) and float(v) >= 0 for v in r[3:5]), r
    assert all(float(v.rstrip("x")) > 0 for v in rows[2][1:]), rows[2]
