"""Image folder + split file datasets: parsing, errors naming the file and line, registration."""
import numpy as np
import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from tde_det import add_tde_config
from tde_det.data.classification import (
    ClassificationDatasetMapper,
    load_split_file,
    register_split_file_datasets_from_config,
    train_class_counts,
)


def write(path, text):
    path.write_text(text)
    return str(path)


def test_parse_paths_and_labels(tmp_path):
    f = write(tmp_path / "s.txt", "# comment\ntrain/a b/x.JPEG 3\n\ntrain/y.JPEG 0\n")
    dicts = load_split_file(f, "/root", 4)
    assert [(d["file_name"], d["label"], d["image_id"]) for d in dicts] == [
        ("/root/train/a b/x.JPEG", 3, 0), ("/root/train/y.JPEG", 0, 1)]


@pytest.mark.parametrize("text, match", [
    ("a.jpg 0\nonly_a_path\n", r"s.txt, line 2: expected '<relative/path> <label>'"),
    ("a.jpg 0\nb.jpg zero\n", r"s.txt, line 2: the label 'zero' is not an integer"),
    ("a.jpg 0\n\nb.jpg 4\n", r"s.txt, line 3: label 4 is out of range \[0, 4\)"),
    ("a.jpg -1\n", r"s.txt, line 1: label -1 is out of range"),
    ("# nothing\n", "lists no image"),
])
def test_bad_lines_name_file_and_line(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        load_split_file(write(tmp_path / "s.txt", text), "/root", 4)


def test_missing_split_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="split file of dataset 'x' not found: .*nope.txt"):
        load_split_file(str(tmp_path / "nope.txt"), str(tmp_path), 3, "x")


def test_registered_from_config_with_train_counts(tiny_folder):
    cfg = get_cfg()
    add_tde_config(cfg)
    c = cfg.DATASETS.SPLIT_FILE
    c.NAME, c.IMAGE_ROOT = "tinyfolder", str(tiny_folder)
    c.TRAIN, c.TEST = str(tiny_folder / "train.txt"), str(tiny_folder / "test.txt")
    register_split_file_datasets_from_config(cfg)
    register_split_file_datasets_from_config(cfg)  # idempotent
    assert "tinyfolder_val" not in DatasetCatalog.list()
    assert MetadataCatalog.get("tinyfolder_test").num_classes == 10
    labels = [d["label"] for d in DatasetCatalog.get("tinyfolder_train")]
    assert train_class_counts("tinyfolder_test").tolist() == np.bincount(labels).tolist()
    assert train_class_counts("tinyfolder_test")[0] == 30


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    mapper = ClassificationDatasetMapper(True, augmentations=[], image_format="RGB")
    with pytest.raises(OSError, match="cannot read image .*broken.jpg"):
        mapper({"file_name": str(bad), "label": 0, "image_id": 0})
    with pytest.raises(OSError, match="cannot read image .*missing.jpg"):
        mapper({"file_name": str(tmp_path / "missing.jpg"), "label": 0, "image_id": 0})


def split_file_cfg(name, root, **splits):
    cfg = get_cfg()
    add_tde_config(cfg)
    c = cfg.DATASETS.SPLIT_FILE
    c.NAME, c.IMAGE_ROOT = name, str(root)
    for split, path in splits.items():
        setattr(c, split.upper(), str(path))
    return cfg


def test_a_registered_name_with_other_files_is_an_error(tiny_folder):
    with pytest.raises(ValueError, match=r"NAME 'imagenet_lt': dataset 'imagenet_lt_train' is "
                       r"already registered \(a built-in dataset"):
        register_split_file_datasets_from_config(
            split_file_cfg("imagenet_lt", tiny_folder, train=tiny_folder / "train.txt"))
    register_split_file_datasets_from_config(
        split_file_cfg("clashfolder", tiny_folder, train=tiny_folder / "train.txt"))
    other = split_file_cfg("clashfolder", tiny_folder, train=tiny_folder / "test.txt",
                           val=tiny_folder / "val.txt")
    with pytest.raises(ValueError, match="dataset 'clashfolder_train' is already registered with "
                       "split file .*train.txt.* not .*test.txt.*choose another NAME"):
        register_split_file_datasets_from_config(other)
    assert "clashfolder_val" not in DatasetCatalog.list()  # nothing registered on a clash
