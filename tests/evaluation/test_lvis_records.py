"""RecordsLVISEvaluator: its records' cheap deep copy, and evaluators sharing one ground truth,
give Detectron2's LVISEvaluator's results."""
import copy
import json

import lvis
import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from detectron2.evaluation import LVISEvaluator
from detectron2.utils import comm

from tde_det.data.detection.lvis import register_lvis_dataset
from tde_det.data.detection.synthetic import write_tiny_lvis
from tde_det.evaluation import RecordsLVISEvaluator
from tde_det.evaluation.detection_alpha_sweep import EvaluatorsSharingGroundTruth
from tde_det.evaluation.fast_lvis_eval import FastLVISEval
from tde_det.evaluation.lvis_records import LVIS_METRICS, evaluate_lvis_records, lvis_results

NAME = "tiny_lvis_records_val"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    paths = write_tiny_lvis(str(tmp_path_factory.mktemp("records")), num_train=1, num_val=6,
                            seed=11)
    register_lvis_dataset(NAME, paths["val"], paths["image_root"])
    return json.load(open(paths["val"]))


def _records(data, seed):
    """Per image, json records as ``instances_to_coco_json`` gives them (contiguous class ids,
    RLE masks with str counts): each ground truth box and mask, shifted by a few pixels, plus
    false positives with another class; random scores."""
    rng = np.random.default_rng(seed)
    images = {i["id"]: i for i in data["images"]}
    contiguous = {c["id"]: k for k, c in enumerate(sorted(data["categories"],
                                                          key=lambda c: c["id"]))}
    per_image = {i: [] for i in images}
    for ann in data["annotations"]:
        img = images[ann["image_id"]]
        for fp in (False, True):
            dx, dy = (int(v) for v in rng.integers(-3, 4, size=2))
            poly = [[v + (dx if k % 2 == 0 else dy) for k, v in enumerate(p)]
                    for p in ann["segmentation"]]
            rle = mask_utils.merge(mask_utils.frPyObjects(poly, img["height"], img["width"]))
            rle["counts"] = rle["counts"].decode("utf-8")
            x, y, w, h = ann["bbox"]
            cls = contiguous[ann["category_id"]]
            per_image[ann["image_id"]].append({
                "image_id": ann["image_id"], "category_id": (cls + 1) % len(contiguous) if fp
                else cls, "bbox": [x + dx, y + dy, w, h], "score": float(rng.random()),
                "segmentation": rle})
    return [{"image_id": i} for i in per_image], list(per_image.values())


def test_evaluation_copies_the_records(dataset):
    """The LVIS API writes "area", "id" (and from a mask, "bbox") into the records it gets:
    evaluate_lvis_records hands it one-level copies, without "bbox" for the mask AP."""
    inputs, records = _records(dataset, seed=3)
    ev = RecordsLVISEvaluator(NAME, ("bbox", "segm"), distributed=False, output_dir="")
    flat = RecordsLVISEvaluator._json_records(ev, [{"instances": r} for r in records])
    before = copy.deepcopy(flat)
    for task in ("bbox", "segm"):
        metrics = evaluate_lvis_records(ev.ground_truth, flat, task)
        assert list(metrics) == list(LVIS_METRICS) and 0 < metrics["AP"] < 100
    assert flat == before
    segm = lvis_results(ev.ground_truth, flat, "segm", 300).dataset["annotations"]
    assert segm[0]["segmentation"] is flat[0]["segmentation"]  # the masks are shared
    assert segm[0]["bbox"] is not flat[0]["bbox"]  # the mask's box, as without "bbox"
    assert all(np.isnan(v) for v in evaluate_lvis_records(ev.ground_truth, [], "bbox").values())


