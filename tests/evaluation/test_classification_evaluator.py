"""ClassificationEvaluator and accuracy_metrics against hand-computed numbers."""
import csv
import json
import logging

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import print_csv_format, verify_results

from tde_det.evaluation import ClassificationEvaluator, accuracy_metrics

# 4 classes; train counts 150 / 50 / 5 / 10 -> many / medium / few / few. Class 3 has no
# evaluation image. Per image: label, (top-1, top-2) with TDE, (top-1, top-2) without.
IMAGES = [
    (0, (0, 1), (0, 1)), (0, (0, 2), (0, 1)), (0, (0, 1), (0, 1)), (0, (1, 2), (0, 1)),
    (1, (1, 0), (1, 0)), (1, (0, 1), (2, 0)),
    (2, (2, 0), (0, 2)), (2, (2, 1), (1, 0)),
]
TRAIN_COUNTS = [150, 50, 5, 10]
# With TDE: class accuracies 75 / 50 / 100; top-1 6/8; top-2 7/8.
EXPECTED_TDE = {"top1": 75.0, "top2": 87.5, "many": 75.0, "medium": 50.0, "few": 100.0}
# Without: class accuracies 100 / 50 / 0; top-1 5/8 (micro, not the class mean 50); top-2 6/8.
EXPECTED_NO_TDE = {"top1": 62.5, "top2": 75.0, "many": 100.0, "medium": 50.0, "few": 0.0}


def logits(ranking, num_classes=4):
    z = -torch.arange(num_classes, dtype=torch.float32) - 10
    z[ranking[0]], z[ranking[1]] = 2.0, 1.0
    return z


@pytest.fixture(scope="module")
def dataset():
    name = "eval_test_dataset"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [])
        MetadataCatalog.get(name).set(num_classes=4, train_class_counts=TRAIN_COUNTS,
                                      thing_classes=["a", "b", "c", "d"])
    return name


def test_accuracy_metrics_by_hand():
    labels = np.array([im[0] for im in IMAGES])
    preds = np.array([im[1] for im in IMAGES])
    m = accuracy_metrics(labels, preds, ["many", "medium", "few", "few"], 4)
    for k, v in EXPECTED_TDE.items():
        assert m[k] == pytest.approx(v)
    assert m["per_class"][:3].tolist() == [75.0, 50.0, 100.0] and np.isnan(m["per_class"][3])
    empty = accuracy_metrics(np.array([0]), np.array([[0, 1]]), ["few", "few"], 2)
    assert np.isnan(empty["many"]) and empty["few"] == 100.0


def test_evaluator_with_and_without_tde_from_one_pass(dataset, tmp_path):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    log = logging.getLogger("tde_det.evaluation.classification_evaluation")
    log.addHandler(handler)
    level = log.level
    log.setLevel(logging.INFO)
    ev = ClassificationEvaluator(dataset, output_dir=str(tmp_path), topk=2, alpha=3.0)
    ev.reset()
    for label, tde, plain in IMAGES:
        ev.process([{"label": label}], [{"logits": logits(tde), "logits_no_tde": logits(plain),
                                         "tde": True}])
    res = ev.evaluate()["classification"]
    log.removeHandler(handler)
    log.setLevel(level)
    for k, v in EXPECTED_TDE.items():
        assert res[k] == pytest.approx(v)
        assert res[k + "_no_tde"] == pytest.approx(EXPECTED_NO_TDE[k])
    table = "\n".join(r.getMessage() for r in records)
    # class 3 (few) has no evaluation image: the few accuracy averages 1 of its 2 classes
    for text in ("many (1 cls)", "medium (1 cls)", "few (1 of 2 cls)", "overall top-1",
                 "TDE (eq. 8, alpha=3.0)", "no TDE (eq. 7)", "87.50", "62.50"):
        assert text in table
    rows = list(csv.DictReader(open(tmp_path / f"per_class_accuracy_{dataset}.csv")))
    assert [r["group"] for r in rows] == ["many", "medium", "few", "few"]
    assert [r["num_images"] for r in rows] == ["4", "2", "2", "0"]
    assert float(rows[0]["top1"]) == 75.0 and float(rows[0]["top1_no_tde"]) == 100.0
    assert rows[3]["top1"] == "nan" and rows[1]["class_name"] == "b"
    saved = json.load(open(tmp_path / f"classification_{dataset}.json"))
    assert saved["results"]["top1_no_tde"] == 62.5
    assert saved["num_classes_per_group"] == {"many": 1, "medium": 1, "few": 2}
    assert saved["num_evaluated_classes_per_group"] == {"many": 1, "medium": 1, "few": 1}


def test_an_empty_group_is_nan_in_results_and_null_in_the_json(dataset, tmp_path):
    # many > 200: no class is "many"; classes 0 and 1 are medium, 2 and 3 few.
    ev = ClassificationEvaluator(dataset, distributed=False, output_dir=str(tmp_path),
                                 many_threshold=200, topk=2)
    for label, tde, _ in IMAGES:
        ev.process([{"label": label}], [{"logits": logits(tde), "tde": False}])
    results = ev.evaluate()
    res = results["classification"]
    assert np.isnan(res["many"]) and res["medium"] == pytest.approx(62.5)
    text = (tmp_path / f"classification_{dataset}.json").read_text()
    assert "NaN" not in text
    saved = json.loads(text)
    assert saved["results"]["many"] is None and saved["results"]["few"] == 100.0
    assert saved["num_evaluated_classes_per_group"] == {"many": 0, "medium": 2, "few": 1}
    print_csv_format(results)  # Detectron2's consumers take the NaN
    cfg = get_cfg()
    cfg.TEST.EXPECTED_RESULTS = [["classification", "medium", 62.5, 0.01]]
    assert verify_results(cfg, results)


def test_evaluator_without_tde_reports_one_set(dataset):
    ev = ClassificationEvaluator(dataset, distributed=False, many_threshold=60,
                                 few_threshold=8, topk=5)
    assert ev.groups == ["many", "medium", "few", "medium"] and ev.topk == 4
    ev.reset()
    for label, _, plain in IMAGES:
        z = logits(plain)
        ev.process([{"label": label}], [{"logits": z, "logits_no_tde": z, "tde": False}])
    res = ev.evaluate()["classification"]
    assert set(res) == {"top1", "top4", "many", "medium", "few"}
    assert res["top1"] == 62.5 and res["top4"] == 100.0
    assert res["medium"] == pytest.approx(50.0) and res["few"] == 0.0
