"""Fashion-MNIST-LT-Det: a long-tailed LVIS-format detection set made of real objects::

    python -m tde_det.data.detection.fashion_mnist_lt --out datasets/fashion_mnist_lt_det_s0 \
        --seed 0

Grey canvases of 128-192 px (noisy uniform background) with Fashion-MNIST items pasted at random
positions and scales (28 px x 1.0-2.5). Instance mask = the item's pixels above a threshold
(only those are pasted); box and area come from the *visible* mask after later items cover it.
An item goes only where every earlier instance keeps >= ``min_visible`` of its pixels; one that
fits nowhere is not pasted and is counted in the log, so no painted object lacks its annotation.

Splits (each item used once, all draws seeded):

- ``train``: items from Fashion-MNIST *train*. Category of frequency rank r (the order is a
  seeded permutation of the 10 classes: label order would confound "rare" with "hard") is in
  ``int(head_images * (1/ratio)^(r/9))`` training canvases (defaults: 500 -> 2 canvases), with
  a second instance on a canvas with probability ``second_instance``; categories are spread
  over ``sum(counts) / categories_per_image`` canvases.
- ``val`` / ``test``: items from Fashion-MNIST *test*, whose images of each class are split in
  two disjoint halves (val, test); every category is in ``eval_images`` canvases (balanced, so
  APr rests on as many instances as APf; ``val`` chooses alpha, ``test`` gives the numbers).

Frequencies: LVIS's rule on each category's *training image count*: rare 1-10, common 11-100,
frequent > 100 (``rare_max`` / ``common_max``). LVIS's groups are absolute few-shot counts, not
fractions of the dataset, so the profile is scaled to reach them instead: at the defaults 3
frequent (500, 277, 154 images), 4 common (85, 47, 26, 14), 3 rare (8, 4, 2). Fewer than
``MIN_PER_GROUP`` categories in a group is an error naming the options. All three jsons carry
the training ``frequency``, ``image_count`` and ``instance_count``. The canvases are annotated
exhaustively: ``neg_category_ids`` = every category absent from the image,
``not_exhaustive_category_ids`` = []. Masks are compressed RLE (``INPUT.MASK_FORMAT bitmask``);
each annotation keeps ``fashion_mnist_index``, its item's index in the Fashion-MNIST train (for
``train``) or test set (``val``, ``test``).
"""
import argparse
import json
import logging
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from ..classification.fashion_mnist import (FASHION_MNIST_CLASSES, load_fashion_mnist,
                                            resolve_fashion_mnist_root)
from ..classification.long_tailed import long_tailed_counts
from .canvases import Canvas, item_mask

__all__ = ["DEFAULTS", "MIN_PER_GROUP", "frequency_of", "main", "write_fashion_mnist_lt_det"]

logger = logging.getLogger(__name__)

MIN_PER_GROUP = 2
DEFAULTS = dict(head_images=500, ratio=200.0, eval_images=30, categories_per_image=1.6,
                max_categories_per_image=4, second_instance=0.2, canvas_size=(128, 192),
                scale=(1.0, 2.5), mask_threshold=64, min_visible=0.5, background_max=60,
                noise=6.0, rare_max=10, common_max=100, tries=30)
_IDS = {"train": 1, "val": 100001, "test": 200001}


def frequency_of(image_count: int, rare_max: int, common_max: int) -> str:
    """LVIS's group of a category with ``image_count`` training images."""
    return "r" if image_count <= rare_max else "c" if image_count <= common_max else "f"


def _assign(rng, counts: Sequence[int], per_image: float, max_per_image: int) -> List[List]:
    """Categories of each canvas: category k in ``counts[k]`` distinct canvases, drawn with
    weights = room left (at most ``max_per_image`` per canvas)."""
    num = max(int(np.ceil(sum(counts) / per_image)), max(counts))
    canvases: List[List[int]] = [[] for _ in range(num)]
    for k in np.argsort(counts, kind="stable")[::-1]:
        room = np.array([max_per_image - len(c) for c in canvases], dtype=np.float64)
        if (room > 0).sum() < counts[k]:
            raise ValueError(f"cannot place category {k} on {counts[k]} canvases: raise "
                             f"max_categories_per_image ({max_per_image})")
        for i in rng.choice(num, size=counts[k], replace=False, p=room / room.sum()):
            canvases[i].append(int(k))
    return [c for c in canvases if c]


def _split(rng, o: Dict, name: str, counts: Sequence[int], pools: List[List[int]],
           images: np.ndarray, image_dir: str, ann_id: List[int]) -> Dict:
    """Canvases of one split (images written to ``image_dir``) as LVIS-format lists."""
    cat_ids = [k + 1 for k in range(len(counts))]
    out_images, anns, dropped = [], [], np.zeros(len(counts), dtype=np.int64)
    for n, labels in enumerate(_assign(rng, counts, o["categories_per_image"],
                                       o["max_categories_per_image"])):
        image_id = _IDS[name] + n
        h, w = (int(rng.integers(o["canvas_size"][0], o["canvas_size"][1] + 1)) for _ in "hw")
        canvas = Canvas(rng, h, w, o["background_max"], o["noise"])
        items = [k for k in labels for _ in range(1 + int(rng.random() < o["second_instance"]))]
        for k in rng.permutation(items):
            if not pools[k]:
                raise ValueError(f"{name}: Fashion-MNIST class {k} has no unused item left; "
                                 f"lower head_images or eval_images")
            side = int(round(28 * rng.uniform(*o["scale"])))
            source = int(pools[k].pop())
            scaled, mask = item_mask(images[source], side, o["mask_threshold"])
            if canvas.try_paste(rng, scaled, mask, k + 1, o["min_visible"], o["tries"],
                                source) is None:
                dropped[k] += 1
        file_name = f"{name}_{image_id:06d}.png"
        Image.fromarray(canvas.pixels).save(os.path.join(image_dir, file_name))
        present = set(canvas.categories)
        for inst in canvas.instances():
            anns.append(dict(inst, id=ann_id[0], image_id=image_id))
            ann_id[0] += 1
        out_images.append({"id": image_id, "file_name": file_name, "height": h, "width": w,
                           "not_exhaustive_category_ids": [],
                           "neg_category_ids": [c for c in cat_ids if c not in present]})
    if dropped.sum():
        logger.info(f"{name}: {int(dropped.sum())} items fitted on no canvas (occlusion) and "
                    f"were not pasted, per category id: "
                    f"{ {k + 1: int(v) for k, v in enumerate(dropped) if v} }")
    return {"images": out_images, "annotations": anns, "dropped": dropped.tolist()}