@pytest.mark.parametrize("max_dets", [300, 3])
def test_mask_results_are_the_lvis_apis_of_the_records_without_box(dataset, max_dets):
    """lvis_results for "segm": the
    annotations (order, ids, areas, boxes, every other field) are those LVISResults makes of
    the records without "bbox", as Detectron2 hands them; at most max_dets per image."""
    inputs, records = _records(dataset, seed=5)
    ev = RecordsLVISEvaluator(NAME, ("segm",), distributed=False, output_dir="")
    flat = RecordsLVISEvaluator._json_records(ev, [{"instances": r} for r in records])
    ours = lvis_results(ev.ground_truth, flat, "segm", max_dets).dataset["annotations"]
    theirs = lvis.LVISResults(ev.ground_truth, [{k: v for k, v in r.items() if k != "bbox"}
                                                for r in copy.deepcopy(flat)],
                              max_dets=max_dets).dataset["annotations"]
    assert len(ours) == len(theirs) < (len(flat) if max_dets == 3 else len(flat) + 1)
    for a, b in zip(ours, theirs):
        assert a.keys() == b.keys()
        assert type(a["area"]) is type(b["area"]) and a["area"] == b["area"]
        assert a["bbox"].dtype == b["bbox"].dtype and np.array_equal(a["bbox"], b["bbox"])
        assert all(a[k] == b[k] for k in a if k not in ("area", "bbox"))


@pytest.mark.parametrize("fast_eval", [True, False])
def test_records_evaluator_and_shared_ground_truth_equal_lvis_evaluator(dataset, tmp_path,
                                                                         monkeypatch, fast_eval):
    inputs, records = _records(dataset, seed=0)
    assert sum(map(len, records)) > 20
    plain = LVISEvaluator(NAME, ("bbox", "segm"), distributed=False,
                          output_dir=str(tmp_path / "plain"))
    plain.reset()
    plain._predictions = [{"image_id": i["image_id"], "instances": copy.deepcopy(r)}
                          for i, r in zip(inputs, records)]
    expected = plain.evaluate()
    assert 0 < expected["segm"]["AP"] < 100 and 0 < expected["bbox"]["AP"] < 100

    ours = RecordsLVISEvaluator(NAME, ("bbox", "segm"), distributed=False, output_dir="",
                                fast_eval=fast_eval)
    used = []  # the evaluation class each task ran (FastLVISEval inherits run)
    monkeypatch.setattr(lvis.LVISEval, "run", lambda self, run=lvis.LVISEval.run: used.append(
        type(self)) or run(self))
    ground_truth = ours._lvis_api
    annotations = ground_truth.dataset["annotations"]
    copied = []  # the annotations LVISResults deep-copies with the ground truth's dataset
    original = lvis.LVISResults.__init__
    monkeypatch.setattr(lvis.LVISResults, "__init__", lambda self, gt, *a, **k: copied.append(
        len(gt.dataset["annotations"])) or original(self, gt, *a, **k))
    twins = [ours.sharing_ground_truth(""), ours.sharing_ground_truth(str(tmp_path / "twin"))]
    assert all(t._lvis_api is ours._lvis_api for t in twins)  # one parse of the json
    assert twins[1]._output_dir == str(tmp_path / "twin") and ours._output_dir == ""
    for ev in [ours] + twins:
        ev.reset()
        ev.process_records(inputs, copy.deepcopy(records))
    assert len({id(ev._predictions) for ev in [ours] + twins}) == 3
    # one after another on the one ground truth (masks converted to RLE in place by the first)
    assert ours.evaluate() == expected
    assert twins[0].evaluate() == expected
    assert twins[1].evaluate() == expected
    # it evaluated copies: the held records are unchanged (plain dicts, contiguous class ids),
    # so evaluating again gives the same numbers (Detectron2's evaluator maps the ids in place)
    assert ours._predictions == [{"image_id": i["image_id"], "instances": r}
                                 for i, r in zip(inputs, records)]
    assert ours.evaluate() == expected
    assert copied == [0] * 8  # 4 evaluations, boxes and masks: no annotation list copied
    assert used == [FastLVISEval if fast_eval else lvis.LVISEval] * 8
    assert ours._lvis_api is ground_truth and ground_truth.dataset["annotations"] is annotations
    assert len(annotations) > 0
    saved = torch.load(tmp_path / "twin" / "instances_predictions.pth", weights_only=True)
    assert saved == ours._predictions and type(saved[0]["instances"][0]) is dict
    written = json.load(open(tmp_path / "twin" / "lvis_instances_results.json"))
    assert written == json.load(open(tmp_path / "plain" / "lvis_instances_results.json"))
    # a second set of predictions on the same ground truth: not the first's numbers
    other = ours.sharing_ground_truth("")
    other.reset()
    other.process_records(inputs, _records(dataset, seed=1)[1])
    assert other.evaluate() != expected


