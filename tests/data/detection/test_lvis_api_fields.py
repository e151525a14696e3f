"""lvis_api_problems: what the LVIS API reads from a ground-truth json, found before a run."""
import json
import re

import pytest

from tde_det.data.detection.lvis_api_fields import check_lvis_api_fields, lvis_api_problems
from tde_det.data.detection.synthetic import write_tiny_lvis

from tests.helpers.lvis_json import edited_copy


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_lvis(str(tmp_path_factory.mktemp("lvis")), num_train=2, num_val=6)


def lvis_eval(path, iou_type):
    """The LVIS API's evaluation of ``path`` with its own annotations as detections."""
    from lvis import LVIS, LVISEval, LVISResults

    gt = LVIS(path)
    with open(path) as f:
        anns = json.load(f)["annotations"]
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "score": 1.0, **({"segmentation": a["segmentation"]} if iou_type == "segm" else {})}
            for a in anns if "bbox" in a]
    if iou_type == "segm":
        from pycocotools import mask as mask_util

        for d in dets:
            img = gt.imgs[d["image_id"]]
            d["segmentation"] = mask_util.merge(
                mask_util.frPyObjects(d["segmentation"], img["height"], img["width"]))
    LVISEval(gt, LVISResults(gt, dets), iou_type).run()


def cat(i):
    return lambda d: d["categories"][i]


# Each edit, what the check says about it, and the evaluation that fails without the check.
BROKEN = {
    "no frequency": (lambda d: cat(0)(d).pop("frequency"),
                     r"1 categories without a 'frequency' of 'r', 'c' or 'f' .*: id 1 "
                     r"'red_square' \(none\)", "bbox"),
    "not r/c/f": (lambda d: [cat(i)(d).update(frequency="rare") for i in (1, 2)],
                  r"2 categories without .*: id 2 'green_triangle' \('rare'\), id 4 "
                  r"'blue_circle' \('rare'\)", "bbox"),
    "no neg_category_ids": (lambda d: d["images"][1].pop("neg_category_ids"),
                            r"1 images without a list 'neg_category_ids' .*: image id 10002$",
                            "bbox"),
    "no not_exhaustive_category_ids": (
        lambda d: d["images"][0].pop("not_exhaustive_category_ids"),
        r"1 images without a list 'not_exhaustive_category_ids' .*: image id 10001", "bbox"),
    "no area": (lambda d: d["annotations"][0].pop("area"),
                r"1 annotations without a numeric 'area': annotation id", "bbox"),
    "no height": (lambda d: d["images"][0].pop("height"),
                  r"1 images without an integer 'height' and 'width' > 0: image id 10001",
                  "segm"),
    "no segmentation": (lambda d: d["annotations"][0].pop("segmentation"),
                        r"1 annotations without a 'segmentation'", "segm"),
    "no annotation id": (lambda d: d["annotations"][0].pop("id"),
                         r"1 annotations without an 'id': an annotation of image id 10001",
                         "bbox"),
}


def test_the_generated_json_has_everything(tiny):
    with open(tiny["val"]) as f:
        assert lvis_api_problems(json.load(f)) == []
    lvis_eval(tiny["val"], "segm")


@pytest.mark.parametrize("problem", sorted(BROKEN))
def test_each_missing_field_is_named_and_would_fail_the_lvis_api(tiny, tmp_path, problem):
    edit, match, iou_type = BROKEN[problem]
    path, _ = edited_copy(tiny["val"], tmp_path / "val.json", edit)
    with pytest.raises(ValueError, match=f"DATASETS.TEST: 'v': {path} cannot be") as err:
        check_lvis_api_fields(path, "DATASETS.TEST: 'v'")
    (line,) = str(err.value).splitlines()[1:-1]  # one problem, between the file and the hint
    assert re.search(match, line.strip()), line
    with pytest.raises((KeyError, TypeError, ValueError)):  # what the user met, after inference
        lvis_eval(path, iou_type)


def test_repeated_ids_and_long_lists(tiny, tmp_path):
    def edit(d):
        d["images"].append(dict(d["images"][0]))
        d["annotations"][1]["id"] = d["annotations"][0]["id"]
        for c in d["categories"]:
            c["frequency"] = "x"
        d["categories"] += [dict(c, id=c["id"] + 100) for c in d["categories"]]

    path, data = edited_copy(tiny["val"], tmp_path / "val.json", edit)
    problems = lvis_api_problems(data)
    assert problems[0].startswith("12 categories without") and problems[0].endswith(
        "... and 2 more")
    assert "1 image ids used by more than one image: 10001 (2 times)" in problems
    assert f"1 annotation ids used by more than one annotation: {data['annotations'][0]['id']} " \
           f"(2 times)" in problems
    path, _ = edited_copy(tiny["val"], tmp_path / "m.json", BROKEN["no segmentation"][0])
    with pytest.raises(ValueError, match="segmentation"):
        check_lvis_api_fields(path, "k")
    check_lvis_api_fields(path, "k", masks=False)  # boxes only: not read
    assert lvis_api_problems([]) == ["no top-level lists 'images', 'annotations', 'categories'"]
