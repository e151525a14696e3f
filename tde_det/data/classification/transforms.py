"""Augmentations of the official classification code that Detectron2 does not have, as
Detectron2 ``Augmentation``s (torchvision's RandomResizedCrop, CenterCrop, RandomCrop with
padding and ColorJitter; the formulas follow torchvision's documentation)."""
import math
from typing import Sequence, Tuple

import numpy as np
from detectron2.data import transforms as T
from fvcore.transforms.transform import CropTransform, PadTransform, Transform, TransformList
from PIL import Image

__all__ = ["RandomResizedCrop", "CenterCrop", "PadRandomCrop", "ColorJitter",
           "ColorJitterTransform"]


class RandomResizedCrop(T.Augmentation):
    """Crop a random area fraction in ``scale`` with aspect ratio (w/h) in ``ratio`` (log-uniform),
    then resize it to ``size`` x ``size``. After 10 failed draws, a centre crop of the whole image
    with the ratio clamped into ``ratio``."""

    def __init__(self, size: int, scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), interp=Image.BILINEAR):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        cw, ch, x0, y0 = self._crop_box(h, w)
        return TransformList([CropTransform(x0, y0, cw, ch),
                              T.ResizeTransform(ch, cw, self.size, self.size, self.interp)])

    def _crop_box(self, h: int, w: int) -> Tuple[int, int, int, int]:
        area = h * w
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target = area * np.random.uniform(self.scale[0], self.scale[1])
            aspect = math.exp(np.random.uniform(log_lo, log_hi))
            cw = int(round(math.sqrt(target * aspect)))
            ch = int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                return cw, ch, np.random.randint(0, w - cw + 1), np.random.randint(0, h - ch + 1)
        aspect = w / h
        if aspect < min(self.ratio):
            cw, ch = w, int(round(w / min(self.ratio)))
        elif aspect > max(self.ratio):
            cw, ch = int(round(h * max(self.ratio))), h
        else:
            cw, ch = w, h
        return cw, ch, (w - cw) // 2, (h - ch) // 2


class CenterCrop(T.Augmentation):
    """Crop the central ``size`` x ``size`` window (zero-padding an image smaller than that)."""

    def __init__(self, size: int):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        tfms = []
        if h < self.size or w < self.size:
            ph, pw = max(self.size - h, 0), max(self.size - w, 0)
            tfms.append(PadTransform(pw // 2, ph // 2, pw - pw // 2, ph - ph // 2, w, h))
            h, w = h + ph, w + pw
        x0 = int(round((w - self.size) / 2.0))
        y0 = int(round((h - self.size) / 2.0))
        tfms.append(CropTransform(x0, y0, self.size, self.size))
        return TransformList(tfms)


class PadRandomCrop(T.Augmentation):
    """Zero-pad ``pad`` pixels on every side, then crop a random ``size`` x ``size`` window
    (CIFAR: RandomCrop(32, padding=4))."""

    def __init__(self, size: int, pad: int = 4):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        p = self.pad
        H, W = h + 2 * p, w + 2 * p
        if H < self.size or W < self.size:
            raise ValueError(f"image {h}x{w} padded by {p} is smaller than the crop {self.size}")
        x0 = np.random.randint(0, W - self.size + 1)
        y0 = np.random.randint(0, H - self.size + 1)
        return TransformList([PadTransform(p, p, p, p, w, h),
                              CropTransform(x0, y0, self.size, self.size)])


# ITU-R 601-2 luma, as PIL's "L" conversion (used by torchvision's contrast and saturation).
_LUMA_RGB = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class ColorJitterTransform(Transform):
    """Apply (op, factor) pairs in order: "brightness" (x * f), "contrast" (blend with the
    mean luma), "saturation" (blend with the per-pixel luma); 0-255 images, clipped after each."""

    def __init__(self, ops: Sequence[Tuple[str, float]], image_format: str = "RGB"):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        if img.ndim != 3 or img.shape[2] != 3:
            return img  # colour jitter is defined for 3-channel images only
        dtype = img.dtype
        luma = _LUMA_RGB if self.image_format == "RGB" else _LUMA_RGB[::-1]
        x = img.astype(np.float32)
        for op, f in self.ops:
            if op == "brightness":
                x = x * f
            elif op == "contrast":
                x = f * x + (1 - f) * float((x @ luma).mean())
            elif op == "saturation":
                x = f * x + (1 - f) * (x @ luma)[..., None]
            else:
                raise ValueError(f"unknown colour op {op!r}")
            x = np.clip(x, 0, 255)
        return np.round(x).astype(dtype) if dtype == np.uint8 else x.astype(dtype)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation


class ColorJitter(T.Augmentation):
    """torchvision's ColorJitter(brightness, contrast, saturation): each factor uniform in
    [max(0, 1 - s), 1 + s], the operations in random order; s = 0 disables one."""

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                 image_format: str = "RGB"):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        strengths = {"brightness": self.brightness, "contrast": self.contrast,
                     "saturation": self.saturation}
        ops = [(op, float(np.random.uniform(max(0.0, 1 - s), 1 + s)))
               for op, s in strengths.items() if s > 0]
        ops = [ops[i] for i in np.random.permutation(len(ops))]
        return ColorJitterTransform(ops, self.image_format)
