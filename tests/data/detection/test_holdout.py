"""tde_det.data.detection.holdout: held-out LVIS-format images to choose alpha on."""
import json
import shlex

import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from tde_det import add_tde_config
from tde_det.data.detection import (
    register_lvis_datasets_from_config,
    set_invalid_annotation_policy,
)
from tde_det.data.detection.holdout import main, split_lvis_json
from tde_det.data.detection.synthetic import write_tiny_lvis


def test_held_out_images_and_the_rest_partition_the_json(tmp_path, capsys):
    paths = write_tiny_lvis(str(tmp_path / "data"), num_train=6, num_val=2, seed=1)
    rest, heldout = split_lvis_json(paths["train"], 2, str(tmp_path / "split"), seed=3)
    original = json.load(open(paths["train"]))
    parts = [json.load(open(p)) for p in (rest, heldout)]
    assert [len(p["images"]) for p in parts] == [4, 2]
    image_ids = [{img["id"] for img in p["images"]} for p in parts]
    assert not image_ids[0] & image_ids[1]
    assert image_ids[0] | image_ids[1] == {img["id"] for img in original["images"]}
    for p, ids in zip(parts, image_ids):
        assert p["categories"] == original["categories"]  # r/c/f frequencies kept
        assert {a["image_id"] for a in p["annotations"]} <= ids
    assert sorted(a["id"] for p in parts for a in p["annotations"]) == sorted(
        a["id"] for a in original["annotations"])
    assert split_lvis_json(paths["train"], 2, str(tmp_path / "again"), seed=3)  # same draw
    assert json.load(open(tmp_path / "again" / "tiny_lvis_train_heldout.json")) == parts[1]
    # the printed overrides register both parts as LVIS datasets
    main(["--json", paths["train"], "--images", "2", "--out", str(tmp_path / "cli"),
          "--image-root", paths["image_root"]])
    overrides = shlex.split(capsys.readouterr().out.split("register them with:\n")[1])  # a shell's
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_list(overrides)
    register_lvis_datasets_from_config(cfg)
    try:
        assert cfg.DATASETS.LVIS_CUSTOM.NAMES == ("tiny_lvis_train_rest", "tiny_lvis_train_heldout")
        assert len(DatasetCatalog.get("tiny_lvis_train_heldout")) == 2
        assert MetadataCatalog.get("tiny_lvis_train_heldout").evaluator_type == "lvis"
    finally:
        for name in cfg.DATASETS.LVIS_CUSTOM.NAMES:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        set_invalid_annotation_policy()  # the config set it, for the whole process


def test_bad_holdouts_are_refused_by_name(tmp_path):
    paths = write_tiny_lvis(str(tmp_path / "data"), num_train=3, num_val=1, seed=1)
    for n in (0, 3):
        with pytest.raises(ValueError, match=r"--images must be in \[1, 2\].*has 3 images"):
            split_lvis_json(paths["train"], n, str(tmp_path))
    bad = tmp_path / "truncated.json"
    bad.write_text('{"images": [')
    with pytest.raises(ValueError, match="cannot read the LVIS-format json .*truncated.json"):
        split_lvis_json(str(bad), 1)
