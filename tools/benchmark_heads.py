#!/usr/bin/env python
"""Stock Detectron2 ``CascadeROIHeads`` vs tde-det's ``TDECascadeROIHeads``, same inputs and
weights, in one run: inference time per image, training step time, peak memory, as TDE/stock
ratios (targets: inference <= 1.03x, training <= 1.02x, memory <= 1.02x).

    python tools/benchmark_heads.py                 # LVIS-sized heads, CPU (CUDA when present)
    python tools/benchmark_heads.py --quick         # small sizes, for a smoke test

Both heads get the same FPN features of one 800x1333 image (random, fixed seed), the same
proposals and ground truth, and the same weights: every shared parameter is copied from the
stock heads, the stock linear classifier's weight becomes the normalised classifier's weight (its
bias has no counterpart). Timings are medians of interleaved repeats (stock, TDE, stock, TDE,
...) after warm-up, so machine noise hits both alike. Peak memory: on CUDA
``torch.cuda.max_memory_allocated`` around the step; on CPU the peak resident set size
(``ru_maxrss``) of a fresh subprocess per variant that runs one training step and one inference.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Dict

import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_roi_heads
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

import tde_det  # noqa: F401  (registration)
from tde_det import add_tde_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_SIZE = (800, 1333)


def make_cfg(variant: str, quick: bool, device: str):
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "lvis_cascade_tde.yaml"))
    cfg.MODEL.DEVICE = device
    cfg.MODEL.ROI_HEADS.NAME = "CascadeROIHeads" if variant == "stock" else "TDECascadeROIHeads"
    cfg.MODEL.TDE.SYNC_HEAD_DIRECTION = False
    # Keep every candidate box, so that both heads send the same number of detections (the
    # top 300) to the mask head: otherwise the time measures the score distribution.
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    if quick:
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = 50
        cfg.TEST.DETECTIONS_PER_IMAGE = 50
        cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 64
        cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 256
        cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 32
    return cfg


def make_inputs(quick: bool, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h, w = (128, 192) if quick else IMAGE_SIZE
    channels = 256
    features = {f"p{k}": torch.randn(1, channels, h // 2 ** k, w // 2 ** k, generator=g)
                .to(device) for k in (2, 3, 4, 5)}
    n_props, n_gt = (64, 4) if quick else (1000, 15)

    def boxes(n):
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
        wh = 16 + torch.rand(n, 2, generator=g) * torch.tensor([w * 0.2, h * 0.2])
        return Boxes(torch.cat([xy, xy + wh], 1).to(device))

    proposals = Instances((h, w), proposal_boxes=boxes(n_props),
                          objectness_logits=torch.randn(n_props, generator=g).to(device))
    gt = Instances((h, w), gt_boxes=boxes(n_gt),
                   gt_classes=torch.randint(0, 50, (n_gt,), generator=g).to(device))
    gt.gt_masks = BitMasks(torch.rand(n_gt, h, w, generator=g).to(device) > 0.5)
    return features, proposals, gt


def build_pair(quick: bool, device: str):
    """(stock heads, TDE heads) with the same weights."""
    shapes = {f"p{k}": ShapeSpec(channels=256, stride=2 ** k) for k in (2, 3, 4, 5)}
    torch.manual_seed(0)
    stock = build_roi_heads(make_cfg("stock", quick, device), shapes).to(device)
    tde = build_roi_heads(make_cfg("tde", quick, device), shapes).to(device)
    missing, unexpected = tde.load_state_dict(stock.state_dict(), strict=False)
    allowed_missing = {f"box_predictor.{s}.head_direction.ema" for s in range(3)}
    allowed_unexpected = {f"box_predictor.{s}.cls_score.bias" for s in range(3)}
    if set(missing) != allowed_missing or set(unexpected) != allowed_unexpected:
        raise RuntimeError(f"the heads differ in more than the classifier: missing {missing}, "
                           f"unexpected {unexpected}")
    return stock, tde


def inference_step(heads, inputs) -> int:
    """One inference; returns the number of detections."""
    features, proposals, _ = inputs
    heads.eval()
    with torch.no_grad():
        instances, _ = heads(None, features, [proposals])
    return len(instances[0])


def training_step(heads, inputs, optimizer):
    features, proposals, gt = inputs
    heads.train()
    with EventStorage():
        _, losses = heads(None, features, [proposals], [gt])
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()


def _sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def memory_probe(variant: str, quick: bool, device: str) -> float:
    """Peak memory (MiB) of one training step and one inference of ``variant``."""
    stock, tde = build_pair(quick, device)
    heads = stock if variant == "stock" else tde
    inputs = make_inputs(quick, device)
    optimizer = torch.optim.SGD(heads.parameters(), lr=1e-4, momentum=0.9)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        training_step(heads, inputs, optimizer)
        inference_step(heads, inputs)
        return torch.cuda.max_memory_allocated() / 2 ** 20
    training_step(heads, inputs, optimizer)
    inference_step(heads, inputs)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> Dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--memory-probe", choices=["stock", "tde"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_probe:
        print(json.dumps({"peak_mib": memory_probe(args.memory_probe, args.quick, args.device)}))
        return {}
    stock, tde = build_pair(args.quick, args.device)
    inputs = make_inputs(args.quick, args.device)
    opts = {id(h): torch.optim.SGD(h.parameters(), lr=1e-4, momentum=0.9) for h in (stock, tde)}
    times = {(v, k): [] for v in ("stock", "tde") for k in ("inference", "training")}
    for h in (stock, tde):  # warm-up (training first: it gives the TDE heads a head direction)
        training_step(h, inputs, opts[id(h)])
        inference_step(h, inputs)
    detections = {n: inference_step(h, inputs) for n, h in (("stock", stock), ("tde", tde))}
    for _ in range(args.repeats):
        for name, h in (("stock", stock), ("tde", tde)):
            times[(name, "inference")].append(timed(lambda: inference_step(h, inputs),
                                                    args.device))
            times[(name, "training")].append(timed(
                lambda: training_step(h, inputs, opts[id(h)]), args.device))
    med = {k: statistics.median(v) for k, v in times.items()}
    memory = {}
    for variant in ("stock", "tde"):
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-probe", variant,
               "--device", args.device] + (["--quick"] if args.quick else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        memory[variant] = json.loads(out.strip().splitlines()[-1])["peak_mib"]
    rows = [("inference per image (s)", med[("stock", "inference")], med[("tde", "inference")],
             1.03),
            ("training step (s)", med[("stock", "training")], med[("tde", "training")], 1.02),
            ("peak memory (MiB)", memory["stock"], memory["tde"], 1.02)]
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"ROI heads of Cascade Mask R-CNN ({'quick' if args.quick else 'LVIS sizes'}: "
          f"{make_cfg('tde', args.quick, args.device).MODEL.ROI_HEADS.NUM_CLASSES} classes, "
          f"{len(inputs[1])} proposals, {detections['stock']} / {detections['tde']} detections "
          f"per image), {device}, median of {args.repeats} interleaved repeats")
    print("| measure | stock CascadeROIHeads | TDECascadeROIHeads | ratio | target |")
    print("|---|---|---|---|---|")
    result = {}
    for name, a, b, target in rows:
        ok = "ok" if b / a <= target else "MISSED"
        print(f"| {name} | {a:.4g} | {b:.4g} | {b / a:.3f}x | <= {target}x {ok} |")
        result[name] = {"stock": a, "tde": b, "ratio": b / a, "target": target}
    return result


if __name__ == "__main__":
    main()
