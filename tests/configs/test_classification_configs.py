"""Every classification config builds a model (CPU), and carries the paper's settings."""
import os
import re

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.modeling.backbone import ResNet

import tde_det  # noqa: F401  (registration)
from tde_det import add_tde_config
from tde_det.data.classification import long_tailed_counts
from tde_det.modeling.meta_arch import TDEImageClassifier
from tests.helpers.configs import CLASSIFICATION_CONFIGS as CONFIGS
from tests.helpers.configs import CONFIG_DIR
IMAGENET_LT_ITERS_PER_EPOCH = 115846 // 512  # 226


def load(name):
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(os.path.join(CONFIG_DIR, name))
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def test_the_required_configs_exist():
    for name in [f"ImageNet-LT/X_50_32x4d_{v}.yaml" for v in (
            "baseline", "cosine", "capsule", "deconfound", "cosine_tde", "capsule_tde", "tde")] + [
            "ImageNet-LT/X_101_32x4d_tde.yaml", "ImageNet-LT/R_50_tde.yaml",
            "ImageNet-LT/R_101_tde.yaml"] + [
            f"CIFAR-LT/cifar{c}_r{r}_tde.yaml" for c in (10, 100) for r in (10, 50, 100)]:
        assert name in CONFIGS


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds_a_model(name):
    cfg = load(name)
    model = build_model(cfg)
    assert isinstance(model, TDEImageClassifier)
    tde = cfg.MODEL.TDE
    assert model.classifier.kind == tde.CLASSIFIER
    assert model.classifier.num_classes == cfg.MODEL.IMAGE_CLASSIFIER.NUM_CLASSES
    assert model.head_direction.mu == tde.MU == 0.9
    assert cfg.SOLVER.BASE_LR == 0.2 and cfg.SOLVER.MOMENTUM == 0.9
    assert cfg.SOLVER.WEIGHT_DECAY == 0.0005
    if tde.CLASSIFIER == "linear":
        assert not tde.TEST_TDE
    if name.startswith("ImageNet-LT/"):
        x101 = "X101" in name or "X_101" in name
        plain = re.match(r"ImageNet-LT/R_(50|101)_", name)  # plain ResNet, else ResNeXt 32x4d
        depth = int(plain.group(1)) if plain else 101 if x101 else 50
        assert cfg.MODEL.RESNETS.DEPTH == depth
        assert (cfg.MODEL.RESNETS.NUM_GROUPS, cfg.MODEL.RESNETS.WIDTH_PER_GROUP) == \
            ((1, 64) if plain else (32, 4))
        assert cfg.DATASETS.TRAIN == ("imagenet_lt_train",)
        assert set(cfg.DATASETS.TRAIN + cfg.DATASETS.TEST) <= set(DatasetCatalog.list())
        assert not cfg.MODEL.RESNETS.STRIDE_IN_1X1 and cfg.MODEL.BACKBONE.FREEZE_AT == 0
        assert model.classifier.in_features == 2048
        assert (tde.NUM_HEADS, tde.GAMMA) == ((4, 1 / 64) if x101 else (2, 1 / 32))
        assert tde.ALPHA == 3.0 and tde.MU_SCHEDULE == "lr"
        assert cfg.SOLVER.IMS_PER_BATCH == 512 and cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupCosineLR"
        assert cfg.SOLVER.MAX_ITER == (120 if x101 else 90) * IMAGENET_LT_ITERS_PER_EPOCH
    else:
        assert model.classifier.in_features == 128 and tde.NUM_HEADS == 2
        assert tde.MU_SCHEDULE == "constant" and cfg.SOLVER.IMS_PER_BATCH == 256
        assert cfg.SOLVER.GAMMA == 0.01 and cfg.INPUT.CLASSIFICATION.AUGMENTATION == "cifar"
        m = re.match(r"CIFAR-LT/cifar(10|100)_r(\d+)_", name)
        if m:
            classes, ratio = int(m.group(1)), int(m.group(2))
            assert cfg.MODEL.IMAGE_CLASSIFIER.NUM_CLASSES == classes
            assert tde.ALPHA == (1.0 if classes == 10 else 1.5)
            assert cfg.DATASETS.TRAIN == (f"cifar{classes}_lt_r{ratio}_train",)
            epoch = sum(long_tailed_counts(50000 / classes, classes, ratio)) // 256
            assert cfg.SOLVER.MAX_ITER == 200 * epoch and cfg.SOLVER.WARMUP_ITERS == 5 * epoch
            assert tuple(cfg.SOLVER.STEPS) == (120 * epoch, 160 * epoch)


def test_imagenet_lt_tde_is_deconfound_tde_resnext50_alpha_3():
    cfg = load("ImageNet-LT/X_50_32x4d_tde.yaml")
    assert cfg.MODEL.TDE.CLASSIFIER == "deconfound" and cfg.MODEL.TDE.TEST_TDE
    assert cfg.MODEL.TDE.ALPHA == 3.0 and cfg.MODEL.RESNETS.DEPTH == 50


@pytest.mark.parametrize("depth, res4_blocks", [(50, 6), (101, 23)])
def test_plain_resnet_configs_build_detectron2_resnets(depth, res4_blocks):
    cfg = load(f"ImageNet-LT/R_{depth}_tde.yaml")
    assert cfg.MODEL.TDE.CLASSIFIER == "deconfound" and cfg.MODEL.TDE.TEST_TDE
    assert cfg.MODEL.TDE.ALPHA == 3.0
    model = build_model(cfg)
    backbone = model.backbone
    assert isinstance(backbone, ResNet) and len(backbone.res4) == res4_blocks
    assert all(m.groups == 1 for m in backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert backbone.res2[0].conv2.out_channels == 64  # bottleneck width 1 x 64
    assert backbone.output_shape()["res5"].channels == model.classifier.in_features == 2048
    batch = [{"image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8), "label": i}
             for i in range(2)]
    assert torch.isfinite(model.train()(batch)["loss_cls"])  # also sets the head direction
    out = model.eval()(batch)
    assert out[0]["tde"] and out[0]["logits"].shape == (1000,)


def test_resnext_configs_are_grouped():
    backbone = build_model(load("ImageNet-LT/X_50_32x4d_tde.yaml")).backbone
    assert backbone.res2[0].conv2.groups == 32 and backbone.res2[0].conv2.out_channels == 128


def test_cifar_config_runs_a_training_and_an_inference_step():
    cfg = load("CIFAR-LT/cifar100_r100_tde.yaml")
    model = build_model(cfg)
    batch = [{"image": torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8), "label": i}
             for i in range(4)]
    assert torch.isfinite(model.train()(batch)["loss_cls"])
    out = model.eval()(batch)
    assert out[0]["tde"] and out[0]["logits"].shape == (100,)
