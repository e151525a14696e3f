"""tools/benchmark_paste_masks.py prints its table, and the two pastes agree in every case
(timings are never compared: they belong to the benchmark)."""
from tests.helpers.tools import run_tool, table_rows


def test_prints_the_table_with_equal_masks():
    proc = run_tool("benchmark_paste_masks.py", "--repeats", "1", "--threads", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = table_rows(proc.stdout, "70 x 109", "800 x 1333")
    assert [r[0] for r in rows] == ["70 x 109"] + ["800 x 1333"] * 3, proc.stdout
    for r in rows:
        assert int(r[1]) > 100 and float(r[2]) > 0 and float(r[3]) > 0, r
        assert r[5] == "True", r
