#!/usr/bin/env python
"""Stock Detectron2 ``CascadeROIHeads`` vs tde-det's ``TDECascadeROIHeads``, same inputs and
weights, in one run: inference time per image, training step time, peak memory, as TDE/stock
ratios (targets: inference <= 1.03x, training <= 1.02x, memory <= 1.02x).

    python tools/benchmarks/heads.py                 # LVIS-sized heads, CPU (CUDA when present)
    python tools/benchmarks/heads.py --quick         # small sizes, for a smoke test
    python tools/benchmarks/heads.py --whole-model 20  # also the whole model's training step
    python tools/benchmarks/heads.py --breakdown     # where the TDE heads' training time goes
    python tools/benchmarks/heads.py --eager         # TDE heads with MODEL.TDE.FUSED_KERNELS False

The TDE heads run as the config's default, MODEL.TDE.FUSED_KERNELS True: the Triton kernels on
CUDA, the eager maths on the CPU (``--eager``: FUSED_KERNELS False on CUDA too). Both heads get the
same FPN features of one 800x1333 image (random, fixed seed), the same proposals and ground truth,
and the same weights: every shared parameter is copied from the stock heads, the stock linear
classifier's weight becomes the normalised classifier's weight (its bias has no counterpart). The
optimiser steps with learning rate 0, so every timed step sees the same weights (the TDE heads'
head directions do move, as in training). Timings are medians of interleaved repeats in alternating
order (stock, TDE, TDE, stock, ...) after warm-up, so machine noise hits both alike; training
steps, short and noisier, get three times as many repeats by default. Peak memory: a fresh
subprocess per variant builds only that variant's heads, loads the shared weights (saved once from
the stock heads) and runs one training step and one inference; its peak memory is reported as the
increase over the process's baseline before the heads were built (inputs already made), so the
ratio measures the heads: on CUDA ``torch.cuda.max_memory_allocated`` minus the memory allocated
before; on CPU the peak resident set minus the resident set before (Linux: VmHWM after resetting it
through ``/proc/self/clear_refs``; elsewhere ``ru_maxrss``); the median of min(3, --repeats)
interleaved probes per variant.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model, build_roi_heads
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage
from torch.utils._python_dispatch import TorchDispatchMode

import tde_det  # noqa: F401  (registration)
from tde_det import add_tde_config
from tde_det.layers.fused import kernels_for

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE_SIZE = (800, 1333)


def make_cfg(variant: str, quick: bool, device: str):
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "lvis_cascade_tde.yaml"))
    cfg.MODEL.DEVICE = device
    cfg.MODEL.ROI_HEADS.NAME = "CascadeROIHeads" if variant == "stock" else "TDECascadeROIHeads"
    cfg.MODEL.TDE.FUSED_KERNELS = variant == "tde-fused"
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


def random_boxes(n: int, h: int, w: int, g: torch.Generator, pos: float = 0.8,
                 size: float = 0.2) -> Boxes:
    """``n`` boxes with corners in the first ``pos`` of the image and sides of 16 px plus up to
    ``size`` of the image."""
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * pos, h * pos])
    wh = 16 + torch.rand(n, 2, generator=g) * torch.tensor([w * size, h * size])
    return Boxes(torch.cat([xy, xy + wh], 1))


def random_ground_truth(n: int, h: int, w: int, g: torch.Generator, **box_args) -> Instances:
    """``n`` random ground-truth instances (boxes, classes of 50, bit masks) of an h x w image."""
    gt = Instances((h, w), gt_boxes=random_boxes(n, h, w, g, **box_args),
                   gt_classes=torch.randint(0, 50, (n,), generator=g))
    gt.gt_masks = BitMasks(torch.rand(n, h, w, generator=g) > 0.5)
    return gt


def make_inputs(quick: bool, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h, w = (128, 192) if quick else IMAGE_SIZE
    channels = 256
    features = {f"p{k}": torch.randn(1, channels, h // 2 ** k, w // 2 ** k, generator=g)
                .to(device) for k in (2, 3, 4, 5)}
    n_props, n_gt = (64, 4) if quick else (1000, 15)
    proposals = Instances((h, w), proposal_boxes=random_boxes(n_props, h, w, g),
                          objectness_logits=torch.randn(n_props, generator=g)).to(device)
    return features, proposals, random_ground_truth(n_gt, h, w, g).to(device)


def build_heads(variant: str, quick: bool, device: str) -> torch.nn.Module:
    shapes = {f"p{k}": ShapeSpec(channels=256, stride=2 ** k) for k in (2, 3, 4, 5)}
    return build_roi_heads(make_cfg(variant, quick, device), shapes).to(device)


def load_shared(heads: torch.nn.Module, state: Dict[str, torch.Tensor], prefix: str = "") -> None:
    """Load the stock heads' ``state`` into ``heads`` (stock or TDE): every shared parameter; the
    stock linear classifier's weight becomes the normalised classifier's weight. ``prefix``:
    the heads' name in ``heads`` ("roi_heads." for a whole model)."""
    missing, unexpected = heads.load_state_dict(state, strict=False)
    tde = any(k.endswith("head_direction.ema") for k in heads.state_dict())
    allowed_missing = {f"{prefix}box_predictor.{s}.head_direction.ema" for s in range(3)} \
        if tde else set()
    allowed_unexpected = {f"{prefix}box_predictor.{s}.cls_score.bias" for s in range(3)} \
        if tde else set()
    if set(missing) != allowed_missing or set(unexpected) != allowed_unexpected:
        raise RuntimeError(f"the heads differ in more than the classifier: missing {missing}, "
                           f"unexpected {unexpected}")