def test_evaluator_factory_parses_the_json_once(dataset):
    built = []

    def build(folder):
        built.append(folder)
        return RecordsLVISEvaluator(NAME, ("bbox",), distributed=False, output_dir=folder)

    make = EvaluatorsSharingGroundTruth(build, lambda a: f"out/alpha_{a:g}")
    evaluators = [make(a) for a in (0.0, 0.5, 1.5)]
    assert built == ["out/alpha_0"]
    assert [e._output_dir for e in evaluators] == ["out/alpha_0", "out/alpha_0.5",
                                                   "out/alpha_1.5"]
    assert len({id(e._lvis_api) for e in evaluators}) == 1
    # another evaluator type (COCOEvaluator for COCO-format data): built each time
    others = []
    make = EvaluatorsSharingGroundTruth(lambda folder: others.append(folder) or object())
    make(0.0), make(1.0)
    assert others == ["", ""]


def test_dataset_records_use_the_json_category_ids(dataset):
    from detectron2.data import MetadataCatalog

    inputs, records = _records(dataset, seed=2)
    ev = RecordsLVISEvaluator(NAME, ("bbox",), distributed=False, output_dir="")
    ev.reset()
    ev.process_records(inputs, records)
    ids = sorted(c["id"] for c in dataset["categories"])
    got = ev.dataset_records()
    assert [r["category_id"] for r in got] == [ids[r["category_id"]] for rs in records
                                               for r in rs]
    assert got[0] is not records[0][0] and ev.ground_truth is ev._lvis_api
    # no id map in the metadata (Detectron2's builtin LVIS): contiguous id + 1
    meta = MetadataCatalog.get(NAME)
    MetadataCatalog.get("tiny_lvis_records_no_map").set(json_file=meta.json_file,
                                                        evaluator_type="lvis")
    plain_ids = RecordsLVISEvaluator("tiny_lvis_records_no_map", ("bbox",), distributed=False,
                                     output_dir="")
    plain_ids.reset()
    plain_ids.process_records(inputs, records)
    assert [r["category_id"] for r in plain_ids.dataset_records()] == [
        r["category_id"] + 1 for rs in records for r in rs]


@pytest.mark.parametrize("fast", [True, False])
def test_no_pycocotools_area_call_gets_more_than_255_masks(dataset, monkeypatch, fast):
    """pycocotools' ``mask.area`` of more than 255 RLEs in one call raises OverflowError under
    numpy >= 2: the mask evaluation of many detections never makes such a call."""
    inputs, records = _records(dataset, seed=7)
    ev = RecordsLVISEvaluator(NAME, ("segm",), distributed=False, output_dir="")
    flat = RecordsLVISEvaluator._json_records(ev, [{"instances": r} for r in records]) * 12
    assert len(flat) > 255
    sizes = []
    area = mask_utils.area
    monkeypatch.setattr(mask_utils, "area", lambda rles: sizes.append(
        len(rles) if isinstance(rles, list) else 1) or area(rles))
    metrics = evaluate_lvis_records(ev.ground_truth, flat, "segm", fast=fast)
    assert 0 < metrics["AP"] < 100
    assert sizes and max(sizes) <= 255, max(sizes)


