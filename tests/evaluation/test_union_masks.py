"""predict_masks: the mask head once per distinct box gives forward_with_given_boxes' masks."""
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

import tde_det  # noqa: F401  (registration)
from tde_det import add_tde_config
from tde_det.evaluation.union_masks import predict_masks

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _heads(**overrides):
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "TinyLVIS/cascade_R_18_tde.yaml"))
    for key, value in overrides.items():
        cfg.merge_from_list([key, value])
    torch.manual_seed(0)
    return build_model(cfg).eval().roi_heads


def _features(images=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {f"p{k}": torch.randn(images, 32, 128 // 2 ** k, 128 // 2 ** k, generator=g)
            for k in (2, 3, 4, 5)}


def _detections(size=(128, 128)):
    box = [[10.0, 12.0, 60.0, 70.0], [5.0, 5.0, 100.0, 90.0], [30.0, 40.0, 50.0, 52.0]]
    # box 0 under three classes, box 1 under two, box 2 once
    boxes = torch.tensor([box[0], box[1], box[0], box[2], box[0], box[1]])
    d = Instances(size, pred_boxes=Boxes(boxes), pred_classes=torch.tensor([1, 1, 3, 0, 5, 2]),
                  scores=torch.linspace(0.9, 0.4, 6))
    return d


@pytest.mark.parametrize("agnostic", [False, True])
@pytest.mark.parametrize("chunk", [1, 2, 300])
def test_masks_equal_forward_with_given_boxes(agnostic, chunk):
    heads = _heads(**{"MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK": str(agnostic)})
    features = _features(images=2)
    with torch.no_grad():
        expected = heads.forward_with_given_boxes(features, [_detections(), _detections()[:2]])
        got, rows = predict_masks(heads, features, [_detections(), _detections()[:2]], chunk)
    assert rows == 3 + 2  # distinct boxes: 3 in the first image, 2 in the second
    for e, g in zip(expected, got):
        if chunk >= rows:  # one batch of the 5 distinct boxes instead of the 8 detections
            assert torch.equal(e.pred_masks, g.pred_masks)
        else:  # batches of 1 or 2: the CPU convolution may round differently there
            torch.testing.assert_close(g.pred_masks, e.pred_masks, rtol=0, atol=1e-6)
    assert not torch.equal(got[0].pred_masks[0], got[0].pred_masks[2]) or agnostic  # classes


def test_empty_detections():
    heads = _heads()
    empty = _detections()[:0]
    with torch.no_grad():
        got, rows = predict_masks(heads, _features(), [empty], 300)
    assert rows == 0 and got[0].pred_masks.shape[0] == 0


def test_a_mask_head_with_its_own_forward_gets_forward_with_given_boxes(monkeypatch):
    heads = _heads()
    head_type = type(heads.mask_head)
    calls = []

    class OwnForward(head_type):
        def forward(self, x, instances):
            calls.append(len(x))
            return super().forward(x, instances)

    heads.mask_head.__class__ = OwnForward
    with torch.no_grad():
        got, rows = predict_masks(heads, _features(), [_detections()], 300)
    assert calls == [6] and rows == 6 and got[0].pred_masks.shape[0] == 6
