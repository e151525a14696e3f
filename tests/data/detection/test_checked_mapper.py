"""CheckedDatasetMapper: an unreadable image is named, or skipped in training with 'skip'."""
import logging
import os
import shutil

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data.detection_utils import SizeMismatchError
from PIL import Image

from tde_det import add_tde_config
from tde_det.data.detection import (
    CheckedDatasetMapper,
    MapSkippingUnreadable,
    load_lvis_json_checked,
)
from tde_det.data.detection.synthetic import write_tiny_lvis
from tde_det.engine import detection_task


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The tiny training split, with image 0 corrupt and image 1 a truncated JPEG."""
    root = tmp_path_factory.mktemp("mapper")
    paths = write_tiny_lvis(str(root), num_train=6, num_val=1, seed=3)
    dicts = load_lvis_json_checked(paths["train"], paths["image_root"], require_masks=True)
    images = root / "broken"
    images.mkdir()
    for d in dicts:
        shutil.copy(d["file_name"], images)
        d["file_name"] = str(images / os.path.basename(d["file_name"]))
    with open(dicts[0]["file_name"], "wb") as f:
        f.write(b"\x89PNG not really")
    jpeg = str(images / "truncated.jpg")
    Image.open(dicts[1]["file_name"]).convert("RGB").save(jpeg, quality=95)
    with open(jpeg, "rb") as f:
        head = f.read()
    with open(jpeg, "wb") as f:
        f.write(head[: len(head) // 2])
    dicts[1]["file_name"] = jpeg
    return dicts


def cfg_with(policy: str):
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.MODEL.MASK_ON = True
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (64,), 128
    cfg.INPUT.RANDOM_FLIP = "none"  # so that two mappers give the same image
    cfg.DATASETS.INVALID_ANNOTATIONS = policy
    return cfg


def test_readable_images_map_as_detectron2_maps_them(data):
    cfg = cfg_with("error")
    for is_train in (True, False):
        ours, theirs = CheckedDatasetMapper(cfg, is_train), DatasetMapper(cfg, is_train)
        a, b = ours(data[2]), theirs(data[2])
        assert sorted(a) == sorted(b) and (a["image"] == b["image"]).all()
        if is_train:
            assert (a["instances"].gt_classes == b["instances"].gt_classes).all()


@pytest.mark.parametrize("index", [0, 1])
def test_unreadable_image_is_named(data, index):
    name = data[index]["file_name"]
    with pytest.raises(OSError, match=f"cannot read image {name}: .*Set DATASETS.INVALID_"
                                      f"ANNOTATIONS skip to train without it"):
        CheckedDatasetMapper(cfg_with("error"), True)(data[index])
    # evaluation never skips, whatever the policy
    with pytest.raises(OSError, match=f"cannot read image {name}"):
        CheckedDatasetMapper(cfg_with("skip"), False)(data[index])


def test_skip_logs_each_unreadable_image_once_and_returns_none(data, caplog):
    mapper = CheckedDatasetMapper(cfg_with("skip"), True)
    with caplog.at_level(logging.WARNING, logger="tde_det.data.map_skipping"):
        assert mapper(data[0]) is None and mapper(data[1]) is None and mapper(data[0]) is None
    warned = [r.getMessage() for r in caplog.records if r.name == "tde_det.data.map_skipping"]
    assert len(warned) == 2
    assert data[0]["file_name"] in warned[0] and "truncated" in warned[1]


def test_other_errors_are_not_taken_for_an_unreadable_image(data):
    record = dict(data[2], height=data[2]["height"] + 1)  # the image reads fine
    with pytest.raises(SizeMismatchError):
        CheckedDatasetMapper(cfg_with("skip"), True)(record)


def test_training_loader_with_skip_draws_only_readable_images(data, tmp_path):
    """The detection task's train loader (Detectron2's, the images mapped by
    MapSkippingUnreadable): every batch is full and holds only readable images."""
    DatasetCatalog.register("mapper_broken_train", lambda: [dict(d) for d in data])
    MetadataCatalog.get("mapper_broken_train").set(thing_classes=[str(i) for i in range(6)])
    cfg = cfg_with("skip")
    cfg.DATASETS.TRAIN, cfg.MODEL.ROI_HEADS.NUM_CLASSES = ("mapper_broken_train",), 6
    cfg.SOLVER.IMS_PER_BATCH, cfg.DATALOADER.NUM_WORKERS = 2, 0
    cfg.OUTPUT_DIR = str(tmp_path)
    try:  # (the skips are logged: see the test above)
        batches = [b for _, b in zip(range(12), detection_task.build_train_loader(cfg))]
    finally:
        DatasetCatalog.remove("mapper_broken_train")
    assert all(len(b) == 2 for b in batches)
    assert {d["file_name"] for b in batches for d in b} == {d["file_name"] for d in data[2:]}
    # with the default policy the first unreadable image drawn stops training, named
    mapped = MapSkippingUnreadable(data[:2], CheckedDatasetMapper(cfg_with("error"), True))
    with pytest.raises(OSError, match="cannot read image"):
        mapped[0]


def test_no_readable_image_at_all_is_an_error(data):
    mapped = MapSkippingUnreadable(data[:2], CheckedDatasetMapper(cfg_with("skip"), True))
    with pytest.raises(RuntimeError, match="none of the 2 training images can be read"):
        mapped[1]


def _odd_only(d):
    return None if d["i"] % 2 == 0 else d["i"]


def test_each_loader_worker_draws_its_own_replacements():
    """Two workers meeting the same skipped images must not replace them with the same
    sequence of images (a shared seed would repeat those images in every batch)."""
    mapped = MapSkippingUnreadable([{"i": i} for i in range(200)], _odd_only, seed=5)
    loader = torch.utils.data.DataLoader(mapped, batch_size=None, num_workers=2,
                                         sampler=[0, 0, 2, 2, 4, 4, 6, 6, 8, 8])
    drawn = list(loader)
    assert all(i % 2 == 1 for i in drawn)
    # worker w maps the (w)th of every two indices: the same skipped image, its own draw
    assert drawn[0::2] != drawn[1::2]
    # in the main process (no worker) the draws follow the seed alone
    again = MapSkippingUnreadable([{"i": i} for i in range(200)], _odd_only, seed=5)
    assert [mapped[0] for _ in range(5)] == [again[0] for _ in range(5)]
