#!/usr/bin/env python
"""Time ``paste_masks_batched`` (what the alpha sweep pastes with) against Detectron2's
``paste_masks_in_image`` on the same random masks and boxes, in one run, and check that the two
give the same bitmasks.

Cases: the tiny benchmark dataset's image size (70 x 109) and LVIS's test size (800 x 1333),
with boxes of many sizes and aspect ratios (some on the image's edges). Each time is the median
of ``--repeats`` interleaved calls, on the CPU (on other devices both are Detectron2's function).

    python tools/benchmark_paste_masks.py [--repeats 7] [--threads 2]
"""
import argparse
import statistics
import time

import torch
from detectron2.layers import paste_masks_in_image

from tde_det.evaluation.paste_masks import paste_masks_batched

# (image height, image width, masks, box size as a fraction of the image)
CASES = [(70, 109, 250, 0.6), (800, 1333, 300, 0.3), (800, 1333, 600, 0.2),
         (800, 1333, 300, 0.05)]


def random_boxes(n: int, height: int, width: int, scale: float, generator) -> torch.Tensor:
    """About ``n`` boxes inside the image, side lengths up to ``scale`` of its size (skewed to
    small ones), some clipped at its edges."""
    size = torch.tensor([width, height], dtype=torch.float32)
    centre = torch.rand(n, 2, generator=generator) * size * 1.2 - 0.1 * size
    extent = torch.rand(n, 2, generator=generator) ** 2 * size * scale + 0.3
    boxes = torch.cat([centre - extent / 2, centre + extent / 2], dim=1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    return boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"median of {args.repeats} interleaved calls; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, CPU")
    print("| image | masks | Detectron2 (s) | batched (s) | Detectron2 / batched | equal |")
    print("|---|---|---|---|---|---|", flush=True)
    generator = torch.Generator().manual_seed(0)
    for height, width, n, scale in CASES:
        boxes = random_boxes(n, height, width, scale, generator)
        masks = torch.rand(len(boxes), 28, 28, generator=generator)
        functions = {"d2": paste_masks_in_image, "batched": paste_masks_batched}
        results = {name: f(masks, boxes, (height, width)) for name, f in functions.items()}
        times = {name: [] for name in functions}
        for _ in range(args.repeats):
            for name, f in functions.items():
                t0 = time.perf_counter()
                f(masks, boxes, (height, width))
                times[name].append(time.perf_counter() - t0)
        d2, batched = (statistics.median(times[name]) for name in functions)
        equal = torch.equal(results["d2"], results["batched"])
        print(f"| {height} x {width} | {len(boxes)} | {d2:.4f} | {batched:.4f} | "
              f"{d2 / batched:.2f}x | {equal} |", flush=True)


if __name__ == "__main__":
    main()