def build_pair(quick: bool, device: str, tde_variant: str = "tde"):
    """(stock heads, TDE heads) with the same weights."""
    torch.manual_seed(0)
    stock = build_heads("stock", quick, device)
    tde = build_heads(tde_variant, quick, device)
    load_shared(tde, stock.state_dict())
    return stock, tde


def build_model_pair(quick: bool, device: str, tde_variant: str = "tde"):
    """(stock model, TDE model): whole Cascade Mask R-CNNs of the config (quick: ResNet-18) with
    the same weights, random as there are no pretrained ones here."""
    models = []
    for variant in ("stock", tde_variant):
        cfg = make_cfg(variant, quick, device)
        cfg.MODEL.WEIGHTS = ""
        if quick:
            cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 18, 64
        torch.manual_seed(0)
        models.append(build_model(cfg).to(device))
    load_shared(models[1], models[0].state_dict(), prefix="roi_heads.")
    return models


def make_model_batch(quick: bool, device: str, images: int = 2, seed: int = 0) -> List[Dict]:
    """``images`` random images (the LVIS configs train 2 per GPU) with ground truth."""
    g = torch.Generator().manual_seed(seed)
    h, w = (128, 192) if quick else IMAGE_SIZE
    batch = []
    for _ in range(images):
        gt = random_ground_truth(4 if quick else 15, h, w, g, pos=0.7, size=0.25)
        batch.append({"image": torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8),
                      "height": h, "width": w, "instances": gt})
    return batch


def model_training_step(model, batch, optimizer):
    model.train()
    with EventStorage():
        losses = model(batch)
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()


def whole_model_training(quick: bool, device: str, repeats: int,
                         tde_variant: str = "tde") -> Dict[str, float]:
    """Median training-step seconds of the whole model with each head (interleaved, ABBA)."""
    stock, tde = build_model_pair(quick, device, tde_variant)
    batch = make_model_batch(quick, device)
    pair = (("stock", stock), ("tde", tde))
    opts = {n: torch.optim.SGD(m.parameters(), lr=0.0, momentum=0.9) for n, m in pair}
    for name, m in pair:  # warm-up
        model_training_step(m, batch, opts[name])
    times = {"stock": [], "tde": []}
    for i in range(repeats):
        for name, m in (pair if i % 2 == 0 else pair[::-1]):
            times[name].append(timed(lambda: model_training_step(m, batch, opts[name]), device))
    return {name: statistics.median(t) for name, t in times.items()}


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


