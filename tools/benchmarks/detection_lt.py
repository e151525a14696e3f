#!/usr/bin/env python
"""Does TDE do for a long-tailed detector what the paper claims? (docs/detection_evidence.md)

For every seed: generates Fashion-MNIST-LT-Det with that seed (tde_det.data.detection
.fashion_mnist_lt: which class is rare is drawn with the seed), trains with tde-det's Trainer
the linear baseline and the de-confound Cascade Mask R-CNN
(``configs/FashionMNIST-LT-Det/cascade_R_18_{baseline,deconfound}.yaml``), then reports on the
test canvases: the baseline; de-confound with alpha = 0 (eq. 7 alone); TDE at the alpha chosen
on the validation canvases (``--metric``, from one inference pass: ``sweep_detection``); TDE
without background exemption (``MODEL.TDE.BACKGROUND_EXEMPTED False``, same weights) at that
alpha. bbox and segm ``--metrics`` (AP, APr, APc, APf and, with ``--ap-fixed K``, the same
four as AP-fixed with K detections per class: docs/lvis_metrics.md) as mean +- std over seeds,
per-seed deltas; writes ``results.json`` and ``ap_vs_alpha.png`` (test AP per group vs alpha,
with and without background exemption) to --output; the LVIS API's tables to its lvis_eval.txt.

    python tools/benchmarks/detection_lt.py --seeds 0 1 2 --output output/detection_evidence
"""
import argparse
import contextlib
import json
import os
import sys
import time
from typing import Dict, List

import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.evaluation import inference_on_dataset

import tde_det  # noqa: F401  (registration)
from tde_det import add_tde_config
from tde_det.data.detection.fashion_mnist_lt import write_fashion_mnist_lt_det
from tde_det.engine import Trainer
from tde_det.engine.setup import quiet_logging
from tde_det.evaluation.alpha_sweep import best_alpha, check_alphas
from tde_det.evaluation.ap_fixed import AP_FIXED_METRICS
from tde_det.evaluation.ap_fixed_inference import APFixedInference
from tde_det.evaluation.detection_alpha_sweep import available_cpus, sweep_detection

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "configs", "FashionMNIST-LT-Det")
TASKS = ("bbox", "segm")
# Metrics of each task's table (and of the plot); --ap-fixed adds AP_FIXED_METRICS' columns.
METRICS = ("AP", "APr", "APc", "APf")
ROWS = ("baseline", "de-confound", "de-confound-TDE", "TDE w/o bg exemption")
DELTAS = (("de-confound - baseline", "de-confound", "baseline"),
          ("TDE - de-confound", "de-confound-TDE", "de-confound"),
          ("w/o bg exemption - TDE", "TDE w/o bg exemption", "de-confound-TDE"))
