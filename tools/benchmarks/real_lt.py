#!/usr/bin/env python
"""Does TDE do on real long-tailed images what the paper claims, at a schedule fair to each
method, and does the tracked head direction matter? (docs/evidence.md)

For every seed, method and schedule, trains with tde-det's own Trainer a classifier on a
registered classification dataset (default: Fashion-MNIST-LT with the small CNN of
``configs/FashionMNIST-LT/r{ratio}_deconfound.yaml``); each schedule is its own run of
``multiple x SOLVER.MAX_ITER`` iterations with its own cosine decay. From one feature pass per
split it then sweeps alpha for every test-time head direction (``MODEL.TDE.TEST_DIRECTION``:
the EMA, all-ones, the mean training feature, a seeded random one, zero), chooses alpha on the
balanced validation split and reports the test split. Each method is reported at its fair
schedule, the one of best validation top-1 (the longest schedule may be not saturated: the tool
says so), beside the table per schedule, the per-seed margins over the baseline and the
head-direction ablation. Writes ``results.json``, ``accuracy_vs_alpha.png`` and
``schedules_and_directions.png`` to --output.

    python tools/benchmarks/real_lt.py --ratio 100 --seeds 0 1 2 --schedules 0.5 1 2 \\
        --output output/evidence
"""
import argparse
import json
import os
import sys
import time
from typing import Dict, List

import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.evaluation import inference_context

