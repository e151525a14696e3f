#!/usr/bin/env python
"""Time the one-pass alpha sweep against separate evaluations, in one run.

On generated tiny data (a tiny TDE Cascade Mask R-CNN on the tiny LVIS-format dataset, and the
small CNN on tiny Fashion-MNIST-format data), after a few training iterations, it times
  (1) one evaluation with one alpha (Trainer.test),
  (2) ten separate evaluations, one per alpha (what ``--eval-only`` run ten times does, without
      the process start-up),
  (3) the sweep over the same ten alphas from one inference pass (detection: with the ten
      LVIS evaluations one after another, and with them in --eval-workers forked processes),
and prints the ratios (3)/(1) (target <= 1.5) and (2)/(3). Each of (1) and (2) writes the files
``--eval-only`` writes (Detectron2's evaluator: the predictions and their json); the sweep, as
``tools/sweep_alpha.py`` by default, writes none (``--save-predictions`` there writes them).

``--detector full`` gives the detector the paper's sizes (ResNet-101-FPN, 256 channels, 1000
proposals, 1024-d box head, 4-conv mask head, images resized to 800x1333) on the same tiny
dataset (small images, 6 classes): the network then costs what it costs on LVIS, while each
alpha's own work (pasting masks into the small images, an evaluation over 6 classes) stays
small, so it shows the regime where the network dominates.

    python tools/benchmarks/sweep_alpha.py [--images 16] [--repeats 2] [--device cuda]
    python tools/benchmarks/sweep_alpha.py --tasks detection --detector full --images 4
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager

import torch
from detectron2.config import get_cfg

import tde_det  # noqa: F401  (registration)
from tde_det import add_tde_config
from tde_det.data.classification import register_fashion_mnist_lt
from tde_det.data.classification.synthetic import write_fashion_mnist_idx
from tde_det.data.detection.synthetic import write_tiny_lvis
from tde_det.engine import Trainer
from tde_det.evaluation.alpha_sweep import sweep_classification_dataset
from tde_det.evaluation.detection_alpha_sweep import (
    DetectionAlphaSweep,
    EvaluatorsSharingGroundTruth,
    available_cpus,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALPHAS = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0]


def _cfg(config: str, out: str, **overrides):
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", config))
    for key, value in overrides.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = getattr(node, p)
        if last not in node:  # a new key would be set silently
            raise KeyError(f"no config key {key}")
        setattr(node, last, value)
    cfg.OUTPUT_DIR = out
    return cfg


def _trained(cfg):
    torch.manual_seed(0)
    trainer = Trainer(cfg)
    trainer.train()
    return trainer.model.eval()


def _set_alpha(model, alpha: float) -> None:
    for m in model.modules():
        if hasattr(m, "alpha") and hasattr(m, "test_tde"):
            m.alpha = alpha


@contextmanager
def _console_to(path: str):
    """Within the block, everything written to stdout and stderr (training logs, evaluator
    tables, the LVIS API's prints, forked workers' output) goes to the file ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# The paper detector's sizes (Base-LVIS-Cascade-TDE.yaml) over the tiny CPU config; the classes
# stay the tiny dataset's, and the weights random (a few training steps).
FULL_DETECTOR = {
    "MODEL.RESNETS.DEPTH": 101, "MODEL.RESNETS.RES2_OUT_CHANNELS": 256,
    "MODEL.FPN.OUT_CHANNELS": 256, "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 2000,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": 2000, "MODEL.RPN.PRE_NMS_TOPK_TEST": 1000,
    "MODEL.RPN.POST_NMS_TOPK_TEST": 1000, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 512,
    "MODEL.ROI_BOX_HEAD.FC_DIM": 1024, "MODEL.ROI_MASK_HEAD.CONV_DIM": 256,
    "MODEL.ROI_MASK_HEAD.NUM_CONV": 4, "INPUT.MIN_SIZE_TRAIN": (800,),
    "INPUT.MAX_SIZE_TRAIN": 1333, "INPUT.MIN_SIZE_TEST": 800, "INPUT.MAX_SIZE_TEST": 1333,
    "SOLVER.MAX_ITER": 2}