def cuda_kernels(fn) -> int:
    """CUDA kernels launched by one call of ``fn`` (copies and memsets not counted)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(e.count for e in prof.key_averages()
               if e.device_type == torch.autograd.DeviceType.CUDA
               and not e.key.startswith(("Memcpy", "Memset")))


class _OpCounter(TorchDispatchMode):
    """Counts the ATen operators that run below autograd (forward and backward), leaving out
    views, metadata and CPU scalar wrapping, which launch no kernel."""

    NOT_KERNELS = {"aten::promote_types", "aten::scalar_tensor", "aten::_local_scalar_dense",
                   "aten::detach", "aten::alias", "aten::t", "aten::transpose", "aten::unsqueeze",
                   "aten::squeeze", "aten::select", "aten::slice", "aten::expand",
                   "aten::permute", "aten::reshape", "aten::_unsafe_view", "aten::as_strided",
                   "aten::split", "aten::split_with_sizes", "aten::narrow", "aten::unbind",
                   "aten::chunk", "aten::view", "aten::_reshape_alias"}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name not in self.NOT_KERNELS:
            self.count += 1
        return func(*args, **(kwargs or {}))


def aten_ops(fn) -> int:
    """ATen operators one call of ``fn`` runs (CPU): a device-independent count of the kernels
    a launch-bound GPU step pays for."""
    counter = _OpCounter()
    with counter:
        fn()
    return counter.count


def training_breakdown(stock, tde, inputs, device: str, repeats: int) -> Dict[str, Dict]:
    """Where the TDE heads' extra training time goes: the step of the stock heads, of the TDE
    heads (no metrics logged, as in most iterations), of the TDE heads in an iteration that
    logs the head-direction metrics, and of the TDE heads with the head-direction update switched
    off (for this measurement only); medians of ``repeats`` interleaved steps, and the kernels
    one step launches on CUDA, or the ATen operators it runs on the CPU."""
    predictors = list(tde.box_predictor)
    opts = {id(h): torch.optim.SGD(h.parameters(), lr=0.0, momentum=0.9) for h in (stock, tde)}

    fused = predictors[0].cls_score.fused
    log_period = predictors[0].log_period

    def tde_step(record_cos: bool, update: bool, use_fused: bool = fused):
        def step():
            for p in predictors:
                p.log_period = 1 if record_cos else 0  # 1: every iteration logs
                p.cls_score.fused = p.head_direction.fused = use_fused
                if not update:  # both routes: its own call, or inside the classifier's launch
                    p.update_head_direction = lambda x, gt_classes: None
                    p.head_direction.kernel_update = lambda x, gt_classes, num_classes: None
            try:
                training_step(tde, inputs, opts[id(tde)])
            finally:
                for p in predictors:
                    p.log_period = log_period
                    p.cls_score.fused = p.head_direction.fused = fused
                    p.__dict__.pop("update_head_direction", None)
                    p.head_direction.__dict__.pop("kernel_update", None)
        return step

    variants = {"stock CascadeROIHeads": lambda: training_step(stock, inputs, opts[id(stock)]),
                "TDECascadeROIHeads": tde_step(False, True),
                "TDECascadeROIHeads, an iteration that logs fg_cos": tde_step(True, True),
                "TDECascadeROIHeads without the head-direction update": tde_step(False, False)}
    if kernels_for(*inputs[0].values()) is not None:  # where the Triton kernels run
        name = "TDECascadeROIHeads, MODEL.TDE.FUSED_KERNELS " + str(not fused)
        variants[name] = tde_step(False, True, not fused)
    for fn in variants.values():
        fn()
    times = {name: [] for name in variants}
    names = list(variants)
    for i in range(repeats):
        for name in (names if i % 2 == 0 else names[::-1]):
            times[name].append(timed(variants[name], device))
    out = {name: {"seconds": statistics.median(t)} for name, t in times.items()}
    for name, fn in variants.items():
        if device.startswith("cuda"):
            out[name]["cuda_kernels"] = cuda_kernels(fn)
        else:  # the backward runs in this thread on the CPU, so the counter sees it
            out[name]["aten_ops"] = aten_ops(fn)
    return out


def _proc_status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith(field + ":")) / 1024


def _cpu_baseline_mib() -> float:
    """Reset the peak resident set to the current one and return it (Linux); elsewhere the peak
    so far (``ru_maxrss``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status_mib("VmRSS")
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_peak_mib() -> float:
    try:
        return _proc_status_mib("VmHWM")
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_probe(variant: str, quick: bool, device: str, state_path: str) -> float:
    """Peak memory (MiB) of one training step and one inference of ``variant`` (only its heads
    are built, with the weights saved in ``state_path``), over the baseline before the heads."""
    inputs = make_inputs(quick, device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated() / 2 ** 20
    else:
        baseline = _cpu_baseline_mib()
    heads = build_heads(variant, quick, device)
    load_shared(heads, torch.load(state_path, map_location="cpu", mmap=True, weights_only=True))
    optimizer = torch.optim.SGD(heads.parameters(), lr=0.0, momentum=0.9)
    training_step(heads, inputs, optimizer)
    inference_step(heads, inputs)
    peak = torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else _cpu_peak_mib()
    return peak - baseline


def main(argv=None) -> Dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    p.add_argument("--repeats", type=int, default=7, help="timed inference repeats per variant")
    p.add_argument("--training-repeats", type=int, default=0,
                   help="timed training steps per variant (default: 3 x --repeats)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--whole-model", type=int, default=0, metavar="N",
                   help="also time N training steps of the whole Cascade Mask R-CNN of the "
                   "config (backbone, RPN, heads; 2 images) with each head, for context")
    p.add_argument("--breakdown", action="store_true",
                   help="also time the TDE heads' training step with fg_cos recorded and with "
                   "the head-direction update switched off (and count CUDA kernels, or on the "
                   "CPU ATen operators)")
    kernels = p.add_mutually_exclusive_group()
    kernels.add_argument("--fused", action="store_true",
                         help="the TDE heads with MODEL.TDE.FUSED_KERNELS True (Triton kernels, "
                         "float32 CUDA tensors only; the default where they run), refused "
                         "elsewhere")
    kernels.add_argument("--eager", action="store_true",
                         help="the TDE heads with MODEL.TDE.FUSED_KERNELS False (eager PyTorch "
                         "maths; what the CPU always runs)")
    p.add_argument("--memory-probe", choices=["stock", "tde", "tde-fused"],
                   help=argparse.SUPPRESS)
    p.add_argument("--state", help=argparse.SUPPRESS)  # the shared weights, for --memory-probe
    args = p.parse_args(argv)
    if args.memory_probe:
        peak = memory_probe(args.memory_probe, args.quick, args.device, args.state)
        print(json.dumps({"peak_mib": peak}))
        return {}
    runs_kernels = kernels_for(torch.zeros(1, device=args.device)) is not None
    if args.fused and not runs_kernels:
        p.error(f"--fused: the Triton kernels run on float32 CUDA tensors, not on "
                f"--device {args.device}")
    # as the config's default (FUSED_KERNELS True), which runs the kernels where they can run
    fused = runs_kernels and not args.eager
    tde_variant = "tde-fused" if fused else "tde"
    stock, tde = build_pair(args.quick, args.device, tde_variant)
    work = tempfile.TemporaryDirectory()
    state_path = os.path.join(work.name, "stock_heads.pth")
    torch.save(stock.state_dict(), state_path)  # before any step changes the weights
    inputs = make_inputs(args.quick, args.device)
    opts = {id(h): torch.optim.SGD(h.parameters(), lr=0.0, momentum=0.9) for h in (stock, tde)}
    times = {(v, k): [] for v in ("stock", "tde") for k in ("inference", "training")}
    for h in (stock, tde):  # warm-up (training first: it gives the TDE heads a head direction)
        training_step(h, inputs, opts[id(h)])
        inference_step(h, inputs)
    detections = {n: inference_step(h, inputs) for n, h in (("stock", stock), ("tde", tde))}
    pair = (("stock", stock), ("tde", tde))
    # Interleaved, in alternating order (stock-TDE, TDE-stock, ...) so that neither variant
    # always runs first; training steps are short and noisier, so they are repeated more.
    for i in range(args.repeats):
        for name, h in (pair if i % 2 == 0 else pair[::-1]):
            times[(name, "inference")].append(timed(lambda: inference_step(h, inputs),
                                                    args.device))
    for i in range(args.training_repeats or 3 * args.repeats):
        for name, h in (pair if i % 2 == 0 else pair[::-1]):
            times[(name, "training")].append(timed(
                lambda: training_step(h, inputs, opts[id(h)]), args.device))
    med = {k: statistics.median(v) for k, v in times.items()}
    probes = {"stock": [], tde_variant: []}
    for _ in range(min(3, args.repeats)):  # interleaved fresh processes; the median of each
        for variant in probes:
            cmd = [sys.executable, os.path.abspath(__file__), "--memory-probe", variant,
                   "--device", args.device, "--state", state_path] + \
                (["--quick"] if args.quick else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            probes[variant].append(json.loads(out.strip().splitlines()[-1])["peak_mib"])
    work.cleanup()
    memory = {"tde" if v == tde_variant else v: statistics.median(m) for v, m in probes.items()}
    rows = [("inference per image (s)", med[("stock", "inference")], med[("tde", "inference")],
             1.03),
            ("training step (s)", med[("stock", "training")], med[("tde", "training")], 1.02),
            ("peak memory over baseline (MiB)", memory["stock"], memory["tde"], 1.02)]
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"ROI heads of Cascade Mask R-CNN ({'quick' if args.quick else 'LVIS sizes'}: "
          f"{make_cfg('tde', args.quick, args.device).MODEL.ROI_HEADS.NUM_CLASSES} classes, "
          f"{len(inputs[1])} proposals, {detections['stock']} / {detections['tde']} detections "
          f"per image), {device}, medians of {args.repeats} inference and "
          f"{args.training_repeats or 3 * args.repeats} training repeats, interleaved")
    tde_label = "TDECascadeROIHeads" + ((" (FUSED_KERNELS)" if fused else
                                         " (FUSED_KERNELS False)") if runs_kernels else "")
    print(f"| measure | stock CascadeROIHeads | {tde_label} | ratio | target |")
    print("|---|---|---|---|---|")
    result = {}
    for name, a, b, target in rows:
        ok = "ok" if b / a <= target else "MISSED"
        print(f"| {name} | {a:.4g} | {b:.4g} | {b / a:.3f}x | <= {target}x {ok} |")
        result[name] = {"stock": a, "tde": b, "ratio": b / a, "target": target}
    if args.breakdown:
        parts = training_breakdown(stock, tde, inputs, args.device,
                                   args.training_repeats or 3 * args.repeats)
        base = parts["stock CascadeROIHeads"]["seconds"]
        print("\nWhere the training time goes (medians of "
              f"{args.training_repeats or 3 * args.repeats} interleaved steps each):")
        counted = "CUDA kernels" if args.device.startswith("cuda") else "ATen ops"
        print(f"| training step of the heads | time (s) | ratio | {counted} |")
        print("|---|---|---|---|")
        for name, r in parts.items():
            print(f"| {name} | {r['seconds']:.4g} | {r['seconds'] / base:.3f}x | "
                  f"{r.get('cuda_kernels', r.get('aten_ops', '-'))} |")
        result["breakdown"] = parts
    if args.whole_model:
        del stock, tde, inputs, opts
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
        whole = whole_model_training(args.quick, args.device, args.whole_model, tde_variant)
        print(f"\nFor context, the whole Cascade Mask R-CNN of the config "
              f"({'ResNet-18' if args.quick else 'ResNet-101'}-FPN, random weights, 2 "
              f"{'128x192' if args.quick else '800x1333'} images), median of "
              f"{args.whole_model} training steps each, interleaved:")
        print(f"| measure | stock CascadeROIHeads | {tde_label} | ratio |")
        print("|---|---|---|---|")
        a, b = whole["stock"], whole["tde"]
        print(f"| whole-model training step (s) | {a:.4g} | {b:.4g} | {b / a:.3f}x |")
        result["whole-model training step (s)"] = {"stock": a, "tde": b, "ratio": b / a}
    return result


if __name__ == "__main__":
    main()
