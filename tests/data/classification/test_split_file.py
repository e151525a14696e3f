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


@pytest.fixture
def folder_with_broken_images(tmp_path):
    """6 training images of 2 classes, of which b0.png and b1.png cannot be read."""
    from PIL import Image

    lines = []
    for i in range(6):
        name = f"{'b' if i < 2 else 'g'}{i}.png"
        if i < 2:
            (tmp_path / name).write_bytes(b"\x89PNG truncated")
        else:
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / name)
        lines.append(f"{name} {i % 2}")
    split = write(tmp_path / "train.txt", "\n".join(lines) + "\n")
    return tmp_path, split


def broken_cfg(root, split, policy, name="brokenfolder"):
    cfg = split_file_cfg(f"{name}_{policy}", root, train=split)
    cfg.MODEL.IMAGE_CLASSIFIER.NUM_CLASSES = 2
    cfg.DATASETS.TRAIN = (f"{name}_{policy}_train",)
    cfg.DATASETS.INVALID_ANNOTATIONS = policy
    cfg.INPUT.CLASSIFICATION.AUGMENTATION = "none"
    cfg.SOLVER.IMS_PER_BATCH, cfg.DATALOADER.NUM_WORKERS = 4, 0
    register_split_file_datasets_from_config(cfg)
    return cfg


def test_training_skips_unreadable_images_when_asked(folder_with_broken_images, caplog):
    from tde_det.data.classification import build_classification_train_loader

    root, split = folder_with_broken_images
    cfg = broken_cfg(root, split, "skip")
    with caplog.at_level("WARNING", logger="tde_det"):
        batches = [b for _, b in zip(range(10), build_classification_train_loader(cfg))]
    assert all(len(b) == 4 for b in batches)  # every batch full, of readable images only
    ids = {d["image_id"] for b in batches for d in b}
    assert ids == {2, 3, 4, 5}
    skips = [r.getMessage() for r in caplog.records
             if "skipping training image" in r.getMessage()]
    assert sorted(m.split()[3].rstrip(":") for m in skips) == [str(root / "b0.png"),
                                                               str(root / "b1.png")]
    # the evaluation mapper of the same config never skips: it names the file
    with pytest.raises(OSError, match=r"cannot read image .*b0.png: .*\.$"):
        ClassificationDatasetMapper(cfg, False)({"file_name": str(root / "b0.png"), "label": 0})


def test_training_stops_on_an_unreadable_image_by_default(folder_with_broken_images):
    from tde_det.data.classification import build_classification_train_loader

    cfg = broken_cfg(*folder_with_broken_images, "error")
    with pytest.raises(OSError, match="cannot read image .*b[01].png: .*Set DATASETS."
                       "INVALID_ANNOTATIONS skip to train without it"):
        for _, _ in zip(range(20), build_classification_train_loader(cfg)):
            pass
    cfg.DATASETS.INVALID_ANNOTATIONS = "drop"
    with pytest.raises(ValueError, match=r"DATASETS.INVALID_ANNOTATIONS must be one of "
                       r"\('error', 'skip'\), got 'drop'"):
        ClassificationDatasetMapper(cfg, True)


@pytest.fixture
def folder_with_missing_images(tmp_path):
    """A split file of 15 images of 2 classes, of which only g0.png, g1.png and g2.png exist."""
    from PIL import Image

    lines = [f"m{i}.png {i % 2}" for i in range(12)]
    for i in range(3):
        Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(tmp_path / f"g{i}.png")
        lines.append(f"g{i}.png {i % 2}")
    return tmp_path, write(tmp_path / "train.txt", "\n".join(lines) + "\n")


def test_missing_image_files_are_listed_before_training(folder_with_missing_images):
    from tde_det.data.classification import build_classification_train_loader

    root, split = folder_with_missing_images
    cfg = broken_cfg(root, split, "error", "missingfolder")
    with pytest.raises(FileNotFoundError) as e:
        build_classification_train_loader(cfg)  # when the dataset is loaded, not at a read
    message = str(e.value)
    assert message.startswith("12 of the 15 image files of dataset missingfolder_error_train do "
                              "not exist:\n  " + str(root / "m0.png") + "\n")
    assert [ln.strip() for ln in message.splitlines()[1:12]] == \
        [str(root / f"m{i}.png") for i in range(10)] + ["... and 2 more"]
    assert "DATASETS.INVALID_ANNOTATIONS skip" in message and "IMAGE_ROOT" in message
    cfg.DATASETS.CHECK_IMAGE_FILES = False  # then the first missing image read stops it
    with pytest.raises(OSError, match=r"cannot read image .*m\d+.png"):
        for _, _ in zip(range(20), build_classification_train_loader(cfg)):
            pass


def test_missing_image_files_are_left_out_of_training_when_asked(folder_with_missing_images,
                                                                 caplog):
    from tde_det.data.classification import (build_classification_test_loader,
                                             build_classification_train_loader)

    root, split = folder_with_missing_images
    cfg = broken_cfg(root, split, "skip", "missingfolder")
    with caplog.at_level("WARNING", logger="tde_det"):
        batches = [b for _, b in zip(range(5), build_classification_train_loader(cfg))]
    assert {d["image_id"] for b in batches for d in b} == {12, 13, 14}
    (warning,) = [r.getMessage() for r in caplog.records if "do not exist" in r.getMessage()]
    assert warning.startswith("12 of the 15 image files of dataset missingfolder_skip_train")
    assert warning.endswith("They are left out of training (DATASETS.INVALID_ANNOTATIONS skip).")
    # evaluation needs every image, whatever the policy
    with pytest.raises(FileNotFoundError, match="12 of the 15 image files"):
        build_classification_test_loader(cfg, "missingfolder_skip_train")


def test_a_split_none_of_whose_images_exists_is_an_error_even_when_skipping(tmp_path):
    from tde_det.data.classification import build_classification_train_loader

    cfg = broken_cfg(tmp_path, write(tmp_path / "train.txt", "a.png 0\nb.png 1\n"), "skip",
                     "emptyfolder")
    with pytest.raises(FileNotFoundError, match=r"2 of the 2 image files .* do not exist"):
        build_classification_train_loader(cfg)
