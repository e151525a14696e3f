"""The built-in ImageNet-LT datasets on a tiny fake layout under $DETECTRON2_DATASETS."""
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

import tde_det.data.classification  # noqa: F401  (registers imagenet_lt_*)
from tde_det.data.classification import ClassificationDatasetMapper, train_class_counts

# (split, relative path, label): ImageNet-LT's val images come from ImageNet's train folder,
# its test images from ImageNet's val folder.
WNIDS = {0: "n01440764", 1: "n01443537", 999: "n15075141"}
SPLITS = {
    "train": [f"train/{WNIDS[c]}/{WNIDS[c]}_{i}.JPEG {c}"
              for c, n in ((0, 3), (1, 2), (999, 1)) for i in range(n)],
    "val": [f"train/{WNIDS[c]}/{WNIDS[c]}_val{c}.JPEG {c}" for c in (1, 999)],
    "test": [f"val/{WNIDS[c]}/ILSVRC2012_val_{c:08d}.JPEG {c}" for c in (0, 1, 999)],
}


@pytest.fixture
def imagenet_lt_root(tmp_path, monkeypatch):
    """Fake ``ImageNet_LT/ImageNet_LT_{train,val,test}.txt`` + tiny JPEGs under ``imagenet/``;
    ``DETECTRON2_DATASETS`` points at it (after tde_det was imported)."""
    (tmp_path / "ImageNet_LT").mkdir()
    for split, lines in SPLITS.items():
        for line in lines:
            path = tmp_path / "imagenet" / line.split()[0]
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((6, 8, 3), int(line.split()[1]) % 256, np.uint8)).save(path)
        (tmp_path / "ImageNet_LT" / f"ImageNet_LT_{split}.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    return tmp_path


def test_val_records_are_read_from_the_root_at_load_time(imagenet_lt_root):
    dicts = DatasetCatalog.get("imagenet_lt_val")
    assert [(d["file_name"], d["label"], d["image_id"]) for d in dicts] == [
        (str(imagenet_lt_root / "imagenet" / "train" / "n01443537" / "n01443537_val1.JPEG"), 1, 0),
        (str(imagenet_lt_root / "imagenet" / "train" / "n15075141" / "n15075141_val999.JPEG"),
         999, 1)]
    test = DatasetCatalog.get("imagenet_lt_test")
    assert [d["label"] for d in test] == [0, 1, 999]
    assert test[2]["file_name"].endswith("imagenet/val/n15075141/ILSVRC2012_val_00000999.JPEG")
    mapped = ClassificationDatasetMapper(False, augmentations=[], image_format="RGB")(test[2])
    assert mapped["image"].shape == (3, 6, 8) and mapped["label"] == 999


def test_val_and_test_groups_come_from_the_train_split(imagenet_lt_root):
    expected = np.zeros(1000, dtype=np.int64)
    expected[[0, 1, 999]] = [3, 2, 1]
    for split in ("train", "val", "test"):
        meta = MetadataCatalog.get(f"imagenet_lt_{split}")
        assert meta.num_classes == 1000 and meta.train_dataset == "imagenet_lt_train"
        assert meta.evaluator_type == "classification"
        assert train_class_counts(f"imagenet_lt_{split}").tolist() == expected.tolist()


def test_missing_split_file_names_the_expected_path(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="split file of dataset 'imagenet_lt_test' not "
                       "found: .*ImageNet_LT/ImageNet_LT_test.txt"):
        DatasetCatalog.get("imagenet_lt_test")
