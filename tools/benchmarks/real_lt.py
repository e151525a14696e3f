#!/usr/bin/env python
"""Does TDE do on real images what the paper claims? (docs/evidence.md)

For every seed, trains with tde-det's own Trainer and the configs
``configs/FashionMNIST-LT/r{ratio}_{baseline,cosine,capsule,deconfound}.yaml`` a small CNN on
Fashion-MNIST-LT, then, from ONE inference pass per split, chooses each TDE variant's alpha on the
balanced validation split (a fine grid, default 0..3 by 0.05, best overall top-1) and reports on
the 10,000-image test set many / medium / few / overall top-1 for baseline, cosine, cosine-TDE,
capsule, capsule-TDE, de-confound and de-confound-TDE, as mean +- std over seeds. Writes
``results.json`` and ``accuracy_vs_alpha.png`` (paper Fig. 4: test accuracy per group vs alpha)
to --output.

    python tools/benchmarks/real_lt.py --ratio 100 --seeds 0 1 2 --output output/evidence
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

import tde_det  # noqa: F401  (registration)
from tde_det import add_tde_config
from tde_det.engine import Trainer
from tde_det.engine.setup import quiet_logging
from tde_det.evaluation.alpha_sweep import best_alpha, check_alphas, sweep_classification_dataset
from tde_det.layers import has_tde

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "configs", "FashionMNIST-LT")
CLASSIFIERS = ("baseline", "cosine", "capsule", "deconfound")
ROWS = [("baseline", "baseline", False), ("cosine", "cosine", False),
        ("cosine-TDE", "cosine", True), ("capsule", "capsule", False),
        ("capsule-TDE", "capsule", True), ("de-confound", "deconfound", False),
        ("de-confound-TDE", "deconfound", True)]
METRICS = ("many", "medium", "few", "top1")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ratio", type=int, default=100, choices=(10, 50, 100))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--classifiers", nargs="+", default=list(CLASSIFIERS), choices=CLASSIFIERS)
    p.add_argument("--alphas", type=float, nargs="+", default=None,
                   help="alpha grid (default: 0, 0.05, ..., 3)")
    p.add_argument("--iters", type=int, default=0, help="override SOLVER.MAX_ITER (0: config)")
    p.add_argument("--root", default="", help="folder of the Fashion-MNIST IDX files "
                   "(DATASETS.FASHION_MNIST.ROOT; default: Debian's)")
    p.add_argument("--output", default="output/evidence")
    p.add_argument("--prefix", default="fashion_mnist_lt",
                   help="registered dataset prefix (<prefix>_r<ratio>_s<seed>_{train,val,test})")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p.parse_args(argv)


def make_cfg(args, classifier: str, seed: int):
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(os.path.join(CONFIG_DIR, f"r{args.ratio}_{classifier}.yaml"))
    name = f"{args.prefix}_r{args.ratio}_s{seed}"
    cfg.DATASETS.TRAIN = (f"{name}_train",)
    cfg.DATASETS.TEST = ()  # evaluated here, from one pass per split
    cfg.DATASETS.FASHION_MNIST.ROOT = args.root
    cfg.SEED = seed
    cfg.MODEL.DEVICE = "cpu"
    cfg.OUTPUT_DIR = os.path.join(args.output, f"s{seed}_{classifier}")
    if args.iters > 0:
        cfg.SOLVER.MAX_ITER = args.iters
        cfg.SOLVER.CHECKPOINT_PERIOD = args.iters
        cfg.SOLVER.WARMUP_ITERS = min(cfg.SOLVER.WARMUP_ITERS, max(args.iters // 4, 1))
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg, name


def train_and_sweep(args, classifier: str, seed: int, alphas: List[float]) -> Dict:
    """Train one model, then sweep alpha on val and test from one pass each."""
    cfg, name = make_cfg(args, classifier, seed)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    torch.manual_seed(seed)
    np.random.seed(seed)
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    train_s = time.perf_counter() - t0
    model = trainer.model
    grid = alphas if has_tde(model.classifier.kind) else [0.0]
    val, test = [sweep_classification_dataset(cfg, model, split, grid,
                                              Trainer.build_test_loader(cfg, split))[0]
                 for split in (f"{name}_val", f"{name}_test")]
    chosen = best_alpha(val, "top1")["alpha"]
    return {"classifier": classifier, "seed": seed, "train_seconds": train_s,
            "max_iter": cfg.SOLVER.MAX_ITER, "alpha_val": chosen,
            "val": [{k: v for k, v in r.items() if k != "per_class"} for r in val],
            "test": [{k: v for k, v in r.items() if k != "per_class"} for r in test]}


def summarise(runs: List[Dict]) -> Dict:
    """Per table row: the test metrics of every seed and their mean / std."""
    table = {}
    for label, classifier, tde in ROWS:
        per_seed = []
        for run in (r for r in runs if r["classifier"] == classifier):
            alpha = run["alpha_val"] if tde else 0.0
            row = next(r for r in run["test"] if r["alpha"] == alpha)
            per_seed.append(dict({m: row[m] for m in METRICS}, alpha=alpha, seed=run["seed"]))
        if not per_seed:
            continue
        table[label] = {"seeds": per_seed}
        for m in METRICS + ("alpha",):
            values = np.array([s[m] for s in per_seed], dtype=np.float64)
            table[label][m] = {"mean": float(values.mean()), "std": float(values.std(ddof=0))}
    return table


def print_table(table: Dict, file=sys.stdout) -> None:
    header = ["", "many", "medium", "few", "overall", "alpha (val)"]
    print("| " + " | ".join(header) + " |", file=file)
    print("|" + "|".join(["---"] * len(header)) + "|", file=file)
    for label, row in table.items():
        cells = [f"{row[m]['mean']:.2f} ± {row[m]['std']:.2f}" for m in METRICS]
        alpha = "" if not label.endswith("TDE") else \
            f"{row['alpha']['mean']:.2f} ± {row['alpha']['std']:.2f}"
        print(f"| {label} | " + " | ".join(cells) + f" | {alpha} |", file=file)


def plot(runs: List[Dict], path: str) -> None:
    """Fig. 4 style: mean test accuracy (many / medium / few / overall) vs alpha per TDE head."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [c for c in ("deconfound", "cosine", "capsule") if any(r["classifier"] == c
                                                                  for r in runs)]
    if not kinds:
        return
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.4), squeeze=False,
                             sharey=True)
    for ax, kind in zip(axes[0], kinds):
        mine = [r for r in runs if r["classifier"] == kind]
        alphas = [row["alpha"] for row in mine[0]["test"]]
        for m, label in zip(METRICS, ("many", "medium", "few", "overall")):
            ys = np.array([[row[m] for row in r["test"]] for r in mine])
            ax.plot(alphas, ys.mean(0), label=label)
        for r in mine:
            ax.axvline(r["alpha_val"], color="grey", lw=0.6, ls=":")
        ax.set_title(f"{kind}-TDE (test, mean of {len(mine)} seeds)", fontsize=9)
        ax.set_xlabel("alpha (dotted: chosen on val)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("top-1 accuracy (%)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> Dict:
    args = parse_args(argv)
    alphas = check_alphas(args.alphas if args.alphas else np.round(np.arange(0, 3.0001, 0.05), 2)
                          .tolist())
    if 0.0 not in alphas:
        alphas = [0.0] + alphas
    os.makedirs(args.output, exist_ok=True)
    quiet_logging(args.output)
    jobs = [(s, c) for s in args.seeds for c in args.classifiers]
    runs, start = [], time.perf_counter()
    for i, (seed, classifier) in enumerate(jobs):
        elapsed = time.perf_counter() - start
        eta = f", ETA {elapsed / i * (len(jobs) - i) / 60:.1f} min" if i else ""
        print(f"[{i + 1}/{len(jobs)}] seed {seed}, {classifier}: training "
              f"(elapsed {elapsed / 60:.1f} min{eta})", flush=True)
        run = train_and_sweep(args, classifier, seed, alphas)
        runs.append(run)
        best = next(r for r in run["test"] if r["alpha"] == run["alpha_val"])
        top1 = run["test"][0]["top1"]
        print(f"    trained in {run['train_seconds']:.0f} s; test top-1 {top1:.2f}"
              + (f", with TDE (alpha {run['alpha_val']} from val) {best['top1']:.2f}"
                 if classifier != "baseline" else ""), flush=True)
    table = summarise(runs)
    total = time.perf_counter() - start
    result = {"ratio": args.ratio, "seeds": args.seeds, "alphas": alphas,
              "total_seconds": total, "torch_threads": torch.get_num_threads(),
              "table": table, "runs": runs}
    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
    plot(runs, os.path.join(args.output, "accuracy_vs_alpha.png"))
    groups = make_cfg(args, "baseline", args.seeds[0])[0].TEST.CLASSIFICATION
    print(f"\nFashion-MNIST-LT, ratio {args.ratio}, test top-1 (%), mean ± std over seeds "
          f"{args.seeds}; groups by training count (many > {groups.MANY_THRESHOLD}, "
          f"few < {groups.FEW_THRESHOLD})")
    print_table(table)
    print(f"\ntotal {total / 60:.1f} min; wrote {args.output}/results.json and "
          f"{args.output}/accuracy_vs_alpha.png")
    return result


if __name__ == "__main__":
    main()
