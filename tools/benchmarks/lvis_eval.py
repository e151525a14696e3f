"""Time FastLVISEval against the LVIS API's LVISEval on the same synthetic LVIS-format data, in
one run.

The data are shaped like LVIS v1 val (nothing is downloaded): 1203 categories with v1's rare /
common / frequent counts, a long tail of categories over the images, about 12.4 ground-truth
boxes per image (box sides from 6 to 300 px in 640 x 480 images), negative and not-exhaustive
category lists, and a fixed number of detections per image: 3 jittered copies of each ground
truth, the rest random boxes of the image's own or of random categories. With ``segm`` every
ground truth and detection is an ellipse in its box (a 30- and a 16-point polygon), the
detections' encoded to RLE.

Each evaluation runs in a fresh process that loads the data and reports its times (preparing =
``LVISResults``, ``evaluate``, ``accumulate``) and its peak resident memory; the precision arrays
of the two classes are compared. The table gives the LVIS API's time over FastLVISEval's.
"""
import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WIDTH, HEIGHT = 640, 480
FREQUENCIES = ["r"] * 337 + ["c"] * 461 + ["f"] * 405  # LVIS v1's category counts


def _ellipse(box, points: int):
    x, y, w, h = box
    t = np.linspace(0, 2 * np.pi, points, endpoint=False)
    return [np.stack([x + w / 2 + w / 2 * np.cos(t), y + h / 2 + h / 2 * np.sin(t)], 1)
            .ravel().tolist()]


def _random_box(rng):
    side = float(np.exp(rng.uniform(np.log(6), np.log(300))))
    w, h = min(side, WIDTH - 2), min(side * rng.uniform(0.5, 1.5), HEIGHT - 2)
    return [rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h), w, h]


def synthetic_lvis(num_images: int, dets_per_image: int, masks: bool, seed: int = 0):
    """``(dataset, detections)``: an LVIS-format dict and its LVIS-format detections (json
    category ids), as described in the module docstring."""
    import pycocotools.mask as mask_utils

    rng = np.random.default_rng(seed)
    frequencies = list(FREQUENCIES)
    rng.shuffle(frequencies)
    categories = [{"id": k + 1, "name": f"category_{k}", "frequency": f}
                  for k, f in enumerate(frequencies)]
    popular = rng.zipf(1.3, size=200_000) % len(categories) + 1  # a long tail
    images, annotations, detections = [], [], []
    for image_id in range(1, num_images + 1):
        present = list(dict.fromkeys(int(c) for c in rng.choice(popular, rng.integers(1, 7))))
        negative = [int(c) for c in rng.choice(len(categories), rng.integers(0, 15),
                                                replace=False) + 1 if c not in present]
        images.append({"id": image_id, "width": WIDTH, "height": HEIGHT,
                       "neg_category_ids": negative,
                       "not_exhaustive_category_ids": [c for c in present
                                                       if rng.random() < 0.1]})
        boxes = []
        for _ in range(max(1, int(rng.poisson(12.4)))):
            category = present[int(rng.integers(len(present)))]
            box = _random_box(rng)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                "bbox": box, "area": box[2] * box[3],
                "segmentation": _ellipse(box, 30) if masks else
                [[box[0], box[1], box[0] + box[2], box[1], box[0] + box[2], box[1] + box[3],
                  box[0], box[1] + box[3]]]})
            for _ in range(3):
                j = rng.normal(0, 0.08, size=4)
                boxes.append((category, [box[0] + j[0] * box[2], box[1] + j[1] * box[3],
                                         box[2] * (1 + j[2]), box[3] * (1 + j[3])]))
        candidates = present + negative
        while len(boxes) < dets_per_image:
            category = (candidates[int(rng.integers(len(candidates)))] if rng.random() < 0.5
                        else int(rng.integers(1, len(categories) + 1)))
            boxes.append((category, _random_box(rng)))
        for category, (x, y, w, h) in boxes[:dets_per_image]:
            x, y = max(0.0, x), max(0.0, y)
            box = [x, y, max(1.0, min(w, WIDTH - x)), max(1.0, min(h, HEIGHT - y))]
            record = {"image_id": image_id, "category_id": int(category), "bbox": box,
                      "score": float(rng.random())}
            if masks:
                rle = mask_utils.merge(mask_utils.frPyObjects(_ellipse(box, 16), HEIGHT, WIDTH))
                record["segmentation"] = dict(rle, counts=rle["counts"].decode("utf-8"))
            detections.append(record)
    return {"images": images, "annotations": annotations, "categories": categories}, detections


