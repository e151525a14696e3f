"""paste_masks_batched: Detectron2's paste_masks_in_image, bit for bit, many masks per call."""
import os
import sys

import pytest
import torch
from detectron2.layers import paste_masks_in_image
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances, ROIMasks

from tde_det.evaluation.paste_masks import BatchPastedROIMasks, paste_masks_batched

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
try:  # boxes of many sizes and aspect ratios, some on the image's edges
    from benchmark_paste_masks import random_boxes
finally:
    sys.path.pop(0)


@pytest.mark.parametrize("shape,scale", [((70, 109), 0.6), ((37, 41), 1.0), ((1, 5), 1.0),
                                         ((480, 640), 0.3)])
@pytest.mark.parametrize("max_elements", [1 << 18, 900, 1])
def test_equals_detectron2(shape, scale, max_elements):
    g = torch.Generator().manual_seed(sum(shape) + max_elements)
    boxes = random_boxes(120, *shape, scale, g)
    assert len(boxes) > 50
    masks = torch.sigmoid(torch.randn(len(boxes), 28, 28, generator=g) * 4)
    for threshold in (0.5, 0.0, -1.0):  # -1: uint8 probabilities, as Detectron2
        expected = paste_masks_in_image(masks, Boxes(boxes), shape, threshold)
        got = paste_masks_batched(masks, Boxes(boxes), shape, threshold, max_elements)
        assert got.dtype == expected.dtype
        assert torch.equal(got, expected)
    assert expected.any()  # some mask covers a pixel, so equality could fail


def test_a_large_image_and_large_boxes_equal_detectron2():
    g = torch.Generator().manual_seed(3)
    boxes = random_boxes(40, 800, 1333, 0.8, g)
    masks = torch.rand(len(boxes), 28, 28, generator=g)
    assert torch.equal(paste_masks_batched(masks, boxes, (800, 1333)),
                       paste_masks_in_image(masks, boxes, (800, 1333)))


def test_no_masks_and_bad_input():
    empty = paste_masks_batched(torch.zeros(0, 28, 28), torch.zeros(0, 4), (10, 12))
    assert empty.shape == (0, 10, 12) and empty.dtype == torch.uint8  # as Detectron2
    with pytest.raises(ValueError, match="square"):
        paste_masks_batched(torch.zeros(2, 28, 14), torch.ones(2, 4), (10, 12))
    with pytest.raises(ValueError, match="3 masks but 2 boxes"):
        paste_masks_batched(torch.zeros(3, 28, 28), torch.ones(2, 4), (10, 12))
    with pytest.raises(ValueError, match="max_elements"):
        paste_masks_batched(torch.zeros(2, 28, 28), torch.ones(2, 4), (10, 12), 0.5, 0)


def test_detector_postprocess_with_batch_pasted_masks():
    """detector_postprocess drops empty boxes (indexing the masks) and pastes: the subclass
    survives the indexing and gives the bitmasks of Detectron2's ROIMasks."""
    g = torch.Generator().manual_seed(1)
    boxes = random_boxes(30, 50, 60, 0.7, g)
    boxes[3, 2] = boxes[3, 0]  # empty: dropped by detector_postprocess
    masks = torch.rand(len(boxes), 28, 28, generator=g)
    out = {}
    for cls in (ROIMasks, BatchPastedROIMasks):
        instances = Instances((50, 60), pred_boxes=Boxes(boxes.clone()), pred_masks=cls(masks))
        assert isinstance(instances[[0, 1]].pred_masks, cls)
        out[cls] = detector_postprocess(instances, 100, 120).pred_masks
    assert out[ROIMasks].shape == (len(boxes) - 1, 100, 120)
    assert torch.equal(out[BatchPastedROIMasks], out[ROIMasks])
