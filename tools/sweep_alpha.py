#!/usr/bin/env python
"""Score many alphas of TDE (eq. 8) from ONE inference pass, and pick the best one.

    python tools/sweep_alpha.py --config-file configs/lvis_cascade_tde.yaml \
        --alphas 0 0.5 1 1.5 2 3 MODEL.WEIGHTS model_final.pth
    python tools/sweep_alpha.py --config-file configs/CIFAR-LT/cifar10_r100_tde.yaml \
        --dataset cifar10_lt_r100_val --alphas 0 0.25 0.5 1 1.5 2 MODEL.WEIGHTS model_final.pth

Detection: AP, APr, APc, APf (segm and bbox) per alpha, and with ``TEST.AP_FIXED.ENABLED True``
AP-fixed and its r/c/f parts (``--metric segm/AP-fixed`` picks by it); classification: many /
medium / few / overall top-1 per alpha. Every alpha's numbers equal those of
``tools/train_net.py --eval-only MODEL.TDE.TEST_TDE True MODEL.TDE.ALPHA <alpha>``. Writes
``alpha_sweep.{csv,json,png}`` to ``<--output>/<dataset>`` (default:
``<OUTPUT_DIR>/sweep_alpha_<weights name>``) and prints the best alpha as a ready-to-paste
override. The sweep itself: ``tde_det.evaluation``.
"""
import logging
import os
import time
from typing import Dict

import detectron2.utils.comm as comm

import tde_det  # noqa: F401  (registration)
from tde_det.engine import (TDECheckpointer, Trainer, classification_task, parse_tool_args, setup,
                            task_for, tool_argument_parser)
from tde_det.evaluation.alpha_sweep import (AP_FIXED_COLUMNS, CLASSIFICATION_COLUMNS,
                                            DEFAULT_ALPHAS, DETECTION_COLUMNS, alpha_override,
                                            best_alpha,
                                            check_alphas, check_metric, check_sweep_config,
                                            format_table, reported_split_warning,
                                            sweep_classification_dataset, write_sweep_files)
from tde_det.evaluation.detection_alpha_sweep import available_cpus, sweep_detection

logger = logging.getLogger("tde_det.sweep_alpha")


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
        loader = Trainer.build_test_loader(cfg, dataset)
        start = time.perf_counter()
        if classification:
            rows, _ = sweep_classification_dataset(cfg, model, dataset, alphas, loader)
        else:
            workers = args.eval_workers or min(args.alphas_per_pass or len(alphas),
                                               available_cpus())
            rows = sweep_detection(
                model, loader, lambda folder: Trainer.build_evaluator(cfg, dataset, folder),
                alphas, output, workers, args.alphas_per_pass,
                share_masks=not args.per_alpha_masks, save_predictions=args.save_predictions,
                dataset=dataset)
        seconds = time.perf_counter() - start
        if not comm.is_main_process():
            continue
        columns = CLASSIFICATION_COLUMNS if classification else DETECTION_COLUMNS + [
            c for c in AP_FIXED_COLUMNS if any(c in r for r in rows)]
        best = best_alpha(rows, metric)
        write_sweep_files(rows, columns, output, f"{dataset}: one pass, {len(alphas)} alphas",
                          best, metric)
        print(f"\nalpha sweep on {dataset} ({len(alphas)} alphas, {seconds:.1f} s):")
        print(format_table(rows, columns))
        print(f"best alpha on {dataset} by {metric}: {best['alpha']:g} ({best[metric]:.2f}); "
              f"to use it: {alpha_override(cfg, best['alpha'])}")
        print(f"wrote {output}/alpha_sweep.{{csv,json,png}}")
        warning = reported_split_warning(cfg, dataset)
        if warning:
            logger.warning(warning)
        report[dataset] = {"rows": rows, "best": best, "seconds": seconds}
    return report


def build_parser():
    parser = tool_argument_parser(__doc__, "sweep_alpha",
                                  output_note="; one subfolder per split")
    parser.add_argument("--alphas", type=float, nargs="+", default=DEFAULT_ALPHAS,
                        help="alphas of eq. 8 to score, each with TDE on (as --eval-only "
                        "MODEL.TDE.TEST_TDE True MODEL.TDE.ALPHA <alpha>)")
    parser.add_argument("--dataset", default="", help="registered split (default: DATASETS.TEST)")
    parser.add_argument("--metric", default="", help="column that picks the best alpha "
                        "(default: segm/AP or bbox/AP for detection, top1 for classification; "
                        "segm/AP-fixed etc. with TEST.AP_FIXED.ENABLED True)")
    parser.add_argument("--eval-workers", type=int, default=0,
                        help="detection: evaluate this many alphas at once, in forked processes "
                        "(0: one per alpha, at most one per CPU; 1: one after another); each "
                        "holds its own LVIS evaluation: use fewer when memory is short")
    parser.add_argument("--alphas-per-pass", type=int, default=0,
                        help="detection: score at most this many alphas per inference pass "
                        "(0: all in one pass); each alpha holds its predictions until its pass "
                        "is evaluated, so fewer per pass bound memory, at more inference time")
    parser.add_argument("--per-alpha-masks", action="store_true",
                        help="detection: masks from each alpha's own detections, in "
                        "--eval-only's batches (default: once per distinct box / (box, class) "
                        "over all alphas, faster)")
    parser.add_argument("--save-predictions", action="store_true",
                        help="detection: also write each alpha's predictions as --eval-only "
                        "does, to <output>/<dataset>/alpha_<alpha> (several GB per alpha on "
                        "LVIS v1 val)")
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parse_tool_args(parser, argv)
    for option, value in (("--alphas-per-pass", args.alphas_per_pass),
                          ("--eval-workers", args.eval_workers)):
        if value < 0:  # else refused only after the inference pass
            parser.error(f"{option} must be >= 0 (0: the default), got {value}")
    return args


if __name__ == "__main__":
    main(parse_args())
