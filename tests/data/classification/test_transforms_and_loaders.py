"""Augmentations (as Detectron2 Augmentations), the mapper and the train/test loaders."""
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import transforms as T

from tde_det import add_tde_config
from tde_det.data.classification import (
    CenterCrop,
    ClassificationDatasetMapper,
    ColorJitter,
    PadRandomCrop,
    RandomResizedCrop,
    build_classification_augmentation,
    build_classification_test_loader,
    build_classification_train_loader,
    register_cifar_lt,
)


def image(h=40, w=60):
    return np.random.RandomState(0).randint(0, 256, (h, w, 3)).astype(np.uint8)


def test_random_resized_crop_area_and_output_size():
    np.random.seed(0)
    aug = RandomResizedCrop(24, scale=(0.25, 0.25), ratio=(1.0, 1.0))
    tfm = aug.get_transform(image(40, 40))
    crop = tfm.transforms[0]
    assert (crop.w, crop.h) == (20, 20)  # area 0.25 * 1600, square
    out, _ = T.apply_augmentations([aug], image(40, 40))
    assert out.shape == (24, 24, 3)


def test_center_crop_and_pad_random_crop():
    img = image(40, 60)
    out, _ = T.apply_augmentations([CenterCrop(30)], img)
    assert np.array_equal(out, img[5:35, 15:45])
    small, _ = T.apply_augmentations([CenterCrop(50)], image(40, 40))
    assert small.shape == (50, 50, 3) and small[0].sum() == 0  # zero-padded
    np.random.seed(1)
    img = image(32, 32)
    out, tfm = T.apply_augmentations([PadRandomCrop(32, pad=4)], img)
    x0, y0 = tfm.transforms[1].x0, tfm.transforms[1].y0
    padded = np.pad(img, ((4, 4), (4, 4), (0, 0)))
    assert out.shape == (32, 32, 3) and np.array_equal(out, padded[y0:y0 + 32, x0:x0 + 32])


def test_color_jitter():
    img = image()
    assert np.array_equal(T.apply_augmentations([ColorJitter(0, 0, 0)], img)[0], img)
    np.random.seed(0)
    tfm = ColorJitter(0.4, 0.4, 0.4).get_transform(img)
    assert sorted(op for op, _ in tfm.ops) == ["brightness", "contrast", "saturation"]
    assert all(0.6 <= f <= 1.4 for _, f in tfm.ops)
    gray = np.full((4, 4, 3), 100, np.uint8)
    from tde_det.data.classification import transforms as tr
    out = tr.ColorJitterTransform([("brightness", 1.2), ("saturation", 0.0)]).apply_image(gray)
    assert out.dtype == np.uint8 and (out == 120).all()


def _cfg(aug):
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.CLASSIFICATION.AUGMENTATION = aug
    return cfg


@pytest.mark.parametrize("aug, train, names", [
    ("imagenet", True, ["RandomResizedCrop", "RandomFlip", "ColorJitter"]),
    ("imagenet", False, ["ResizeShortestEdge", "CenterCrop"]),
    ("cifar", True, ["PadRandomCrop", "RandomFlip"]),
    ("cifar", False, []),
    ("none", True, []),
])
def test_augmentation_lists(aug, train, names):
    assert [type(a).__name__ for a in build_classification_augmentation(_cfg(aug), train)] == names


def test_mapper_imagenet_style_sizes():
    cfg = _cfg("imagenet")
    d = {"image": image(300, 400), "label": 3, "image_id": 7}
    out = ClassificationDatasetMapper(cfg, True)(d)
    assert out["image"].shape == (3, 224, 224) and out["image"].dtype == torch.uint8
    assert out["label"] == 3 and out["image_id"] == 7
    assert ClassificationDatasetMapper(cfg, False)(d)["image"].shape == (3, 224, 224)
    with pytest.raises(ValueError, match="AUGMENTATION"):
        build_classification_augmentation(_cfg("autoaugment"), True)


def test_train_and_test_loaders(tiny_cifar_root):
    register_cifar_lt("tiny_loader_r10", str(tiny_cifar_root), "cifar10", 10, val_per_class=3)
    cfg = _cfg("cifar")
    cfg.INPUT.CLASSIFICATION.CROP_SIZE = 32
    cfg.MODEL.IMAGE_CLASSIFIER.NUM_CLASSES = 10
    cfg.DATASETS.TRAIN = ("tiny_loader_r10_train",)
    cfg.SOLVER.IMS_PER_BATCH = 16
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.TEST.CLASSIFICATION.IMS_PER_BATCH = 7
    batch = next(iter(build_classification_train_loader(cfg)))
    assert len(batch) == 16 and batch[0]["image"].shape == (3, 32, 32)
    batches = list(build_classification_test_loader(cfg, "tiny_loader_r10_val"))
    assert [len(b) for b in batches] == [7, 7, 7, 7, 2]
    assert sorted(d["image_id"] for b in batches for d in b) == sorted(
        d["image_id"] for d in __import__("detectron2.data", fromlist=["DatasetCatalog"])
        .DatasetCatalog.get("tiny_loader_r10_val"))
    cfg.MODEL.IMAGE_CLASSIFIER.NUM_CLASSES = 100
    with pytest.raises(ValueError, match="has 10 classes but MODEL.IMAGE_CLASSIFIER.NUM_CLASSES"):
        build_classification_test_loader(cfg, "tiny_loader_r10_val")
