"""Peak memory and time of AP-fixed inference against standard inference, in one run.

The split is shaped like LVIS v1 val (nothing is downloaded): 19,809 images, 1203 categories with
v1's rare / common / frequent counts, each image with ``--dets-per-image`` box-head detections
(the AP-fixed candidate limit, ``TEST.AP_FIXED.DETS_PER_IMAGE``), sorted by score, their classes
drawn with frequent classes 10x as likely as common and 100x as rare ones. The network is not
what is measured: both modes take the same synthetic box-head outputs.

- standard: the first 300 detections of each image get a mask and a json record, all records
  held until the end (what Detectron2's LVIS evaluator holds);
- AP-fixed: every candidate goes through ``APFixedLVISEvaluator.process_candidates`` (the
  per-class top-K heaps of the real evaluator); only those still in their class's top K after
  their image get a mask and a record.

A "mask" here is a record with an RLE string of ``--rle-chars`` characters (an LVIS mask at
640 x 480 encodes to about that many); the mask head and the pasting are not run, so their cost
is given as the count of masks each mode computes. Each mode runs in a fresh process; its memory
is the peak resident set size above the one after the imports (``resource.getrusage``).
"""
import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
FREQUENCIES = ["r"] * 337 + ["c"] * 461 + ["f"] * 405  # LVIS v1's category counts
WEIGHT = {"r": 0.01, "c": 0.1, "f": 1.0}


class SyntheticCandidates:
    """``APFixedCandidates``' interface over synthetic detections of one image."""

    def __init__(self, image_id, classes, scores, rle_chars):
        self.image_id, self._classes, self._scores = image_id, classes, scores
        self._rle = rle_chars
        self.mask_rows = 0

    def __len__(self):
        return 1

    def scores(self, i):
        return self._scores

    def classes(self, i):
        return self._classes

    def records(self, rows):
        out = []
        for r in rows:
            r = r.tolist()
            self.mask_rows += len(r)
            cls, sc = self._classes[r].tolist(), self._scores[r].tolist()
            out.append([{"image_id": self.image_id, "category_id": c, "score": s,
                         "bbox": [1.0, 2.0, 30.0, 40.0],
                         "segmentation": {"size": [480, 640],
                                          "counts": f"{self.image_id}:{k}:".ljust(self._rle, "x")}}
                        for k, (c, s) in enumerate(zip(cls, sc))])
        return out

    def release(self):
        pass


def split(num_images, dets_per_image, seed=0):
    """Per image: (classes [N] int64, scores [N] descending)."""
    g = torch.Generator().manual_seed(seed)
    weights = torch.tensor([WEIGHT[f] for f in FREQUENCIES])
    for _ in range(num_images):
        classes = torch.multinomial(weights, dets_per_image, replacement=True, generator=g)
        scores = torch.rand(dets_per_image, generator=g) ** 4  # most scores low
        order = torch.argsort(scores, descending=True)
        yield classes[order], scores[order]


def register(num_images, folder):
    from detectron2.data import MetadataCatalog

    path = os.path.join(folder, "split.json")
    with open(path, "w") as f:
        json.dump({"images": [{"id": i, "width": 640, "height": 480, "neg_category_ids": [],
                               "not_exhaustive_category_ids": []}
                              for i in range(1, num_images + 1)],
                   "categories": [{"id": k + 1, "name": f"c{k}", "frequency": fr}
                                  for k, fr in enumerate(FREQUENCIES)],
                   "annotations": []}, f)
    name = f"ap_fixed_benchmark_{num_images}"
    MetadataCatalog.get(name).set(json_file=path, evaluator_type="lvis",
                                  thing_classes=[f"c{k}" for k in range(len(FREQUENCIES))])
    return name


def run_standard(args):
    held = []
    masks = 0
    for image_id, (classes, scores) in enumerate(split(args.images, args.dets_per_image), 1):
        c = SyntheticCandidates(image_id, classes, scores, args.rle_chars)
        held.append({"image_id": image_id, "instances": c.records([torch.arange(
            min(args.standard, len(scores)))])[0]})
        masks += c.mask_rows
    return masks, sum(len(h["instances"]) for h in held)


def run_ap_fixed(args, name):
    from tde_det.evaluation.ap_fixed import APFixedLVISEvaluator

    ev = APFixedLVISEvaluator(name, ("segm",), distributed=False, output_dir="",
                              dets_per_class=args.k, dets_per_image=args.dets_per_image)
    ev.reset()
    for image_id, (classes, scores) in enumerate(split(args.images, args.dets_per_image), 1):
        ev.process_candidates([{"image_id": image_id}],
                              SyntheticCandidates(image_id, classes, scores, args.rle_chars))
    counts = ev._top_k.counts()
    short = sum(n < args.k for n in counts)
    return ev.mask_rows, sum(counts), short


def child(args) -> None:
    """One mode in this process: its counts, time and peak resident memory above the baseline
    after the imports, as a json line."""
    from tde_det.evaluation.ap_fixed import APFixedLVISEvaluator  # noqa: F401  (the baseline)

    with tempfile.TemporaryDirectory() as folder:
        name = register(args.images, folder)
        gc.collect()
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        if args.child == "standard":
            masks, records = run_standard(args)
            short = -1
        else:
            masks, records, short = run_ap_fixed(args, name)
        seconds = time.perf_counter() - start
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    print(json.dumps({"masks": masks, "records": records, "short": short, "seconds": seconds,
                      "peak_mib": peak}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=19809, help="LVIS v1 val: 19,809")
    parser.add_argument("--dets-per-image", type=int, default=300,
                        help="box-head detections per image (the candidate limit)")
    parser.add_argument("--k", type=int, default=10000, help="TEST.AP_FIXED.DETS_PER_CLASS")
    parser.add_argument("--standard", type=int, default=300, help="TEST.DETECTIONS_PER_IMAGE")
    parser.add_argument("--rle-chars", type=int, default=120)
    parser.add_argument("--quick", action="store_true",
                        help="400 images, 200 detections each, K = 200: seconds")
    parser.add_argument("--child", choices=["standard", "ap-fixed"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.dets_per_image, args.k = 400, 200, 200
    if args.child:
        return child(args)
    sizes = ["--images", str(args.images), "--dets-per-image", str(args.dets_per_image),
             "--k", str(args.k), "--standard", str(args.standard),
             "--rle-chars", str(args.rle_chars)]
    runs = {}
    for mode in ("standard", "ap-fixed"):  # each in a fresh process: its own peak memory
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", mode,
                               *sizes], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"the {mode} run failed:\n{proc.stderr[-3000:]}")
        runs[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    std, fix = runs["standard"], runs["ap-fixed"]
    print(f"{args.images} images x {args.dets_per_image} detections, 1203 classes, "
          f"K = {args.k}, standard top {args.standard} per image; {fix['short']} classes end "
          f"with fewer than K")
    print("| mode | masks computed | records held | time (s) | peak memory (MiB) |")
    print("|---|---|---|---|---|")
    for label, r in (("standard", std), ("AP-fixed", fix)):
        print(f"| {label} | {r['masks']} | {r['records']} | {r['seconds']:.1f} | "
              f"{r['peak_mib']:.0f} |")
    ratios = [fix[k] / max(std[k], 1e-9) for k in ("masks", "records", "seconds", "peak_mib")]
    print("| AP-fixed / standard | " + " | ".join(f"{v:.2f}x" for v in ratios) + " |")


if __name__ == "__main__":
    main()
