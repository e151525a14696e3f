#!/usr/bin/env python
"""Score many alphas of TDE (eq. 8) from ONE inference pass, and pick the best one.

    python tools/sweep_alpha.py --config-file configs/lvis_cascade_tde.yaml \
        --alphas 0 0.5 1 1.5 2 3 MODEL.WEIGHTS model_final.pth
    python tools/sweep_alpha.py --config-file configs/CIFAR-LT/cifar10_r100_tde.yaml \
        --dataset cifar10_lt_r100_val --alphas 0 0.25 0.5 1 1.5 2 MODEL.WEIGHTS model_final.pth

Detection: AP, APr, APc, APf (segm and bbox) per alpha; classification: many / medium / few /
overall top-1 per alpha. Sweeping alpha means evaluating with TDE: every alpha's numbers equal
those of ``tools/train_net.py --eval-only MODEL.TDE.TEST_TDE True MODEL.TDE.ALPHA <alpha>``, also
for a config with ``MODEL.TDE.TEST_TDE False`` (then the printed override includes
``MODEL.TDE.TEST_TDE True``); a linear classifier (no TDE) is refused. Writes
``alpha_sweep.csv``, ``alpha_sweep.json`` and ``alpha_sweep.png`` (metric vs alpha, like the
paper's Fig. 4) to ``<--output>/<dataset>`` (default: ``<OUTPUT_DIR>/sweep_alpha_<weights
name>``, never a training run's folder: ``tde_det.engine.tool_output_dir``), and prints the
best alpha on the evaluated split as a ready-to-paste override. Detection: ``--eval-workers N`` runs N of the per-alpha LVIS evaluations at once in
forked processes (default: one per alpha, at most one per CPU; 1: one after another);
``--alphas-per-pass K`` scores at most K alphas per inference pass, to bound memory.
"""
import csv
import json
import logging
import os
import time
from typing import Dict, List

import detectron2.utils.comm as comm
from detectron2.data import MetadataCatalog

import tde_det  # noqa: F401  (registration)
from tde_det.engine import (TDECheckpointer, Trainer, parse_tool_args, setup, task_for,
                            tool_argument_parser)
from tde_det.engine import classification_task
from tde_det.evaluation.alpha_sweep import (
    alpha_override,
    best_alpha,
    check_alphas,
    check_sweep_config,
    reported_split_warning,
    sweep_classification_dataset,
)
from tde_det.evaluation.lvis_records import LVIS_METRICS
from tde_det.evaluation.progress import logged_progress
from tde_det.evaluation.detection_alpha_sweep import (
    DetectionAlphaSweep,
    EvaluatorsSharingGroundTruth,
    available_cpus,
)

logger = logging.getLogger("tde_det.sweep_alpha")
DETECTION_COLUMNS = [f"{t}/{m}" for t in ("segm", "bbox") for m in ("AP", "APr", "APc", "APf")]
CLASSIFICATION_COLUMNS = ["many", "medium", "few", "top1"]


def check_alphas_per_pass(alphas_per_pass: int) -> None:
    if alphas_per_pass < 0:
        raise ValueError(f"--alphas-per-pass must be >= 0 (0: all alphas in one pass), got "
                         f"{alphas_per_pass}")


COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # and "AP-<class name>"


def check_metric(cfg, datasets: List[str], metric: str, classification: bool) -> None:
    """Refuse, before any inference, a ``--metric`` that no row of the sweep would have (the
    best alpha is picked after the whole pass)."""
    if classification:
        k = min(cfg.TEST.CLASSIFICATION.TOPK, cfg.MODEL.IMAGE_CLASSIFIER.NUM_CLASSES)
        known = ["top1", f"top{k}", "many", "medium", "few"]
        if metric not in known:
            raise ValueError(f"--metric {metric!r} is not a column of a classifier's sweep; "
                             f"use one of {sorted(set(known))}")
        return
    tasks = ("segm", "bbox") if cfg.MODEL.MASK_ON else ("bbox",)
    task, _, name = metric.partition("/")
    if task not in tasks:
        raise ValueError(f"--metric {metric!r} must be <task>/<metric> with task one of {tasks} "
                         f"(MODEL.MASK_ON {cfg.MODEL.MASK_ON}), e.g. {tasks[0]}/AP")
    for dataset in datasets:
        kind = MetadataCatalog.get(dataset).get("evaluator_type", None)
        known = LVIS_METRICS if kind == "lvis" else COCO_METRICS if kind == "coco" else None
        if known is not None and name not in known and not (kind == "coco"
                                                            and name.startswith("AP-")):
            raise ValueError(f"--metric {metric!r}: {name!r} is not a {kind.upper()} metric of "
                             f"{dataset!r}; use one of {list(known)}"
                             + (" or AP-<class name>" if kind == "coco" else ""))


