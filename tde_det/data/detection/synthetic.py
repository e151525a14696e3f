"""A tiny generated LVIS-format dataset (for tests and for trying the workflow offline)::

    python -m tde_det.data.detection.synthetic --out datasets/tiny_lvis

Images of 64-128 px with filled shapes (one colour and shape per category), polygon masks,
long-tailed category counts with r/c/f frequency labels, non-contiguous category ids, and the
per-image ``not_exhaustive_category_ids`` / ``neg_category_ids`` fields of LVIS.
"""
import json
import math
import os
from typing import Dict, List, Optional

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["TINY_CATEGORIES", "main", "write_tiny_lvis"]

# (id, name, frequency, relative weight): ids are deliberately not 1..C.
TINY_CATEGORIES = (
    (1, "red_square", "f", 12), (2, "green_triangle", "f", 8), (4, "blue_circle", "c", 5),
    (7, "yellow_square", "c", 3), (9, "cyan_triangle", "r", 1.5), (12, "magenta_circle", "r", 1),
)
_COLOURS = {1: (220, 40, 40), 2: (40, 200, 40), 4: (40, 60, 220), 7: (230, 220, 40),
            9: (40, 220, 220), 12: (220, 40, 220)}
_SHAPES = {1: "square", 2: "triangle", 4: "circle", 7: "square", 9: "triangle", 12: "circle"}


def _polygon(shape: str, cx: float, cy: float, r: float) -> List[float]:
    if shape == "square":
        pts = [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    elif shape == "triangle":
        pts = [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    else:
        pts = [(cx + r * math.cos(2 * math.pi * i / 12), cy + r * math.sin(2 * math.pi * i / 12))
               for i in range(12)]
    return [round(float(v), 2) for p in pts for v in p]


def _split(rng, image_dir: str, first_id: int, num_images: int, ann_id: List[int],
           file_prefix: str) -> Dict:
    cat_ids = [c[0] for c in TINY_CATEGORIES]
    weights = np.array([c[3] for c in TINY_CATEGORIES], dtype=float)
    weights /= weights.sum()
    # Long-tailed instance counts (about two instances per image, at least one per category),
    # shuffled over the images.
    counts = [max(1, round(float(p) * 2 * num_images)) for p in weights]
    pool = [cid for cid, n in zip(cat_ids, counts) for _ in range(n)]
    rng.shuffle(pool)
    images, annotations = [], []
    for i in range(num_images):
        image_id = first_id + i
        w, h = int(rng.integers(64, 129)), int(rng.integers(64, 129))
        canvas = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(90, 150, size=3)))
        draw = ImageDraw.Draw(canvas)
        present = set()
        left = num_images - i
        take = len(pool) - (left - 1) if left == 1 else int(rng.integers(1, 4))
        take = max(1, min(take, len(pool) - (left - 1)))
        for _ in range(take):
            cid = int(pool.pop()) if pool else int(rng.choice(cat_ids, p=weights))
            r = float(rng.uniform(8, min(w, h) / 3))
            cx, cy = float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r))
            poly = _polygon(_SHAPES[cid], cx, cy, r)
            draw.polygon(poly, fill=_COLOURS[cid])
            xs, ys = poly[0::2], poly[1::2]
            x0, y0 = max(min(xs), 0.0), max(min(ys), 0.0)
            bbox = [x0, y0, min(max(xs), w) - x0, min(max(ys), h) - y0]
            area = 0.5 * abs(sum(xs[j] * ys[j - 1] - xs[j - 1] * ys[j] for j in range(len(xs))))
            annotations.append({"id": ann_id[0], "image_id": image_id, "category_id": cid,
                                "bbox": [round(v, 2) for v in bbox], "area": round(area, 2),
                                "segmentation": [poly]})
            ann_id[0] += 1
            present.add(cid)
        file_name = f"{file_prefix}{image_id:06d}.png"
        canvas.save(os.path.join(image_dir, file_name))
        absent = [c for c in cat_ids if c not in present]
        images.append({
            "id": image_id, "file_name": file_name, "width": w, "height": h,
            "not_exhaustive_category_ids": sorted(present)[:1] if i % 4 == 0 else [],
            "neg_category_ids": [int(c) for c in rng.choice(absent, size=min(2, len(absent)),
                                                            replace=False)],
        })
    return {"images": images, "annotations": annotations}


def write_tiny_lvis(root: str, num_train: int = 24, num_val: int = 8, seed: int = 0,
                    image_dir: Optional[str] = None) -> Dict[str, str]:
    """Write ``root/images/*.png``, ``root/tiny_lvis_train.json`` and ``root/tiny_lvis_val.json``.

    Returns {"train": json path, "val": json path, "image_root": images folder}.
    """
    rng = np.random.default_rng(seed)
    image_dir = image_dir or os.path.join(root, "images")
    os.makedirs(image_dir, exist_ok=True)
    ann_id = [1]
    paths = {"image_root": image_dir}
    for split, first, n in (("train", 1, num_train), ("val", 10001, num_val)):
        data = _split(rng, image_dir, first, n, ann_id, f"{split}_")
        img_count = {c[0]: len({a["image_id"] for a in data["annotations"]
                                if a["category_id"] == c[0]}) for c in TINY_CATEGORIES}
        inst_count = {c[0]: sum(a["category_id"] == c[0] for a in data["annotations"])
                      for c in TINY_CATEGORIES}
        data["categories"] = [
            {"id": cid, "name": name, "synonyms": [name], "def": f"a {name.replace('_', ' ')}",
             "synset": f"{name}.n.01", "frequency": freq, "image_count": img_count[cid],
             "instance_count": inst_count[cid]}
            for cid, name, freq, _ in TINY_CATEGORIES]
        data["info"] = {"description": "tde-det tiny LVIS-format data", "version": "1.0"}
        data["licenses"] = []
        paths[split] = os.path.join(root, f"tiny_lvis_{split}.json")
        with open(paths[split], "w") as f:
            json.dump(data, f)
    return paths


def main(argv=None) -> None:
    import argparse

    p = argparse.ArgumentParser(description="Write a tiny LVIS-format dataset (images + json).")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num-train", type=int, default=24)
    p.add_argument("--num-val", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    paths = write_tiny_lvis(a.out, a.num_train, a.num_val, a.seed)
    print(f"wrote {paths['train']}, {paths['val']} and images in {paths['image_root']}")


if __name__ == "__main__":
    main()
