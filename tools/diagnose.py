#!/usr/bin/env python
"""Per-class diagnostics of a TDE image classifier, and the head-direction metrics of training.

    python tools/diagnose.py --config-file configs/FashionMNIST-LT/r100_deconfound.yaml \
        --dataset fashion_mnist_lt_r100_s0_test MODEL.WEIGHTS model_final.pth
    python tools/diagnose.py --metrics-json output/TinyLVIS/cascade_R_18_tde/metrics.json

Per class, sorted by training frequency (paper Fig. 1b, supplement Fig. 1): training count,
mean feature norm ||x||, mean cos(x, d_hat) with the head direction, classifier weight norm
||w_i||, and top-1 accuracy (classifiers) or AP (detectors: segm, else bbox) with and without
TDE (MODEL.TDE.ALPHA; no TDE column for MODEL.TDE.CLASSIFIER linear, where TDE does not apply;
a detector's two settings from one inference pass, the alpha sweep's).
Classes are named from the dataset's metadata (``thing_classes``) when it has names. For a TDE
cascade detector the features are the box-head features of the ground-truth boxes of the split,
per cascade stage (the table shows the last stage; the CSV every stage), and the weight norms
those of the last stage's classifier. Writes ``per_class.csv`` and ``per_class.png``. With
--metrics-json, plots every ``tde/...`` (detection: per cascade stage) and ``head_direction_mu``
scalar of a training run's metrics.json vs iteration (``training_metrics.png``).
"""
import csv
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.data import (
    DatasetCatalog,
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
)
from detectron2.data.detection_utils import build_augmentation

import tde_det  # noqa: F401  (registration)
from tde_det.data.classification import shot_groups, train_class_counts
from tde_det.engine import (TDECheckpointer, Trainer, parse_tool_args, setup,
                            tool_argument_parser)
from tde_det.evaluation.alpha_sweep import collect_classification_cache
from tde_det.evaluation.detection_alpha_sweep import (
    DetectionAlphaSweep,
    EvaluatorsSharingGroundTruth,
)
from tde_det.evaluation.progress import logged_progress
from tde_det.layers import has_tde
from tde_det.modeling.roi_heads import TDECascadeROIHeads, TDEFastRCNNOutputLayers
from tde_det.evaluation.diagnostic_plots import plot_per_class
from tde_det.evaluation.diagnostic_plots import plot_training_metrics as plot_training_metrics_to
from tde_det.evaluation.diagnostics import (
    lvis_per_category_ap,
    per_class_accuracy,
    per_class_feature_stats,
    weight_norms,
)


@torch.no_grad()
def collect_features(model, loader):
    feats, labels = [], []
    model.eval()
    for batch in logged_progress(loader, "diagnose: features"):
        feats.append(model.extract_features(model.preprocess_image(batch)).float().cpu())
        labels.append(torch.as_tensor([int(d["label"]) for d in batch]))
    return torch.cat(feats), torch.cat(labels)


def _write(rows: List[Dict], output: str, score: str, score_tde: Optional[str],
           group_key: str) -> None:
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, "per_class.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot_per_class(rows, os.path.join(output, "per_class.png"), score, score_tde, group_key)


def _lvis_detections(cfg, model, dataset: str, tde_alpha: Optional[float]):
    """(ground truth, {tde: LVIS-format detections}) of the split: without TDE, and with TDE at
    ``tde_alpha`` unless it is None. Both from one inference pass (the alpha sweep: alpha 0 is
    TDE off) and one parse of the json; the detections are collected, not evaluated. The
    dataset is LVIS-format, so the evaluators are ``RecordsLVISEvaluator``."""
    loader = Trainer.build_test_loader(cfg, dataset)
    if tde_alpha is None:  # a linear classifier: no TDE term, no sweep
        for m in model.modules():
            if isinstance(m, TDEFastRCNNOutputLayers):
                m.test_tde = False
        evaluators = {False: Trainer.build_evaluator(cfg, dataset, "")}
        evaluators[False].reset()
        for batch in logged_progress(loader, "diagnose: detections"):
            evaluators[False].process(batch, model(batch))
    else:
        sweep = DetectionAlphaSweep(model, sorted({0.0, tde_alpha}), EvaluatorsSharingGroundTruth(
            lambda folder: Trainer.build_evaluator(cfg, dataset, folder)))
        for batch in logged_progress(loader, "diagnose: detections with and without TDE"):
            sweep.process(batch)
        evaluators = {False: sweep.evaluators[0.0], True: sweep.evaluators[tde_alpha]}
    return (evaluators[False].ground_truth,
            {tde: e.dataset_records() for tde, e in evaluators.items()})