def sweep_detection(cfg, model, dataset: str, alphas: List[float], output: str,
                    eval_workers: int = 1, alphas_per_pass: int = 0,
                    share_masks: bool = True, save_predictions: bool = False) -> List[Dict]:
    """One row per alpha. The network runs once per pass over ``dataset``; a pass scores up to
    ``alphas_per_pass`` alphas (0: all in one pass), whose evaluators hold their predictions
    until that pass is evaluated: fewer alphas per pass, less memory, more passes.
    ``share_masks``: see :class:`DetectionAlphaSweep`. ``save_predictions``: each alpha's
    evaluator writes its files (``instances_predictions.pth``, ``lvis_instances_results.json``,
    as ``--eval-only`` does) to ``output/alpha_<alpha>``; otherwise none (an evaluator given
    the output folder "" writes nothing)."""
    check_alphas_per_pass(alphas_per_pass)
    alphas = check_alphas(alphas)  # each alpha once, also across passes
    per_pass = alphas_per_pass or len(alphas)
    passes = [alphas[i:i + per_pass] for i in range(0, len(alphas), per_pass)]
    # one parse of the dataset's json for all alphas and passes (LVIS datasets)
    make_evaluator = EvaluatorsSharingGroundTruth(
        lambda folder: Trainer.build_evaluator(cfg, dataset, folder),
        lambda a: os.path.join(output, f"alpha_{a:g}") if save_predictions else "")
    rows = []
    for n, chunk in enumerate(passes, 1):
        if len(passes) > 1:
            logger.info(f"pass {n} of {len(passes)} over {dataset}: alphas "
                        f"{', '.join(f'{a:g}' for a in chunk)}")
        sweep = DetectionAlphaSweep(model, chunk, make_evaluator, share_masks=share_masks)
        label = f"alpha sweep on {dataset}" + (f", pass {n} of {len(passes)}"
                                               if len(passes) > 1 else "")
        for batch in logged_progress(Trainer.build_test_loader(cfg, dataset), label):
            sweep.process(batch)
        if share_masks:
            logger.info(f"{sweep.detections} detections over {len(chunk)} alphas, "
                        f"{sweep.distinct} distinct (box, class) pairs, {sweep.mask_rows} "
                        f"distinct boxes: masks were pasted for the pairs, the mask head ran "
                        f"on the boxes")
        for alpha, results in sweep.evaluate(eval_workers).items():
            row = {"alpha": alpha}
            for task, metrics in (results or {}).items():
                row.update({f"{task}/{k}": float(v) for k, v in metrics.items()})
            rows.append(row)
        del sweep  # this pass's predictions, before the next pass makes its own
    return rows