def detection(work: str, images: int, repeats: int, device: str, eval_workers: int,
              detector: str = "tiny"):
    paths = write_tiny_lvis(os.path.join(work, "lvis"), num_train=8, num_val=images, seed=5)
    cfg = _cfg("TinyLVIS/cascade_R_18_tde.yaml", os.path.join(work, "det"), **{
        "DATASETS.LVIS_CUSTOM.NAMES": ("bench_lvis_train", "bench_lvis_val"),
        "DATASETS.LVIS_CUSTOM.JSON_FILES": (paths["train"], paths["val"]),
        "DATASETS.LVIS_CUSTOM.IMAGE_ROOTS": (paths["image_root"],) * 2,
        "DATASETS.TRAIN": ("bench_lvis_train",), "DATASETS.TEST": ("bench_lvis_val",),
        "SOLVER.MAX_ITER": 10, "MODEL.DEVICE": device,
        **(FULL_DETECTOR if detector == "full" else {})})
    model = _trained(cfg)

    def one(alpha=1.5):
        _set_alpha(model, alpha)
        Trainer.test(cfg, model)

    def sweep(workers):
        # no files, and one parse of the json, as sweep_alpha.py by default
        s = DetectionAlphaSweep(model, ALPHAS, EvaluatorsSharingGroundTruth(
            lambda folder: Trainer.build_evaluator(cfg, "bench_lvis_val", folder)))
        for batch in Trainer.build_test_loader(cfg, "bench_lvis_val"):
            s.process(batch)
        s.evaluate(workers)

    sweeps = {"1 process": lambda: sweep(1)}
    if eval_workers > 1:
        sweeps[f"{eval_workers} processes"] = lambda: sweep(eval_workers)
    return _measure(one, sweeps, repeats)


def classification(work: str, images: int, repeats: int, device: str, eval_workers: int,
                   detector: str = "tiny"):
    root = write_fashion_mnist_idx(os.path.join(work, "fm"), per_class=60,
                                   test_per_class=images)  # 10 classes: 10x images
    register_fashion_mnist_lt("bench_fm_r10", 10, seed=0, val_per_class=5, root=root)
    cfg = _cfg("FashionMNIST-LT/r10_deconfound.yaml", os.path.join(work, "cls"), **{
        "DATASETS.TRAIN": ("bench_fm_r10_train",), "DATASETS.TEST": ("bench_fm_r10_test",),
        "SOLVER.MAX_ITER": 10, "SOLVER.WARMUP_ITERS": 1, "SOLVER.IMS_PER_BATCH": 32,
        "MODEL.DEVICE": device})
    model = _trained(cfg)

    def one(alpha=1.0):
        _set_alpha(model, alpha)
        Trainer.test(cfg, model)

    return _measure(one, {"": lambda: sweep_classification_dataset(
        cfg, model, "bench_fm_r10_test", ALPHAS,
        Trainer.build_test_loader(cfg, "bench_fm_r10_test"))}, repeats)


def _measure(one, sweeps, repeats: int):
    """Median seconds of ``one``, of ten ``one`` and of each of ``sweeps`` ({name: fn})."""
    one()  # warm-up (first-call costs: data loading, allocations, worker start-up)
    for sweep in sweeps.values():
        sweep()
    t_one, t_ten, t_sweep = [], [], {name: [] for name in sweeps}
    for _ in range(repeats):  # interleaved, so that machine noise hits all alike
        t_one.append(_median_time(one, 1))
        for name, sweep in sweeps.items():
            t_sweep[name].append(_median_time(sweep, 1))
        t_ten.append(_median_time(lambda: [one(a) for a in ALPHAS], 1))
    return (statistics.median(t_one), statistics.median(t_ten),
            {name: statistics.median(t) for name, t in t_sweep.items()})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=16, help="evaluation images (detection); "
                   "classification uses 10x as many")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tasks", nargs="+", default=["detection", "classification"],
                   choices=["detection", "classification"])
    p.add_argument("--device", default="cpu", help="MODEL.DEVICE of both models (cpu, cuda)")
    p.add_argument("--detector", choices=["tiny", "full"], default="tiny",
                   help="detection: the tiny CPU detector, or one of the paper's sizes on the "
                   "same tiny data (see above)")
    p.add_argument("--eval-workers", type=int, default=min(len(ALPHAS), available_cpus()),
                   help="detection: also time the sweep with the LVIS evaluations in this many "
                   "forked processes (default: one per alpha, at most one per CPU)")
    args = p.parse_args(argv)
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"{len(ALPHAS)} alphas; median of {args.repeats} interleaved repeats; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {available_cpus()} "
          f"CPUs, {where}")
    print("| task | images | 1 alpha (s) | 10 separate evals (s) | sweep, 10 alphas (s) "
          "| sweep / 1 alpha (target <= 1.5) | 10 evals / sweep |")
    print("|---|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as work:
        log = os.path.join(work, "log.txt")
        for task in args.tasks:
            n = args.images if task == "detection" else args.images * 10
            fn = detection if task == "detection" else classification
            try:
                with _console_to(log):
                    t_one, t_ten, t_sweeps = fn(work, args.images, args.repeats, args.device,
                                                args.eval_workers, args.detector)
            except BaseException:
                with open(log) as f:
                    sys.stderr.write("".join(f.readlines()[-60:]))
                raise
            for name, t_sweep in t_sweeps.items():
                label = f"{task}, evaluations in {name}" if name else task
                if task == "detection" and args.detector == "full":
                    label = label.replace("detection", "detection (paper-size network)")
                print(f"| {label} | {n} | {t_one:.2f} | {t_ten:.2f} | {t_sweep:.2f} | "
                      f"{t_sweep / t_one:.2f}x | {t_ten / t_sweep:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