DATA_OPTIONS = ("head_images", "ratio", "eval_images", "rare_max", "common_max")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--alphas", type=float, nargs="+", default=None,
                   help="alpha grid (default: 0, 0.25, ..., 3)")
    p.add_argument("--metric", default="segm/AP", help="val column that chooses alpha")
    p.add_argument("--metrics", nargs="+", default=None,
                   help="columns of each task reported (default: AP, APr, APc, APf and their "
                        "AP-fixed with --ap-fixed)")
    p.add_argument("--ap-fixed", type=int, default=300, metavar="K",
                   help="also report AP-fixed with K detections per class (LVIS: 10000 for "
                        "19,809 images; 0: off)")
    p.add_argument("--iters", type=int, default=0, help="override SOLVER.MAX_ITER (0: config)")
    p.add_argument("--root", default="", help="folder of the Fashion-MNIST IDX files "
                   "(default: $DETECTRON2_DATASETS/fashion-mnist, else Debian's)")
    p.add_argument("--output", default="output/detection_evidence")
    p.add_argument("--eval-workers", type=int, default=0,
                   help="alphas evaluated at once (0: one per CPU)")
    for key in DATA_OPTIONS:
        p.add_argument("--" + key.replace("_", "-"), type=float if key == "ratio" else int,
                       default=None, help="dataset option (default: the generator's)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p.parse_args(argv)


def make_data(args, seed: int) -> Dict:
    options = {k: getattr(args, k) for k in DATA_OPTIONS if getattr(args, k) is not None}
    return write_fashion_mnist_lt_det(os.path.join(args.output, f"data_s{seed}"), seed,
                                      args.root or None, **options)


def make_cfg(args, kind: str, seed: int, data: Dict, background_exempted: bool = True):
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(os.path.join(CONFIG_DIR, f"cascade_R_18_{kind}.yaml"))
    names = [f"fashion_mnist_lt_det_s{seed}_{s}" for s in ("train", "val", "test")]
    cfg.DATASETS.LVIS_CUSTOM.NAMES = tuple(names)
    cfg.DATASETS.LVIS_CUSTOM.JSON_FILES = tuple(data[s] for s in ("train", "val", "test"))
    cfg.DATASETS.LVIS_CUSTOM.IMAGE_ROOTS = (data["image_root"],) * 3
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (names[0],), ()  # evaluated here
    cfg.SEED = seed
    cfg.OUTPUT_DIR = os.path.join(args.output, f"s{seed}_{kind}")
    if args.iters > 0:
        cfg.SOLVER.MAX_ITER = cfg.SOLVER.CHECKPOINT_PERIOD = args.iters
        cfg.SOLVER.WARMUP_ITERS = min(cfg.SOLVER.WARMUP_ITERS, max(args.iters // 4, 1))
        cfg.SOLVER.STEPS = tuple(s for s in cfg.SOLVER.STEPS if s < args.iters)
    if args.ap_fixed:
        cfg.TEST.AP_FIXED.ENABLED, cfg.TEST.AP_FIXED.DETS_PER_CLASS = True, args.ap_fixed
    cfg.merge_from_list(args.opts)
    cfg.MODEL.TDE.BACKGROUND_EXEMPTED = background_exempted
    cfg.freeze()
    return cfg, names


def _flat(results: Dict) -> Dict[str, float]:
    return {f"{task}/{k}": float(v) for task, metrics in results.items()
            for k, v in metrics.items()}


def train(cfg, seed: int):
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    torch.manual_seed(seed)
    np.random.seed(seed)
    t0, cpu0 = time.perf_counter(), time.process_time()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return trainer.model, {"wall": time.perf_counter() - t0, "cpu": time.process_time() - cpu0}


def sweep(cfg, model, dataset: str, alphas: List[float], workers: int) -> List[Dict]:
    model.eval()
    return sweep_detection(model, Trainer.build_test_loader(cfg, dataset),
                           lambda folder: Trainer.build_evaluator(cfg, dataset, folder),
                           alphas, eval_workers=workers, dataset=dataset)


@contextlib.contextmanager
def lvis_printout(output: str):
    """The LVIS API prints its tables (many per alpha) to stdout: they go to
    <output>/lvis_eval.txt (line-buffered, as forked evaluation workers share the file)."""
    with open(os.path.join(output, "lvis_eval.txt"), "a", buffering=1) as f, \
            contextlib.redirect_stdout(f):
        yield


def run_seed(args, seed: int, alphas: List[float], progress) -> Dict:
    """Data, both trainings and every evaluation of one seed."""
    data = make_data(args, seed)
    workers = args.eval_workers or min(available_cpus(), len(alphas))
    cfg, names = make_cfg(args, "baseline", seed, data)
    progress(f"seed {seed}, baseline: training")
    model, base_s = train(cfg, seed)
    model.eval()
    t0 = time.perf_counter()
    with lvis_printout(args.output):
        # with AP-fixed, the wrapper gives the evaluator each image's candidates too
        runner = APFixedInference(model) if cfg.TEST.AP_FIXED.ENABLED else model
        baseline = _flat(inference_on_dataset(runner, Trainer.build_test_loader(cfg, names[2]),
                                              Trainer.build_evaluator(cfg, names[2], "")))
    eval_s = time.perf_counter() - t0
    progress(f"seed {seed}, de-confound: training")
    cfg, _ = make_cfg(args, "deconfound", seed, data)
    model, deconf_s = train(cfg, seed)
    print(f"    seed {seed}: {len(alphas)} alphas on val, then on test with and without "
          f"background exemption", flush=True)
    t0 = time.perf_counter()
    no_bg_cfg, _ = make_cfg(args, "deconfound", seed, data, background_exempted=False)
    no_bg = Trainer.build_model(no_bg_cfg)
    no_bg.load_state_dict(model.state_dict())
    with lvis_printout(args.output):
        val = sweep(cfg, model, names[1], alphas, workers)
        chosen = best_alpha(val, args.metric)["alpha"]
        test = sweep(cfg, model, names[2], alphas, workers)
        test_no_bg = sweep(no_bg_cfg, no_bg, names[2], alphas, workers)
    eval_s += time.perf_counter() - t0
    return {"seed": seed, "class_order": data["class_order"], "categories": data["categories"],
            "dropped_items": data["dropped"],  # wall and CPU (all threads) seconds
            "train_seconds": {"baseline": base_s, "deconfound": deconf_s},
            "eval_seconds": eval_s, "max_iter": cfg.SOLVER.MAX_ITER, "alpha_val": chosen,
            "baseline": baseline, "val": val, "test": test, "test_no_bg": test_no_bg}


def _at(rows: List[Dict], alpha: float) -> Dict:
    return next(r for r in rows if r["alpha"] == alpha)


def row_values(run: Dict) -> Dict[str, Dict]:
    return {"baseline": run["baseline"], "de-confound": _at(run["test"], 0.0),
            "de-confound-TDE": _at(run["test"], run["alpha_val"]),
            "TDE w/o bg exemption": _at(run["test_no_bg"], run["alpha_val"])}


def summarise(runs: List[Dict], metrics: List[str]) -> Dict:
    """Per table row and per delta: every seed's test values and their mean / std."""
    columns = [f"{t}/{m}" for t in TASKS for m in metrics]
    missing = sorted({c for r in runs for v in row_values(r).values() for c in columns
                      if c not in v})
    if missing:
        raise ValueError(f"--metrics: no column {missing} in the results; available: "
                         f"{sorted(runs[0]['baseline'])}")
    per_seed = [row_values(r) for r in runs]
    table = {}
    for label in ROWS:
        table[label] = _stats([v[label] for v in per_seed], columns)
    for label, a, b in DELTAS:
        table[label] = _stats([{c: v[a][c] - v[b][c] for c in columns} for v in per_seed],
                              columns)
    table["alpha"] = _stats([{"alpha": r["alpha_val"]} for r in runs], ["alpha"])
    return table


def _stats(values: List[Dict], columns: List[str]) -> Dict:
    out = {"seeds": [{c: v[c] for c in columns} for v in values]}
    for c in columns:
        x = np.array([v[c] for v in values], dtype=np.float64)
        out[c] = {"mean": float(x.mean()), "std": float(x.std(ddof=0))}
    return out


def print_table(table: Dict, metrics: List[str], file=sys.stdout) -> None:
    for task in TASKS:
        print(f"\n{task} (test, mean ± std over seeds; deltas per seed in brackets)", file=file)
        print("| " + " | ".join(["", *metrics]) + " |", file=file)
        print("|" + "|".join(["---"] * (len(metrics) + 1)) + "|", file=file)
        for label in ROWS + tuple(d[0] for d in DELTAS):
            cells = []
            for m in metrics:
                c = table[label][f"{task}/{m}"]
                seeds = "" if label in ROWS else " [" + ", ".join(
                    f"{s[f'{task}/{m}']:+.1f}" for s in table[label]["seeds"]) + "]"
                cells.append(f"{c['mean']:.2f} ± {c['std']:.2f}{seeds}")
            print(f"| {label} | " + " | ".join(cells) + " |", file=file)


def plot(runs: List[Dict], metrics: List[str], path: str) -> None:
    """Test AP per group vs alpha (mean over seeds), solid with background exemption, dashed
    without; dotted: the alphas chosen on val; grey: the baseline's AP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TASKS), figsize=(4.6 * len(TASKS), 3.6), squeeze=False)
    alphas = [r["alpha"] for r in runs[0]["test"]]
    for ax, task in zip(axes[0], TASKS):
        for i, m in enumerate(metrics):
            key, colour = f"{task}/{m}", f"C{i}"
            for rows, style in (("test", "-"), ("test_no_bg", "--")):
                ys = np.array([[row[key] for row in r[rows]] for r in runs]).mean(0)
                ax.plot(alphas, ys, style, color=colour, label=m if style == "-" else None)
        ax.axhline(np.mean([r["baseline"][f"{task}/AP"] for r in runs]), color="grey", lw=0.8)
        for r in runs:
            ax.axvline(r["alpha_val"], color="grey", lw=0.6, ls=":")
        ax.set_title(f"{task} (test, mean of {len(runs)} seeds; dashed: w/o bg exemption)",
                     fontsize=8)
        ax.set_xlabel("alpha (dotted: chosen on val; grey line: baseline AP)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("AP")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> Dict:
    args = parse_args(argv)
    if args.ap_fixed < 0:
        raise SystemExit(f"--ap-fixed: K must be >= 0 (0: off), got {args.ap_fixed}")
    if args.metrics is None:
        args.metrics = list(METRICS) + (list(AP_FIXED_METRICS.values()) if args.ap_fixed else [])
    alphas = check_alphas(args.alphas if args.alphas else np.round(np.arange(0, 3.0001, 0.25), 2)
                          .tolist())
    if 0.0 not in alphas:
        alphas = [0.0] + alphas
    os.makedirs(args.output, exist_ok=True)
    quiet_logging(args.output)
    start, steps = time.perf_counter(), 2 * len(args.seeds)
    done = [0]

    def progress(what: str) -> None:
        elapsed = time.perf_counter() - start
        eta = f", ETA {elapsed / done[0] * (steps - done[0]) / 60:.1f} min" if done[0] else ""
        done[0] += 1
        print(f"[{done[0]}/{steps}] {what} (elapsed {elapsed / 60:.1f} min{eta})", flush=True)

    runs = []
    for seed in args.seeds:
        run = run_seed(args, seed, alphas, progress)
        runs.append(run)
        v = row_values(run)
        print(f"    seed {seed}: trained in {run['train_seconds']['baseline']['wall']:.0f} + "
              f"{run['train_seconds']['deconfound']['wall']:.0f} s, evaluated in "
              f"{run['eval_seconds']:.0f} s; test segm AP baseline "
              f"{v['baseline']['segm/AP']:.2f}, de-confound {v['de-confound']['segm/AP']:.2f}, "
              f"TDE (alpha {run['alpha_val']:g} from val) {v['de-confound-TDE']['segm/AP']:.2f}",
              flush=True)
    table = summarise(runs, args.metrics)
    total = time.perf_counter() - start
    result = {"seeds": args.seeds, "alphas": alphas, "metric": args.metric,
              "metrics": args.metrics, "ap_fixed_k": args.ap_fixed, "total_seconds": total,
              "torch_threads": torch.get_num_threads(), "table": table, "runs": runs}
    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
    plot(runs, [m for m in args.metrics if m in METRICS],
         os.path.join(args.output, "ap_vs_alpha.png"))
    groups = {g: sum(c["frequency"] == g for c in runs[0]["categories"]) for g in "rcf"}
    print(f"\nFashion-MNIST-LT-Det, seeds {args.seeds}, alpha chosen on val by {args.metric} "
          f"(seed {args.seeds[0]}: {groups['r']} rare / {groups['c']} common / {groups['f']} "
          f"frequent categories)")
    print_table(table, args.metrics)
    print(f"\nalpha (val): {table['alpha']['alpha']['mean']:.2f} ± "
          f"{table['alpha']['alpha']['std']:.2f}; total {total / 60:.1f} min; wrote "
          f"{args.output}/results.json and {args.output}/ap_vs_alpha.png")
    return result


if __name__ == "__main__":
    main()