def train_images_per_class(train_datasets: Sequence[str], num_classes: int) -> np.ndarray:
    """[C] training images in which each class has an annotation (what LVIS's "image_count"
    counts), over all the detector's training datasets (``DATASETS.TRAIN``)."""
    if not train_datasets:
        raise SystemExit("DATASETS.TRAIN is empty: the classes are ranked by how many training "
                         "images have them, so the config must name its training datasets")
    counts = np.zeros(num_classes, dtype=np.int64)
    for name in train_datasets:
        for d in DatasetCatalog.get(name):
            classes = {a["category_id"] for a in d.get("annotations", [])}
            bad = sorted(c for c in classes if not 0 <= c < num_classes)
            if bad:
                raise SystemExit(f"training dataset {name!r}, image {d.get('file_name')}: "
                                 f"class ids {bad} are not in [0, {num_classes}) "
                                 f"(MODEL.ROI_HEADS.NUM_CLASSES {num_classes})")
            counts[list(classes)] += 1
    return counts


@torch.no_grad()
def diagnose_detector(cfg, dataset: str, output: str) -> List[Dict]:
    """Per-class diagnostics of a TDE cascade detector from the box features of the split's
    ground-truth boxes, and per-category AP with and without TDE."""
    counts = train_images_per_class(cfg.DATASETS.TRAIN, cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    model = Trainer.build_model(cfg)
    TDECheckpointer(model).load(cfg.MODEL.WEIGHTS)
    model.eval()
    heads = model.roi_heads
    if not isinstance(heads, TDECascadeROIHeads):
        raise SystemExit("detector diagnostics need MODEL.ROI_HEADS.NAME TDECascadeROIHeads")
    meta = MetadataCatalog.get(dataset)
    if getattr(meta, "evaluator_type", None) != "lvis":
        raise SystemExit(f"detector diagnostics need an LVIS-format dataset, not {dataset!r}")
    # Test-time resizing, but keep the annotations (Detectron2's test mapper drops them).
    mapper = DatasetMapper(is_train=True, augmentations=build_augmentation(cfg, False),
                           image_format=cfg.INPUT.FORMAT)
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    stages = heads.num_cascade_stages
    feats = [[] for _ in range(stages)]
    labels = []
    loader = build_detection_test_loader(DatasetCatalog.get(dataset), mapper=mapper)
    for batch in logged_progress(loader, "diagnose: ground-truth box features"):
        gt = batch[0]["instances"].to(model.device)
        if len(gt) == 0:
            continue
        images = model.preprocess_image(batch)
        features = model.backbone(images.tensor)
        pooled = heads.box_pooler([features[f] for f in heads.box_in_features], [gt.gt_boxes])
        for s in range(stages):
            feats[s].append(heads.box_head[s](pooled).flatten(1).float().cpu())
        labels.append(gt.gt_classes.cpu())
    labels = torch.cat(labels)
    per_stage = [per_class_feature_stats(torch.cat(f), labels,
                                         heads.box_predictor[s].head_direction.ema.cpu(),
                                         heads.box_predictor[s].cls_score.num_heads,
                                         num_classes) for s, f in enumerate(feats)]
    last = heads.box_predictor[stages - 1].cls_score
    wn = weight_norms(last.weight[:num_classes], last.num_heads)
    task = "segm" if cfg.MODEL.MASK_ON else "bbox"
    lvis_gt, detections = _lvis_detections(
        cfg, model, dataset, cfg.MODEL.TDE.ALPHA if has_tde(last.kind) else None)
    ap = {tde: lvis_per_category_ap(lvis_gt, d, task, cfg.TEST.DETECTIONS_PER_IMAGE,
                                     cfg.TEST.FAST_LVIS_EVAL)
          for tde, d in detections.items()}
    contiguous_to_id = {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
    alpha = f"{cfg.MODEL.TDE.ALPHA:g}"
    rows = []
    for r, c in enumerate(np.argsort(-counts, kind="stable")):
        row = {"rank": r, "class": meta.thing_classes[c], "train_images": int(counts[c]),
               "frequency": lvis_gt.cats[contiguous_to_id[c]].get("frequency", "?"),
               "eval_instances": int(per_stage[-1]["count"][c]),
               "feature_norm": per_stage[-1]["feature_norm"][c],
               "cos_head_direction": per_stage[-1]["cos_head_direction"][c],
               "weight_norm": wn["norm"][c], f"{task}_AP_no_tde": ap[False][contiguous_to_id[c]]}
        if True in ap:
            row[f"{task}_AP_tde_alpha_{alpha}"] = ap[True][contiguous_to_id[c]]
        for s in range(stages):
            row[f"feature_norm_stage{s}"] = per_stage[s]["feature_norm"][c]
            row[f"cos_head_direction_stage{s}"] = per_stage[s]["cos_head_direction"][c]
        rows.append(row)
    _write(rows, output, f"{task}_AP_no_tde",
           f"{task}_AP_tde_alpha_{alpha}" if True in ap else None, "frequency")
    return rows


def diagnose_classifier(cfg, dataset: str, output: str) -> List[Dict]:
    model = Trainer.build_model(cfg)
    TDECheckpointer(model).load(cfg.MODEL.WEIGHTS)
    loader = Trainer.build_test_loader(cfg, dataset)
    x, labels = collect_features(model, loader)
    c = model.classifier
    stats = per_class_feature_stats(x, labels, model.head_direction.ema, c.num_heads, c.num_classes)
    wn = weight_norms(c.weight, c.num_heads)
    cache = collect_classification_cache(model, loader, "diagnose: logits")
    acc_plain = per_class_accuracy(cache.total, cache.labels, c.num_classes)
    tde_key = f"accuracy_tde_alpha_{cfg.MODEL.TDE.ALPHA:g}" if has_tde(c.kind) else None
    if tde_key:
        acc_tde = per_class_accuracy(cache.logits(cfg.MODEL.TDE.ALPHA), cache.labels,
                                     c.num_classes)
    counts = train_class_counts(dataset)
    groups = shot_groups(counts, cfg.TEST.CLASSIFICATION.MANY_THRESHOLD,
                         cfg.TEST.CLASSIFICATION.FEW_THRESHOLD)
    names = MetadataCatalog.get(dataset).get("thing_classes")
    rows = []
    for r, i in enumerate(np.argsort(-counts, kind="stable")):
        rows.append({"rank": r, "class": names[i] if names else int(i), "class_id": int(i),
                     "train_count": int(counts[i]), "group": groups[i],
                     "eval_images": int(stats["count"][i]),
                     "feature_norm": stats["feature_norm"][i],
                     "cos_head_direction": stats["cos_head_direction"][i],
                     "weight_norm": wn["norm"][i], "accuracy_no_tde": acc_plain[i]})
        if tde_key:
            rows[-1][tde_key] = acc_tde[i]
    _write(rows, output, "accuracy_no_tde", tde_key, "group")
    return rows


def plot_training_metrics(metrics_json: str, output: str) -> Dict[str, List]:
    """Plot the head-direction scalars of a metrics.json to ``output/training_metrics.png``;
    returns {key: [(iteration, value)]}, each iteration once (see
    :func:`~tde_det.evaluation.diagnostic_plots.read_training_metrics`)."""
    os.makedirs(output, exist_ok=True)
    return plot_training_metrics_to(metrics_json, os.path.join(output, "training_metrics.png"))


def build_parser():
    parser = tool_argument_parser(__doc__, "diagnose", config_required=False,
                                  output_note="; with --metrics-json alone: diagnose/ beside it")
    parser.add_argument("--dataset", default="", help="registered split to diagnose (default: "
                        "the last of DATASETS.TEST)")
    parser.add_argument("--metrics-json", default="", metavar="FILE",
                        help="a training run's metrics.json: plot its head-direction metrics "
                        "vs iteration (with or without --config-file)")
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parse_tool_args(parser, argv)
    if not args.config_file and not args.metrics_json:
        parser.error("give --config-file ... (per-class diagnostics) and/or --metrics-json")
    if args.opts and not args.config_file:
        parser.error(f"config overrides ({' '.join(args.opts)}) need --config-file")
    return args


def main(args):
    cfg = setup(args, tool="diagnose") if args.config_file else None
    # without a config: nothing but the picture, beside the metrics.json by default
    output = cfg.OUTPUT_DIR if cfg is not None else args.output or os.path.join(
        os.path.dirname(os.path.abspath(args.metrics_json)), "diagnose")
    if args.metrics_json:
        series = plot_training_metrics(args.metrics_json, output)
        print(f"plotted {len(series)} series from {args.metrics_json} to "
              f"{output}/training_metrics.png")
    if cfg is None:
        return
    dataset = args.dataset or (cfg.DATASETS.TEST[-1] if cfg.DATASETS.TEST else "")
    if not dataset:
        raise SystemExit("give --dataset or DATASETS.TEST")
    detector = cfg.MODEL.META_ARCHITECTURE != "TDEImageClassifier"
    # before the model is built: a detector's classes are ranked over DATASETS.TRAIN
    Trainer.check_datasets(cfg, training=detector, test=[dataset])
    rows = (diagnose_detector if detector else diagnose_classifier)(cfg, dataset, output)
    plain = [k for k in rows[0] if k.endswith("_no_tde")][0]
    tde_key = next((k for k in rows[0] if "_tde_alpha_" in k), None)
    if tde_key is None:
        print(f"TDE (eq. 8) does not apply to MODEL.TDE.CLASSIFIER "
              f"{cfg.MODEL.TDE.CLASSIFIER!r}: no 'with TDE' column")
    print(f"{'rank':>4} {'class':>16} {'train':>6} {'||x||':>8} {'cos(x,d)':>8} "
          f"{'||w||':>7} {plain.split('_no_tde')[0][:10]:>10}"
          + (f" {'with TDE':>9}" if tde_key else ""))
    for r in rows:
        print(f"{r['rank']:>4} {str(r['class'])[:16]:>16} "
              f"{r.get('train_count', r.get('train_images')):>6} "
              f"{r['feature_norm']:>8.3f} {r['cos_head_direction']:>8.3f} "
              f"{r['weight_norm']:>7.3f} {r[plain]:>10.1f}"
              + (f" {r[tde_key]:>9.1f}" if tde_key else ""))
    print(f"wrote {output}/per_class.csv and per_class.png")


if __name__ == "__main__":
    main(parse_args())