def test_each_task_writes_its_per_class_files(dataset, tmp_path, caplog, monkeypatch):
    """Per task, per_class_<task>.{csv,json,png} in the output folder (or in per_class_dir,
    also without saved predictions): one row per category, whose APs give the headline."""
    inputs, records = _records(dataset, seed=4)
    folders = {"both": (str(tmp_path / "both"), None), "only": ("", str(tmp_path / "only")),
               "none": (str(tmp_path / "none"), "")}
    evaluators = {}
    for name, (output_dir, per_class_dir) in folders.items():
        ev = RecordsLVISEvaluator(NAME, ("bbox", "segm"), distributed=False,
                                  output_dir=output_dir, per_class_dir=per_class_dir)
        ev.reset()
        ev.process_records(inputs, copy.deepcopy(records))
        with caplog.at_level("INFO", logger="tde_det.evaluation.per_class_ap"):
            evaluators[name] = (ev, ev.evaluate())
    per_class = {f"per_class_{t}.{e}" for t in ("bbox", "segm") for e in ("csv", "json", "png")}
    predictions = {"instances_predictions.pth", "lvis_instances_results.json"}
    assert {p.name for p in (tmp_path / "both").iterdir()} == per_class | predictions
    assert {p.name for p in (tmp_path / "only").iterdir()} == per_class
    assert {p.name for p in (tmp_path / "none").iterdir()} == predictions
    written = [r.getMessage() for r in caplog.records if "Wrote the per-class" in r.getMessage()]
    assert len(written) == 4
    assert written[-1].endswith(f"{tmp_path}/only/per_class_segm.{{csv,json,png}}")
    ev, results = evaluators["both"]
    categories = sorted(dataset["categories"], key=lambda c: c["id"])
    for task in ("bbox", "segm"):
        rows = json.load(open(tmp_path / "both" / f"per_class_{task}.json"))
        assert rows == json.load(open(tmp_path / "only" / f"per_class_{task}.json"))
        assert [(r["id"], r["name"], r["frequency"], r["image_count"]) for r in rows] == [
            (c["id"], c["name"], c["frequency"], c["image_count"]) for c in categories]
        assert [r["instances"] for r in rows] == [
            sum(a["category_id"] == c["id"] for a in dataset["annotations"]) for c in categories]
        for metric, groups in (("AP", "rcf"), ("APr", "r"), ("APc", "c"), ("APf", "f")):
            values = [r["AP"] for r in rows if r["frequency"] in groups and r["AP"] is not None]
            assert values or results[task][metric] == -100, metric  # LVIS's -1: no class
            if values:
                assert np.isclose(np.mean(values), results[task][metric], rtol=1e-12, atol=0)
        with open(tmp_path / "both" / f"per_class_{task}.csv") as f:
            assert len(f.read().splitlines()) == len(categories) + 1
        assert len(ev.per_class_rows[task]) == len(categories)
    # a twin writes to its own folders; only the main process writes
    twin = ev.sharing_ground_truth("", str(tmp_path / "twin"))
    assert twin.per_class_rows == {} and twin.per_class_dir == str(tmp_path / "twin")
    assert ev.sharing_ground_truth(str(tmp_path / "x")).per_class_dir == str(tmp_path / "x")
    monkeypatch.setattr(comm, "is_main_process", lambda: False)
    twin.process_records(inputs, copy.deepcopy(records))
    assert twin.evaluate() == results and not (tmp_path / "twin").exists()
    assert twin.per_class_rows == ev.per_class_rows or json.dumps(
        twin.per_class_rows) == json.dumps(ev.per_class_rows)


def test_per_class_folders_of_the_alpha_factory(dataset):
    def build(folder):
        return RecordsLVISEvaluator(NAME, ("bbox",), distributed=False, output_dir=folder)

    make = EvaluatorsSharingGroundTruth(build, lambda a: "", lambda a: f"out/alpha_{a:g}")
    evaluators = [make(a) for a in (0.0, 0.5)]
    assert [e._output_dir for e in evaluators] == ["", ""]
    assert [e.per_class_dir for e in evaluators] == ["out/alpha_0", "out/alpha_0.5"]
    assert evaluators[0]._lvis_api is evaluators[1]._lvis_api
    make = EvaluatorsSharingGroundTruth(build, lambda a: f"p/alpha_{a:g}")
    assert [make(a).per_class_dir for a in (0.0, 1.0)] == ["p/alpha_0", "p/alpha_1"]