def _worker(data: str, task: str, implementation: str, out: str) -> None:
    """One evaluation in this process: times, peak memory and the precision array to ``out``."""
    import logging

    from lvis import LVIS, LVISEval

    from tde_det.evaluation.fast_lvis_eval import FastLVISEval
    from tde_det.evaluation.lvis_records import lvis_results

    logging.disable(logging.WARNING)
    ground_truth = LVIS(data + ".json")
    with open(data + ".detections.pkl", "rb") as f:
        detections = pickle.load(f)
    cls = FastLVISEval if implementation == "fast" else LVISEval
    t0 = time.perf_counter()
    results = lvis_results(ground_truth, detections, task, 300)
    t1 = time.perf_counter()
    evaluation = cls(ground_truth, results, task)
    evaluation.evaluate()
    t2 = time.perf_counter()
    evaluation.accumulate()
    t3 = time.perf_counter()
    np.save(out + ".npy", evaluation.eval["precision"])
    with open(out + ".json", "w") as f:
        json.dump({"preparing": t1 - t0, "evaluate": t2 - t1, "accumulate": t3 - t2,
                   "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}, f)


def _run_worker(data: str, task: str, implementation: str, out: str) -> dict:
    subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", data, task,
                    implementation, out], check=True, cwd=REPO)
    with open(out + ".json") as f:
        return json.load(f)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--detections-per-image", type=int, default=300)
    p.add_argument("--tasks", nargs="+", choices=["bbox", "segm"], default=["bbox", "segm"])
    p.add_argument("--skip-lvis-api", action="store_true",
                   help="time FastLVISEval only (the LVIS API's evaluation of LVIS v1 val's "
                        "size needs more than 24 GB)")
    p.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return _worker(*args.worker)

    implementations = ["fast"] if args.skip_lvis_api else ["lvis_api", "fast"]
    print(f"{args.images} images, {args.detections_per_image} detections per image; "
          f"each evaluation in a fresh process, {os.cpu_count()} CPUs")
    print("| task | evaluation | preparing (s) | evaluate (s) | accumulate (s) | total (s) "
          "| peak resident (GB) | LVIS API / FastLVISEval | same precision |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for task in args.tasks:
            dataset, detections = synthetic_lvis(args.images, args.detections_per_image,
                                                 masks=task == "segm")
            data = os.path.join(work, task)
            with open(data + ".json", "w") as f:
                json.dump(dataset, f)
            with open(data + ".detections.pkl", "wb") as f:
                pickle.dump(detections, f)
            del dataset, detections
            runs = {i: _run_worker(data, task, i, os.path.join(work, f"{task}_{i}"))
                    for i in implementations}
            total = {i: r["preparing"] + r["evaluate"] + r["accumulate"] for i, r in runs.items()}
            same = ("" if len(runs) == 1 else str(np.array_equal(
                *(np.load(os.path.join(work, f"{task}_{i}.npy")) for i in implementations))))
            for i, r in runs.items():
                ratio = (f"{total['lvis_api'] / total['fast']:.2f}x"
                         if i == "fast" and "lvis_api" in total else "")
                name = "FastLVISEval" if i == "fast" else "LVIS API's LVISEval"
                print(f"| {task} | {name} | {r['preparing']:.1f} | {r['evaluate']:.1f} "
                      f"| {r['accumulate']:.1f} | {total[i]:.1f} | {r['peak_gb']:.2f} "
                      f"| {ratio} | {same if i == 'fast' else ''} |", flush=True)


if __name__ == "__main__":
    main()