def _pools(rng, labels: np.ndarray, halves: bool):
    """Per class, a shuffled list of item indices (``halves``: two disjoint halves)."""
    pools = [list(rng.permutation(np.flatnonzero(labels == k))) for k in range(10)]
    if not halves:
        return pools
    return [p[:len(p) // 2] for p in pools], [p[len(p) // 2:] for p in pools]


def write_fashion_mnist_lt_det(out: str, seed: int = 0, root: Optional[str] = None,
                               **options) -> Dict:
    """Write ``out/images/*.png`` and ``out/fashion_mnist_lt_det_{train,val,test}.json``.

    ``options``: any of :data:`DEFAULTS` (see the module docstring). Returns the json paths
    ("train", "val", "test"), "image_root", "class_order" (class of each frequency rank) and
    "categories" (the training categories with their counts and frequencies)."""
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    o = dict(DEFAULTS, **options)
    if not 0 < o["min_visible"] <= 1:
        raise ValueError(f"min_visible must be in (0, 1], got {o['min_visible']}")
    root = root or resolve_fashion_mnist_root()
    rng = np.random.default_rng(seed)
    order = rng.permutation(10)  # order[r]: the class of frequency rank r
    train_counts = np.zeros(10, dtype=np.int64)
    train_counts[order] = np.maximum(long_tailed_counts(o["head_images"], 10, o["ratio"]), 1)
    groups = [frequency_of(int(n), o["rare_max"], o["common_max"]) for n in train_counts]
    small = [g for g in "rcf" if groups.count(g) < MIN_PER_GROUP]
    if small:
        raise ValueError(f"groups {small} get fewer than {MIN_PER_GROUP} categories with image "
                         f"counts {sorted(train_counts.tolist(), reverse=True)} and rare_max "
                         f"{o['rare_max']}, common_max {o['common_max']}: change head_images "
                         f"/ ratio")
    image_dir = os.path.join(out, "images")
    os.makedirs(image_dir, exist_ok=True)
    train_images, train_labels = load_fashion_mnist(root, train=True)
    test_images, test_labels = load_fashion_mnist(root, train=False)
    ann_id = [1]
    splits = {"train": _split(rng, o, "train", train_counts.tolist(),
                              _pools(rng, train_labels, False), train_images, image_dir, ann_id)}
    val_pools, test_pools = _pools(rng, test_labels, True)
    for name, pools in (("val", val_pools), ("test", test_pools)):
        splits[name] = _split(rng, o, name, [o["eval_images"]] * 10, pools, test_images,
                              image_dir, ann_id)
    categories = _categories(splits["train"]["annotations"], o)
    paths = {"image_root": image_dir, "class_order": order.tolist(), "categories": categories,
             "dropped": {k: v.pop("dropped") for k, v in splits.items()}}
    for name, data in splits.items():
        data.update(categories=categories, licenses=[], info={
            "description": f"Fashion-MNIST-LT-Det {name}, seed {seed}", "version": "1.0"})
        paths[name] = os.path.join(out, f"fashion_mnist_lt_det_{name}.json")
        with open(paths[name], "w") as f:
            json.dump(data, f)
    return paths


def _categories(train_anns: List[Dict], o: Dict) -> List[Dict]:
    """LVIS category entries with the training image / instance counts and frequency."""
    out = []
    for k, label in enumerate(FASHION_MNIST_CLASSES):
        name = label.lower().replace("/", "_").replace(" ", "_").replace("-", "_")
        images = len({a["image_id"] for a in train_anns if a["category_id"] == k + 1})
        out.append({"id": k + 1, "name": name, "synonyms": [name], "def": f"a {label.lower()}",
                    "synset": f"{name}.n.01", "image_count": images,
                    "instance_count": sum(a["category_id"] == k + 1 for a in train_anns),
                    "frequency": frequency_of(images, o["rare_max"], o["common_max"])})
    return out


def main(argv=None) -> Dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", default="", help="folder of the Fashion-MNIST IDX files "
                   "(default: $DETECTRON2_DATASETS/fashion-mnist, else Debian's)")
    for key in ("head_images", "ratio", "eval_images", "min_visible", "mask_threshold"):
        p.add_argument("--" + key.replace("_", "-"), type=type(DEFAULTS[key]),
                       default=DEFAULTS[key])
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    paths = write_fashion_mnist_lt_det(
        a.out, a.seed, a.root or None, head_images=a.head_images, ratio=a.ratio,
        eval_images=a.eval_images, min_visible=a.min_visible, mask_threshold=a.mask_threshold)
    for c in paths["categories"]:
        print(f"{c['id']:2d} {c['name']:12s} {c['frequency']} {c['image_count']:4d} train "
              f"images")
    print(f"wrote {paths['train']}, {paths['val']}, {paths['test']}, images in "
          f"{paths['image_root']}")
    return paths


if __name__ == "__main__":
    main()
