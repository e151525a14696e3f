"""Paste grey item images onto canvases, keeping each instance's visible mask and box exact.

Used by :mod:`.fashion_mnist_lt`. An item's mask is its pixels above a threshold (after
scaling); only those pixels are pasted, so every painted pixel belongs to one instance. An item
is placed only where it leaves every earlier instance of the canvas at least a minimum fraction
of its pixels visible; a placement that fails all its tries is not pasted (the caller logs it),
so no object on a canvas is ever left without its annotation.
"""
from typing import Dict, List, Optional

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

__all__ = ["Canvas", "item_mask", "rle_of"]


def item_mask(item: np.ndarray, side: int, threshold: int):
    """(scaled item [side', side] uint8, its mask) of a square grey ``item`` resized to
    ``side`` px (bilinear); mask = pixels above ``threshold``."""
    scaled = np.asarray(Image.fromarray(item).resize((side, side), Image.BILINEAR))
    return scaled, scaled > threshold


def rle_of(mask: np.ndarray) -> Dict:
    """Compressed RLE (``counts`` as str, json-ready) of a boolean mask."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


class Canvas:
    """One grey canvas: a noisy uniform background, then items pasted on top of each other.

    ``owner[y, x]`` is the index of the instance whose pixel is visible there (-1: background).
    """

    def __init__(self, rng: np.random.Generator, height: int, width: int,
                 background_max: int, noise: float):
        base = rng.uniform(0, background_max)
        self.pixels = np.clip(rng.normal(base, noise, (height, width)), 0, 255).astype(np.uint8)
        self.owner = np.full((height, width), -1, dtype=np.int64)
        self.full_areas: List[int] = []
        self.categories: List[int] = []
        self.sources: List[int] = []

    def try_paste(self, rng: np.random.Generator, scaled: np.ndarray, mask: np.ndarray,
                  category_id: int, min_visible: float, tries: int,
                  source: int = -1) -> Optional[int]:
        """Paste at a random position where every earlier instance keeps >= ``min_visible`` of
        its pixels; the new instance's index, or None when no try fits (nothing pasted).
        ``source``: the item's index in its image set, kept with the instance."""
        area = int(mask.sum())
        h, w = self.owner.shape
        side = mask.shape[0]
        if area == 0 or side > min(h, w):
            return None
        counts = np.bincount(self.owner[self.owner >= 0], minlength=len(self.full_areas))
        for _ in range(tries):
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            window = self.owner[y:y + side, x:x + side]
            covered = np.bincount(window[mask & (window >= 0)], minlength=len(self.full_areas))
            if np.all(counts - covered >= min_visible * np.asarray(self.full_areas)):
                self.pixels[y:y + side, x:x + side][mask] = scaled[mask]
                window[mask] = len(self.full_areas)
                self.full_areas.append(area)
                self.categories.append(int(category_id))
                self.sources.append(int(source))
                return len(self.full_areas) - 1
        return None

    def instances(self) -> List[Dict]:
        """Per pasted instance: category_id, visible-mask RLE, box [x, y, w, h] = the visible
        mask's extent (pixel edges), area = visible pixels, and the item's source index."""
        out = []
        for index, category_id in enumerate(self.categories):
            visible = self.owner == index
            ys, xs = np.nonzero(visible)
            box = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                   int(ys.max() - ys.min() + 1)]
            out.append({"category_id": category_id, "segmentation": rle_of(visible),
                        "bbox": [float(v) for v in box], "area": float(visible.sum()),
                        "fashion_mnist_index": self.sources[index]})
        return out