import tde_det  # noqa: F401  (registration)
from tde_det import add_tde_config
from tde_det.data.classification import train_class_counts
from tde_det.engine import Trainer
from tde_det.engine.setup import quiet_logging
from tde_det.evaluation.alpha_sweep import ClassificationCache, check_alphas, sweep_classification
from tde_det.layers import TEST_DIRECTIONS, has_tde
from tde_det.modeling.meta_arch import set_train_mean_direction

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from real_lt_report import plot_alpha, plot_schedules, report, summarise  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# method -> (MODEL.TDE.CLASSIFIER, extra KEY VALUE overrides, SOLVER.BASE_LR factor).
# Momentum 0 keeps SGD's step size lr / (1 - momentum): BASE_LR x 10 for the configs' 0.9.
METHODS = {
    "baseline": ("linear", [], 1.0),
    "cosine": ("cosine", [], 1.0),
    "capsule": ("capsule", [], 1.0),
    "deconfound": ("deconfound", [], 1.0),
    "deconfound-momentum0": ("deconfound", ["SOLVER.MOMENTUM", "0.0"], "momentum"),
    "deconfound-average": ("deconfound", ["MODEL.TDE.HEAD_DIRECTION_FORM", "average"], 1.0),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ratio", type=int, default=100, choices=(10, 50, 100),
                   help="Fashion-MNIST-LT imbalance ratio (default dataset and config)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["baseline", "deconfound",
                                                     "deconfound-momentum0"],
                   choices=sorted(METHODS))
    p.add_argument("--schedules", type=float, nargs="+", default=[0.5, 1.0, 2.0],
                   help="multiples of SOLVER.MAX_ITER, each trained as its own run")
    p.add_argument("--directions", nargs="+", default=list(TEST_DIRECTIONS),
                   choices=TEST_DIRECTIONS, help="test-time head directions to ablate")
    p.add_argument("--alphas", type=float, nargs="+", default=None,
                   help="alpha grid (default: 0, 0.05, ..., 3)")
    p.add_argument("--iters", type=int, default=0,
                   help="SOLVER.MAX_ITER of the 1x schedule (0: the config's)")
    p.add_argument("--config-file", default="",
                   help="one config for every method (the method sets MODEL.TDE.CLASSIFIER and "
                        "TEST_TDE; default: configs/FashionMNIST-LT/r<ratio>_deconfound.yaml)")
    p.add_argument("--train", default="fashion_mnist_lt_r{ratio}_s{seed}_train",
                   help="training split; {ratio} and {seed} are filled in")
    p.add_argument("--val", default="fashion_mnist_lt_r{ratio}_s{seed}_val",
                   help="balanced split on which alpha and the fair schedule are chosen")
    p.add_argument("--test", default="fashion_mnist_lt_r{ratio}_s{seed}_test",
                   help="split that is reported")
    p.add_argument("--num-classes", type=int, default=0,
                   help="MODEL.IMAGE_CLASSIFIER.NUM_CLASSES (0: the config's)")
    p.add_argument("--many-threshold", type=int, default=-1,
                   help="TEST.CLASSIFICATION.MANY_THRESHOLD (-1: the config's)")
    p.add_argument("--few-threshold", type=int, default=-1,
                   help="TEST.CLASSIFICATION.FEW_THRESHOLD (-1: the config's)")
    p.add_argument("--root", default="", help="folder of the Fashion-MNIST IDX files "
                   "(DATASETS.FASHION_MNIST.ROOT; default: Debian's)")
    p.add_argument("--output", default="output/evidence")
    p.add_argument("--resume", action="store_true",
                   help="keep the runs already in <output>/runs.jsonl (same arguments) and "
                        "train only the missing ones")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: report the runs in <output>/runs.jsonl (e.g. of a run "
                        "that was stopped)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p.parse_args(argv)


def splits(args, seed: int) -> Dict[str, str]:
    return {k: getattr(args, k).format(ratio=args.ratio, seed=seed)
            for k in ("train", "val", "test")}


def make_cfg(args, method: str, seed: int, multiple: float):
    classifier, extra, lr_factor = METHODS[method]
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(args.config_file or os.path.join(
        REPO, "configs", "FashionMNIST-LT", f"r{args.ratio}_deconfound.yaml"))
    cfg.MODEL.TDE.CLASSIFIER = classifier
    cfg.MODEL.TDE.TEST_TDE = has_tde(classifier)
    names = splits(args, seed)
    cfg.DATASETS.TRAIN = (names["train"],)
    cfg.DATASETS.TEST = ()  # evaluated here, from one feature pass per split
    cfg.DATASETS.FASHION_MNIST.ROOT = args.root
    cfg.SEED = seed
    cfg.MODEL.DEVICE = "cpu"
    if args.num_classes > 0:
        cfg.MODEL.IMAGE_CLASSIFIER.NUM_CLASSES = args.num_classes
    if args.many_threshold >= 0:
        cfg.TEST.CLASSIFICATION.MANY_THRESHOLD = args.many_threshold
    if args.few_threshold >= 0:
        cfg.TEST.CLASSIFICATION.FEW_THRESHOLD = args.few_threshold
    momentum = cfg.SOLVER.MOMENTUM
    cfg.merge_from_list(list(args.opts) + extra)
    if lr_factor == "momentum":  # the same step size lr / (1 - momentum) as the config's SGD
        cfg.SOLVER.BASE_LR *= (1.0 - cfg.SOLVER.MOMENTUM) / (1.0 - momentum)
    base = args.iters if args.iters > 0 else cfg.SOLVER.MAX_ITER
    iters = max(int(round(base * multiple)), 1)
    cfg.SOLVER.MAX_ITER = iters
    cfg.SOLVER.CHECKPOINT_PERIOD = iters
    cfg.SOLVER.WARMUP_ITERS = min(cfg.SOLVER.WARMUP_ITERS, max(iters // 4, 1))
    cfg.OUTPUT_DIR = os.path.join(args.output, f"s{seed}_{method}_x{multiple:g}")
    cfg.freeze()
    return cfg, names


@torch.no_grad()
def features(model, loader):
    """(pooled features [N, d], labels [N]) of every image of ``loader``, in eval mode."""
    xs, ys = [], []
    with inference_context(model):
        for batch in loader:
            xs.append(model.extract_features(model.preprocess_image(batch)).float())
            ys.append(torch.as_tensor([int(d["label"]) for d in batch], dtype=torch.long))
    return torch.cat(xs), torch.cat(ys)


def cosines(a: torch.Tensor, b: torch.Tensor, num_heads: int) -> List[float]:
    """Per head: cos(a^k, b^k)."""
    a, b = a.reshape(num_heads, -1).double(), b.reshape(num_heads, -1).double()
    return torch.nn.functional.cosine_similarity(a, b, dim=1).tolist()


def evaluate(cfg, model, names: Dict[str, str], directions: List[str], alphas: List[float]):
    """Per test direction: the alpha sweep on val and test (no per-class rows), the alpha of
    best val top-1, and the cosine of the direction with x_bar per head."""
    c = cfg.TEST.CLASSIFICATION
    counts = train_class_counts(names["test"])
    feats = {s: features(model, Trainer.build_test_loader(cfg, names[s])) for s in ("val", "test")}
    tde = has_tde(model.classifier.kind)
    out = {}
    for name in (directions if tde else ["ema"]):
        if name == "train_mean":
            set_train_mean_direction(model, Trainer.build_test_loader(cfg, names["train"]))
        model.test_direction = name
        grid = alphas if tde else [0.0]
        rows = {}
        for split, (x, y) in feats.items():
            total, bias = model.logits_and_tde_bias(x)
            sweep = sweep_classification(ClassificationCache(total, bias, y), grid, counts,
                                         c.MANY_THRESHOLD, c.FEW_THRESHOLD, c.TOPK)
            rows[split] = [{k: v for k, v in r.items() if k != "per_class"} for r in sweep]
        best = max(sorted(rows["val"], key=lambda r: r["alpha"]), key=lambda r: r["top1"])
        entry = {"alpha_val": best["alpha"], "val": rows["val"], "test": rows["test"]}
        if tde:
            entry["cos_with_ema"] = cosines(model.tde_direction(), model.head_direction.ema,
                                            model.classifier.num_heads)
        out[name] = entry
    model.test_direction = "ema"
    return out


def train_and_evaluate(args, method, seed, multiple, alphas) -> Dict:
    cfg, names = make_cfg(args, method, seed, multiple)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    torch.manual_seed(seed)
    np.random.seed(seed)
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    train_s = time.perf_counter() - t0
    result = evaluate(cfg, trainer.model, names, args.directions, alphas)
    return {"method": method, "seed": seed, "multiple": multiple,
            "max_iter": cfg.SOLVER.MAX_ITER, "train_seconds": train_s,
            "eval_seconds": time.perf_counter() - t0 - train_s, "directions": result}


def load_runs(path: str, jobs) -> List[Dict]:
    """The runs of ``path`` (one json per line) that are among ``jobs``."""
    if not os.path.exists(path):
        return []
    wanted = set(jobs)
    with open(path) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    return [r for r in runs if (r["seed"], r["method"], r["multiple"]) in wanted]




def main(argv=None) -> Dict:
    args = parse_args(argv)
    alphas = check_alphas(args.alphas if args.alphas else np.round(np.arange(0, 3.0001, 0.05), 2)
                          .tolist())
    if 0.0 not in alphas:
        alphas = [0.0] + alphas
    schedules = sorted(set(args.schedules))
    if not schedules or min(schedules) <= 0:
        raise ValueError(f"--schedules must be positive multiples of SOLVER.MAX_ITER, got "
                         f"{args.schedules}")
    os.makedirs(args.output, exist_ok=True)
    quiet_logging(args.output)
    jobs = [(s, m, x) for s in args.seeds for x in schedules for m in args.methods]
    cost = [make_cfg(args, m, s, x)[0].SOLVER.MAX_ITER for s, m, x in jobs]
    runs_file = os.path.join(args.output, "runs.jsonl")
    runs = load_runs(runs_file, jobs) if args.resume or args.report_only else []
    if not (args.resume or args.report_only) and os.path.exists(runs_file):
        os.remove(runs_file)
    kept = {(r["seed"], r["method"], r["multiple"]) for r in runs}
    if kept:
        print(f"{len(kept)} of {len(jobs)} runs already in {runs_file}", flush=True)
    if args.report_only:
        kept = set(jobs)  # train nothing
    start, done = time.perf_counter(), 0
    todo = sum(c for j, c in zip(jobs, cost) if j not in kept)
    for i, (seed, method, multiple) in enumerate(jobs):
        if (seed, method, multiple) in kept:
            continue
        elapsed = time.perf_counter() - start
        eta = f", ETA {elapsed / done * (todo - done) / 60:.1f} min" if done else ""
        print(f"[{i + 1}/{len(jobs)}] seed {seed}, {method}, {multiple:g}x ({cost[i]} iters): "
              f"training (elapsed {elapsed / 60:.1f} min{eta})", flush=True)
        run = train_and_evaluate(args, method, seed, multiple, alphas)
        runs.append(run)
        with open(runs_file, "a") as f:
            f.write(json.dumps(run) + "\n")
        done += cost[i]
        ema = run["directions"]["ema"]
        best = next(r for r in ema["test"] if r["alpha"] == ema["alpha_val"])
        print(f"    trained in {run['train_seconds']:.0f} s, evaluated in "
              f"{run['eval_seconds']:.0f} s; test top-1 {ema['test'][0]['top1']:.2f}"
              + (f", with TDE (alpha {ema['alpha_val']} from val) {best['top1']:.2f}"
                 if len(ema["test"]) > 1 else ""), flush=True)
    summary = summarise(runs, args.methods, schedules, args.directions)
    total = time.perf_counter() - start
    cfg = make_cfg(args, args.methods[0], args.seeds[0], 1.0)[0]
    groups = cfg.TEST.CLASSIFICATION
    dataset = args.test.format(ratio=args.ratio, seed="{seed}")
    result = {"dataset": dataset, "ratio": args.ratio, "seeds": args.seeds,
              "methods": args.methods, "schedules": schedules, "alphas": alphas,
              "base_iters": args.iters if args.iters > 0 else cfg.SOLVER.MAX_ITER,
              "many_threshold": groups.MANY_THRESHOLD, "few_threshold": groups.FEW_THRESHOLD,
              "total_seconds": total, "torch_threads": torch.get_num_threads(),
              "summary": summary, "runs": runs}
    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
    plot_alpha(runs, summary, os.path.join(args.output, "accuracy_vs_alpha.png"))
    plot_schedules(result, os.path.join(args.output, "schedules_and_directions.png"))
    report(result)
    print(f"\ntotal {total / 60:.1f} min; wrote {args.output}/results.json, "
          f"accuracy_vs_alpha.png and schedules_and_directions.png")
    return result


if __name__ == "__main__":
    main()
