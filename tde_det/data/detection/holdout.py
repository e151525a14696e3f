"""Hold out images of an LVIS-format json, to choose alpha (eq. 8) on a split that is neither
trained on nor reported::

    python -m tde_det.data.detection.holdout --json datasets/lvis/lvis_v1_train.json \
        --images 5000

writes ``lvis_v1_train_heldout.json`` (5000 images drawn with ``--seed``, with their
annotations) and ``lvis_v1_train_rest.json`` (the other images) beside the input (or to
``--out``), and prints the ``DATASETS.LVIS_CUSTOM`` overrides that register both. The categories
(with their r/c/f ``frequency``), ``info`` and ``licenses`` are kept as they are, and each image
keeps its ``neg_category_ids`` / ``not_exhaustive_category_ids``, so both files are evaluated as
LVIS is.
"""
import argparse
import json
import os
import random
from typing import Optional, Tuple

__all__ = ["main", "split_lvis_json"]


def split_lvis_json(json_file: str, num_images: int, out_dir: Optional[str] = None,
                    seed: int = 0) -> Tuple[str, str]:
    """Write ``<stem>_heldout.json`` (``num_images`` images of ``json_file`` drawn at random
    with ``seed``, and their annotations) and ``<stem>_rest.json`` (all other images) to
    ``out_dir`` (default: the json's folder); returns (rest, heldout) paths."""
    try:
        with open(json_file) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the LVIS-format json {json_file}: {e}") from e
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise ValueError(f"{json_file} is not LVIS-format: it has no {missing}")
    ids = sorted(img["id"] for img in data["images"])
    if not 0 < num_images < len(ids):
        raise ValueError(f"--images must be in [1, {len(ids) - 1}] ({json_file} has {len(ids)} "
                         f"images, and both parts need one), got {num_images}")
    held = set(random.Random(seed).sample(ids, num_images))
    stem = os.path.splitext(os.path.basename(json_file))[0]
    out_dir = out_dir or os.path.dirname(os.path.abspath(json_file))
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for part, keep in (("rest", lambda i: i not in held), ("heldout", lambda i: i in held)):
        subset = dict(data)
        subset["images"] = [img for img in data["images"] if keep(img["id"])]
        subset["annotations"] = [a for a in data["annotations"] if keep(a["image_id"])]
        paths.append(os.path.join(out_dir, f"{stem}_{part}.json"))
        with open(paths[-1], "w") as f:
            json.dump(subset, f)
    return paths[0], paths[1]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Split an LVIS-format json into held-out images "
                                "(to choose alpha on) and the rest (to train on).")
    p.add_argument("--json", required=True, help="LVIS-format json, e.g. lvis_v1_train.json")
    p.add_argument("--images", type=int, required=True, help="how many images to hold out")
    p.add_argument("--seed", type=int, default=0, help="seed of the random draw")
    p.add_argument("--out", default="", help="output folder (default: the json's folder)")
    p.add_argument("--image-root", default="datasets/coco",
                   help="image root of the printed overrides (LVIS: the COCO folder)")
    a = p.parse_args(argv)
    try:
        rest, heldout = split_lvis_json(a.json, a.images, a.out or None, a.seed)
    except ValueError as e:
        p.error(str(e))
    names = [os.path.splitext(os.path.basename(x))[0] for x in (rest, heldout)]
    print(f"wrote {rest} and {heldout} ({a.images} images held out)\n"
          f"register them with:\n"
          f"  DATASETS.LVIS_CUSTOM.NAMES \"('{names[0]}', '{names[1]}')\" "
          f"DATASETS.LVIS_CUSTOM.JSON_FILES \"('{rest}', '{heldout}')\" "
          f"DATASETS.LVIS_CUSTOM.IMAGE_ROOTS \"('{a.image_root}', '{a.image_root}')\"")


if __name__ == "__main__":
    main()