def plot_sweep(rows: List[Dict], columns: List[str], title: str, best: Dict, metric: str):
    """Metric vs alpha (as the paper's Fig. 4), in alpha order, the chosen alpha marked on the
    ``metric`` curve and by a vertical line; the legend to the right of the axes, off the
    curves. Returns the matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    rows = sorted(rows, key=lambda r: r["alpha"])
    alphas = [r["alpha"] for r in rows]
    names = list(dict.fromkeys(c.rpartition("/")[2] for c in columns))
    for col in columns:  # one colour per metric, a dashed line for bbox beside segm
        if all(col in r for r in rows):
            ax.plot(alphas, [r[col] for r in rows], marker="o", ms=3, label=col,
                    color=f"C{names.index(col.rpartition('/')[2])}",
                    ls="--" if col.startswith("bbox/") and len(names) < len(columns) else "-",
                    lw=2 if col == metric else 1)
    ax.axvline(best["alpha"], color="0.4", ls="--", lw=1)
    ax.plot([best["alpha"]], [best[metric]], marker="*", ms=13, color="k", ls="none",
            label=f"chosen: alpha {best['alpha']:g}\n({metric} {best[metric]:.2f})")
    ax.set_xlabel("alpha (eq. 8)")
    ax.set_ylabel("%")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def write_outputs(rows: List[Dict], columns: List[str], output: str, title: str,
                  best: Dict, metric: str) -> None:
    os.makedirs(output, exist_ok=True)
    keys = ["alpha"] + sorted({k for r in rows for k in r if k not in ("alpha", "per_class")})
    with open(os.path.join(output, "alpha_sweep.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(output, "alpha_sweep.json"), "w") as f:
        json.dump(rows, f, indent=1)
    fig = plot_sweep(rows, columns, title, best, metric)
    fig.savefig(os.path.join(output, "alpha_sweep.png"), dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)


def print_table(rows: List[Dict], columns: List[str]) -> None:
    present = [c for c in columns if any(c in r for r in rows)]
    lines = ["| alpha | " + " | ".join(present) + " |", "|---" * (len(present) + 1) + "|"]
    for r in rows:
        lines.append(f"| {r['alpha']:g} | " + " | ".join(
            f"{r[c]:.2f}" if c in r else "" for c in present) + " |")
    print("\n".join(lines))


def main(args) -> Dict:
    cfg = setup(args, tool="sweep_alpha")
    alphas = check_alphas(args.alphas)
    check_sweep_config(cfg)
    if cfg.TEST.AUG.ENABLED:
        logger.warning("TEST.AUG.ENABLED is set: the sweep evaluates every alpha without "
                       "test-time augmentation (as --eval-only's plain results, not its _TTA "
                       "ones)")
    classification = task_for(cfg) is classification_task
    datasets = [args.dataset] if args.dataset else list(cfg.DATASETS.TEST)
    if not datasets:
        raise ValueError("no dataset to sweep on: give --dataset or DATASETS.TEST")
    metric = args.metric or ("top1" if classification else "segm/AP" if cfg.MODEL.MASK_ON
                             else "bbox/AP")
    # also registers the config's own datasets
    Trainer.check_datasets(cfg, training=False, test=[args.dataset] if args.dataset else None)
    check_metric(cfg, datasets, metric, classification)
    model = Trainer.build_model(cfg)
    TDECheckpointer(model, save_dir=cfg.OUTPUT_DIR).load(cfg.MODEL.WEIGHTS)
    model.eval()
    report = {}
    for dataset in datasets:
        output = os.path.join(cfg.OUTPUT_DIR, dataset)
        start = time.perf_counter()
        if classification:
            rows, _ = sweep_classification_dataset(cfg, model, dataset, alphas)
            columns = CLASSIFICATION_COLUMNS
        else:
            per_pass = args.alphas_per_pass or len(alphas)
            workers = args.eval_workers or min(per_pass, available_cpus())
            rows = sweep_detection(cfg, model, dataset, alphas, output, workers,
                                   args.alphas_per_pass, share_masks=not args.per_alpha_masks,
                                   save_predictions=args.save_predictions)
            columns = DETECTION_COLUMNS
        seconds = time.perf_counter() - start
        if not comm.is_main_process():
            continue
        best = best_alpha(rows, metric)
        write_outputs(rows, columns, output, f"{dataset}: one pass, {len(alphas)} alphas", best,
                      metric)
        print(f"\nalpha sweep on {dataset} ({len(alphas)} alphas, {seconds:.1f} s):")
        print_table(rows, columns)
        print(f"best alpha on {dataset} by {metric}: {best['alpha']:g} ({best[metric]:.2f}); "
              f"to use it: {alpha_override(cfg, best['alpha'])}")
        print(f"wrote {output}/alpha_sweep.{{csv,json,png}}")
        warning = reported_split_warning(cfg, dataset)
        if warning:
            logger.warning(warning)
        report[dataset] = {"rows": rows, "best": best, "seconds": seconds}
    return report


DEFAULT_ALPHAS = [0, 0.5, 1, 1.5, 2, 2.5, 3]


def build_parser():
    parser = tool_argument_parser(__doc__, "sweep_alpha",
                                  output_note="; one subfolder per split")
    parser.add_argument("--alphas", type=float, nargs="+", default=DEFAULT_ALPHAS,
                        help="alphas of eq. 8 to score, each with TDE on (as --eval-only "
                        "MODEL.TDE.TEST_TDE True MODEL.TDE.ALPHA <alpha>)")
    parser.add_argument("--dataset", default="", help="registered split (default: DATASETS.TEST)")
    parser.add_argument("--metric", default="", help="column that picks the best alpha "
                        "(default: segm/AP or bbox/AP for detection, top1 for classification)")
    parser.add_argument("--eval-workers", type=int, default=0,
                        help="detection: evaluate this many alphas at once, in forked processes "
                        "(0: one per alpha, at most one per CPU; 1: one after another). Each "
                        "holds its own LVIS evaluation, ground truth included: use fewer when "
                        "memory is short. One process per GPU when launched on several GPUs")
    parser.add_argument("--alphas-per-pass", type=int, default=0,
                        help="detection: score at most this many alphas per inference pass "
                        "(0: all in one pass). Each alpha's evaluator holds all its predictions "
                        "(with masks) until the pass is evaluated, so memory grows with the "
                        "alphas of a pass; more passes cost more inference time")
    parser.add_argument("--per-alpha-masks", action="store_true",
                        help="detection: run the mask head, paste and encode masks on each "
                        "alpha's own detections, in --eval-only's batches (default: once per "
                        "distinct box / (box, class) over all alphas, faster; a convolution "
                        "library may pick another algorithm for another batch size, which can "
                        "change the last bits of a mask logit)")
    parser.add_argument("--save-predictions", action="store_true",
                        help="detection: also write each alpha's predictions as --eval-only "
                        "does (instances_predictions.pth and lvis_instances_results.json in "
                        "<output>/<dataset>/alpha_<alpha>; on LVIS v1 val several GB per alpha, "
                        "and minutes of writing each). Default: only the sweep's table files")
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parse_tool_args(parser, argv)
    try:
        check_alphas_per_pass(args.alphas_per_pass)
    except ValueError as e:
        parser.error(str(e))
    if args.eval_workers < 0:  # else refused only after the inference pass
        parser.error(f"--eval-workers must be >= 0 (0: one per alpha, at most one per CPU), "
                     f"got {args.eval_workers}")
    return args


if __name__ == "__main__":
    main(parse_args())
