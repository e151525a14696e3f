"""Every LVIS config builds the model it describes (on CPU, nothing shrunk)."""
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from tde_det import add_tde_config
from tde_det.modeling.roi_heads import TDECascadeROIHeads, TDEFastRCNNOutputLayers
from tests.helpers.configs import CONFIG_DIR, LVIS_CONFIGS


def load(name):
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(os.path.join(CONFIG_DIR, name))
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def expected_kind(name):
    for kind in ("baseline", "cosine", "capsule"):
        if f"_{kind}" in name:
            return "linear" if kind == "baseline" else kind
    return "deconfound"


def test_all_variants_exist():
    for v in ("LVISv1", "LVISv0.5"):
        for variant in ("baseline", "cosine", "capsule", "deconfound", "tde", "cosine_tde",
                        "capsule_tde", "tde_no_bg_exemption"):
            assert f"{v}/cascade_mask_rcnn_R_101_FPN_{variant}.yaml" in LVIS_CONFIGS
        for backbone in ("R_50", "X_101_64x4d"):
            for variant in ("tde", "baseline"):
                assert f"{v}/cascade_mask_rcnn_{backbone}_FPN_{variant}.yaml" in LVIS_CONFIGS
    assert "lvis_cascade_tde.yaml" in LVIS_CONFIGS


@pytest.mark.parametrize("name", LVIS_CONFIGS)
def test_config_builds(name):
    cfg = load(name)
    torch.manual_seed(0)
    model = build_model(cfg)
    heads = model.roi_heads
    assert isinstance(heads, TDECascadeROIHeads) and heads.mask_on
    predictors = list(heads.box_predictor)
    assert len(predictors) == 3 and all(isinstance(p, TDEFastRCNNOutputLayers)
                                        for p in predictors)
    v05 = "v0.5" in name
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == (1230 if v05 else 1203)
    assert cfg.DATASETS.TRAIN == (("lvis_v0.5_train",) if v05 else ("lvis_v1_train",))
    for p in predictors:
        assert p.cls_score.kind == expected_kind(name)
        assert p.cls_score.weight.shape[0] == cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1
        assert p.test_tde == (("_tde" in name or "Base-" in name) and p.cls_score.kind != "linear")
        assert p.background_exempted == ("no_bg_exemption" not in name)
        assert p.test_score_thresh == (0.0 if v05 else 1e-5) and p.test_topk_per_image == 300
    depth = 50 if "R_50" in name else 101
    assert cfg.MODEL.RESNETS.DEPTH == depth
    assert (cfg.MODEL.RESNETS.NUM_GROUPS, cfg.MODEL.RESNETS.WIDTH_PER_GROUP) == \
        ((64, 4) if "X_101" in name else (1, 64))
    # ImageNet weights: Detectron2's MSRA R-50 / R-101 (Caffe2, BGR); X101-64x4d has none on
    # Detectron2's server, so those configs take converted torchvision weights (RGB, torchvision
    # mean / std, stride in the 3x3 conv) that the user sets.
    if "X_101" in name:
        assert cfg.MODEL.WEIGHTS == "" and cfg.INPUT.FORMAT == "RGB"
        assert not cfg.MODEL.RESNETS.STRIDE_IN_1X1
        assert cfg.MODEL.PIXEL_MEAN == [123.675, 116.280, 103.530]
        assert cfg.MODEL.PIXEL_STD == [58.395, 57.120, 57.375]
    else:
        assert cfg.MODEL.WEIGHTS == f"detectron2://ImageNetPretrained/MSRA/R-{depth}.pkl"
        assert cfg.INPUT.FORMAT == "BGR" and cfg.MODEL.RESNETS.STRIDE_IN_1X1


def test_paper_model_settings():
    cfg = load("lvis_cascade_tde.yaml")
    s, t = cfg.SOLVER, cfg.MODEL.TDE
    assert (s.IMS_PER_BATCH, s.BASE_LR, s.MOMENTUM, s.WEIGHT_DECAY) == (16, 0.02, 0.9, 1e-4)
    # 20 epochs of LVIS v1.0 train (100,170 images), x0.1 at epochs 16 and 19.
    per_epoch = 100170 / 16
    assert s.MAX_ITER == round(20 * per_epoch + 0.5) == 125213
    assert s.STEPS == (round(16 * per_epoch), round(19 * per_epoch))
    assert (s.WARMUP_ITERS, s.WARMUP_FACTOR, s.WARMUP_METHOD) == (500, 0.001, "linear")
    assert (t.CLASSIFIER, t.NUM_HEADS, t.TAU, t.GAMMA, t.ALPHA, t.MU) == \
        ("deconfound", 2, 16.0, 1 / 32, 1.5, 0.9998)
    assert t.TEST_TDE and t.BACKGROUND_EXEMPTED
    assert (cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN) == ((800,), 1333)
    assert cfg.INPUT.RANDOM_FLIP == "horizontal"
    assert cfg.DATALOADER.SAMPLER_TRAIN == "TrainingSampler"  # no repeat-factor sampling
    assert cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST == 0.5 and cfg.TEST.DETECTIONS_PER_IMAGE == 300
    v05 = load("LVISv0.5/cascade_mask_rcnn_R_101_FPN_tde.yaml").SOLVER
    assert v05.MAX_ITER == 71579 and v05.STEPS == (57263, 68000)
