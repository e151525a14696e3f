"""Detectron2's ``paste_masks_in_image`` on the CPU, many masks per call.

On the CPU Detectron2 pastes one mask at a time, each into the region that bounds its box with
a pixel of margin (``skip_empty``): about 20 small tensor operations and a ``grid_sample`` per
mask, whose fixed cost dominates on small boxes (most of the sweep's pasting, which pastes the
union of ten alphas' detections). Here the masks of a chunk are sampled in one ``grid_sample``
on a grid of the chunk's largest region, each mask's grid row ``r``, column ``c`` being pixel
``(y0 + r, x0 + c)`` of its own region, computed with the same operations as Detectron2's
(``(pixel + 0.5 - x0) / (x1 - x0) * 2 - 1``, in the boxes' dtype); grid points outside a mask's
region are dropped. ``grid_sample`` computes each output point from its grid point alone, so
every mask is Detectron2's, bit for bit (tested, with boxes on the image's edges).

Masks are chunked by region size (largest first) to at most ``max_elements`` grid points per
chunk; each mask's region is then copied into its image. ``tools/benchmark_paste_masks.py``
times both (README). Other devices get Detectron2's own function, which already pastes many
masks per call there.
"""
from typing import Tuple, Union

import torch
from detectron2.layers import paste_masks_in_image
from detectron2.structures import BitMasks, Boxes, ROIMasks
from detectron2.utils.memory import retry_if_cuda_oom
from torch.nn import functional as F

__all__ = ["BatchPastedROIMasks", "paste_masks_batched"]

# grid points per chunk on the CPU (its grid and samples: 13 bytes per point, 3.4 MB at this
# size); 2^18 pasted faster than 2^20 and 2^22 on 70x109 and 800x1333 images
DEFAULT_MAX_ELEMENTS = 1 << 18


def _regions(boxes: torch.Tensor, img_h: int, img_w: int) -> torch.Tensor:
    """Each box's region (x0, y0, x1, y1) as Detectron2's ``_do_paste_mask`` computes it for
    a single box: floor - 1 clamped at 0, ceil + 1 clamped at the image size (int64)."""
    low = torch.clamp(boxes[:, :2].floor() - 1, min=0).to(torch.int32)
    x1 = torch.clamp(boxes[:, 2].ceil() + 1, max=img_w).to(torch.int32)
    y1 = torch.clamp(boxes[:, 3].ceil() + 1, max=img_h).to(torch.int32)
    return torch.stack([low[:, 0], low[:, 1], x1, y1], dim=1).long()


def _paste_chunk(masks: torch.Tensor, boxes: torch.Tensor, regions: torch.Tensor, width: int,
                 height: int, out: torch.Tensor, rows: torch.Tensor, threshold: float) -> None:
    """Paste ``masks`` (n, M, M) into rows ``rows`` of ``out`` (N, H, W), each in its region;
    ``width`` x ``height`` (> 0): the largest region's extent in each direction."""
    # as Detectron2: float32 pixel centres, then the boxes' dtype
    img_x = (regions[:, :1] + torch.arange(width, device=masks.device)).float() + 0.5
    img_y = (regions[:, 1:2] + torch.arange(height, device=masks.device)).float() + 0.5
    x0, y0, x1, y1 = torch.split(boxes, 1, dim=1)
    img_x = (img_x - x0) / (x1 - x0) * 2 - 1
    img_y = (img_y - y0) / (y1 - y0) * 2 - 1
    n = len(masks)
    grid = torch.stack([img_x[:, None, :].expand(n, height, width),
                        img_y[:, :, None].expand(n, height, width)], dim=3)
    if not masks.dtype.is_floating_point:
        masks = masks.float()
    sampled = F.grid_sample(masks[:, None], grid.to(masks.dtype), align_corners=False)[:, 0]
    if threshold >= 0:
        values = sampled >= threshold
    else:
        values = (sampled * 255).to(torch.uint8)
    for row, (left, top, right, bottom), k in zip(rows.tolist(), regions.tolist(), range(n)):
        if right > left and bottom > top:
            out[row, top:bottom, left:right] = values[k, :bottom - top, :right - left]


def paste_masks_batched(masks: torch.Tensor, boxes: Union[Boxes, torch.Tensor],
                        image_shape: Tuple[int, int], threshold: float = 0.5,
                        max_elements: int = DEFAULT_MAX_ELEMENTS) -> torch.Tensor:
    """What ``detectron2.layers.paste_masks_in_image(masks, boxes, image_shape, threshold)``
    returns, pasting up to ``max_elements`` grid points per ``grid_sample`` on the CPU (see the
    module's docstring); Detectron2's own function on other devices."""
    if not isinstance(boxes, torch.Tensor):
        boxes = boxes.tensor
    if boxes.device.type != "cpu" or len(masks) == 0:
        return paste_masks_in_image(masks, boxes, image_shape, threshold)
    if masks.shape[-1] != masks.shape[-2]:
        raise ValueError(f"only square masks can be pasted, got {tuple(masks.shape[-2:])}")
    if len(boxes) != len(masks):
        raise ValueError(f"{len(masks)} masks but {len(boxes)} boxes")
    if max_elements < 1:
        raise ValueError(f"max_elements must be >= 1, got {max_elements}")
    img_h, img_w = (int(v) for v in image_shape)
    out = torch.zeros(len(masks), img_h, img_w, device=masks.device,
                      dtype=torch.bool if threshold >= 0 else torch.uint8)
    regions = _regions(boxes, img_h, img_w)
    sizes = (regions[:, 2:] - regions[:, :2]).clamp(min=0)
    order = torch.argsort(sizes.prod(dim=1), descending=True, stable=True)
    order_sizes = sizes[order].tolist()
    start = 0
    while start < len(order):
        end, width, height = start, 0, 0
        while end < len(order):  # the largest first: the chunk's grid is its first's or wider
            w, h = max(width, order_sizes[end][0]), max(height, order_sizes[end][1])
            if end > start and (end + 1 - start) * w * h > max_elements:
                break
            end, width, height = end + 1, w, h
        rows = order[start:end]
        if width > 0 and height > 0:
            _paste_chunk(masks[rows], boxes[rows], regions[rows], width, height, out, rows,
                         threshold)
        start = end
    return out


class BatchPastedROIMasks(ROIMasks):
    """``ROIMasks`` whose ``to_bitmasks`` (what ``detector_postprocess`` calls) pastes with
    :func:`paste_masks_batched`: the same bitmasks, faster on the CPU. As Detectron2's, a
    paste that runs out of CUDA memory is retried, then run on the CPU."""

    def __getitem__(self, item) -> "BatchPastedROIMasks":
        return BatchPastedROIMasks(super().__getitem__(item).tensor)

    def to(self, device: torch.device) -> "BatchPastedROIMasks":
        return BatchPastedROIMasks(self.tensor.to(device))

    def to_bitmasks(self, boxes: torch.Tensor, height, width, threshold=0.5) -> BitMasks:
        paste = retry_if_cuda_oom(paste_masks_batched)
        return BitMasks(paste(self.tensor, boxes, (height, width), threshold))
