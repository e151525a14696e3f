"""tools/benchmarks/lvis_eval.py on a few images prints its table, and the two evaluations agree
(timings are never compared: they belong to the benchmark)."""
import math

from tests.helpers.tools import load_tool, run_tool, table_rows


def test_tiny_run_prints_the_table_with_equal_precision():
    proc = run_tool("benchmarks/lvis_eval.py", "--images", "6", "--detections-per-image", "40")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = table_rows(proc.stdout, "bbox", "segm")
    assert [(r[0], r[1]) for r in rows] == [
        ("bbox", "LVIS API's LVISEval"), ("bbox", "FastLVISEval"),
        ("segm", "LVIS API's LVISEval"), ("segm", "FastLVISEval")], proc.stdout
    for r in rows:
        assert all(math.isfinite(float(v)) and float(v) >= 0 for v in r[2:7]), r
    assert [r[8] for r in rows] == ["", "True", "", "True"]
    assert float(rows[1][7].rstrip("x")) > 0


def test_synthetic_data_is_lvis_shaped():
    bench = load_tool("benchmarks/lvis_eval")
    dataset, detections = bench.synthetic_lvis(20, 50, masks=True)
    assert len(dataset["categories"]) == 1203 and len(detections) == 20 * 50
    assert {c["frequency"] for c in dataset["categories"]} == {"r", "c", "f"}
    assert len(dataset["annotations"]) > 100
    images = {i["id"]: i for i in dataset["images"]}
    for ann in dataset["annotations"]:  # no ground-truth category is also negative
        assert ann["category_id"] not in images[ann["image_id"]]["neg_category_ids"]
    assert all(isinstance(d["segmentation"]["counts"], str) for d in detections)
