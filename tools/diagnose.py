#!/usr/bin/env python
"""Per-class diagnostics of a TDE image classifier, and the head-direction metrics of training.

    python tools/diagnose.py --config-file configs/fashion_mnist_lt_r100_deconfound.yaml \
        --dataset fashion_mnist_lt_r100_s0_test MODEL.WEIGHTS model_final.pth
    python tools/diagnose.py --metrics-json output/tiny_lvis_cascade_tde/metrics.json

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
import argparse
import csv
import json
import os
import sys
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import (
    DatasetCatalog,
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
)
from detectron2.data.detection_utils import build_augmentation
from detectron2.engine import default_argument_parser

import tde_det  # noqa: F401  (registration)
from tde_det.data.classification import train_class_counts
from tde_det.data.detection import register_lvis_datasets_from_config
from tde_det.engine import Trainer, setup
from tde_det.evaluation.alpha_sweep import collect_classification_cache
from tde_det.evaluation.detection_alpha_sweep import (
    DetectionAlphaSweep,
    EvaluatorsSharingGroundTruth,
)
from tde_det.evaluation.progress import logged_progress
from tde_det.modeling.roi_heads import TDECascadeROIHeads, TDEFastRCNNOutputLayers
from tde_det.evaluation.diagnostics import (
    lvis_per_category_ap,
    per_class_accuracy,
    per_class_feature_stats,
    weight_norms,
)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@torch.no_grad()
def collect_features(model, loader):
    feats, labels = [], []
    model.eval()
    for batch in logged_progress(loader, "diagnose: features"):
        feats.append(model.extract_features(model.preprocess_image(batch)).float().cpu())
        labels.append(torch.as_tensor([int(d["label"]) for d in batch]))
    return torch.cat(feats), torch.cat(labels)


def _write(rows: List[Dict], output: str, score: str, score_tde: Optional[str]) -> None:
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, "per_class.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
    rank = [r["rank"] for r in rows]
    for ax, key, title in zip(axes, ("feature_norm", "cos_head_direction", "weight_norm"),
                              ("mean ||x||", "mean cos(x, d_hat)", "||w_i||")):
        ax.bar(rank, [r[key] for r in rows])
        ax.set_title(title, fontsize=9)
    axes[3].plot(rank, [r[score] for r in rows], marker="o", label="no TDE")
    if score_tde:
        axes[3].plot(rank, [r[score_tde] for r in rows], marker="o", label=score_tde)
    axes[3].set_title(score.replace("_no_tde", "") + " (%)", fontsize=9)
    axes[3].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("class rank by training count (0 = most frequent)", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(output, "per_class.png"), dpi=80)
    plt.close(fig)


def _tde_applies(classifier_kind: str) -> bool:
    """TDE (eq. 8) needs a normalised classifier; for 'linear' there is no TDE column."""
    return classifier_kind != "linear"


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
    register_lvis_datasets_from_config(cfg)
    counts = train_images_per_class(cfg.DATASETS.TRAIN, cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
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
        cfg, model, dataset, cfg.MODEL.TDE.ALPHA if _tde_applies(last.kind) else None)
    ap = {tde: lvis_per_category_ap(lvis_gt, d, task, cfg.TEST.DETECTIONS_PER_IMAGE,
                                     cfg.TEST.FAST_LVIS_EVAL)
          for tde, d in detections.items()}
    contiguous_to_id = {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
    alpha = f"{cfg.MODEL.TDE.ALPHA:g}"
    rows = []
    for r, c in enumerate(np.argsort(-counts, kind="stable")):
        row = {"rank": r, "class": meta.thing_classes[c], "train_images": int(counts[c]),
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
           f"{task}_AP_tde_alpha_{alpha}" if True in ap else None)
    return rows


def diagnose_classifier(cfg, dataset: str, output: str) -> List[Dict]:
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    loader = Trainer.build_test_loader(cfg, dataset)
    x, labels = collect_features(model, loader)
    c = model.classifier
    stats = per_class_feature_stats(x, labels, model.head_direction.ema, c.num_heads, c.num_classes)
    wn = weight_norms(c.weight, c.num_heads)
    cache = collect_classification_cache(model, loader, "diagnose: logits")
    acc_plain = per_class_accuracy(cache.total, cache.labels, c.num_classes)
    tde_key = f"accuracy_tde_alpha_{cfg.MODEL.TDE.ALPHA:g}" if _tde_applies(c.kind) else None
    if tde_key:
        acc_tde = per_class_accuracy(cache.logits(cfg.MODEL.TDE.ALPHA), cache.labels,
                                     c.num_classes)
    counts = train_class_counts(dataset)
    names = MetadataCatalog.get(dataset).get("thing_classes")
    rows = []
    for r, i in enumerate(np.argsort(-counts, kind="stable")):
        rows.append({"rank": r, "class": names[i] if names else int(i), "class_id": int(i),
                     "train_count": int(counts[i]), "eval_images": int(stats["count"][i]),
                     "feature_norm": stats["feature_norm"][i],
                     "cos_head_direction": stats["cos_head_direction"][i],
                     "weight_norm": wn["norm"][i], "accuracy_no_tde": acc_plain[i]})
        if tde_key:
            rows[-1][tde_key] = acc_tde[i]
    _write(rows, output, "accuracy_no_tde", tde_key)
    return rows


def plot_training_metrics(metrics_json: str, output: str) -> Dict[str, List]:
    """Plot the head-direction scalars of a metrics.json; returns {key: [(iteration, value)]}."""
    series = defaultdict(list)
    with open(metrics_json) as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            for k, v in record.items():
                if k.startswith("tde/") or k == "head_direction_mu":
                    series[k].append((record.get("iteration", len(series[k])), v))
    if not series:
        raise SystemExit(f"{metrics_json} holds no head-direction metric (tde/... or "
                         f"head_direction_mu): was it written by tde-det's trainer?")
    names = sorted({k.rsplit("/", 1)[-1] for k in series})
    plt = _plt()
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        for k in sorted(s for s in series if s.rsplit("/", 1)[-1] == name):
            it, v = zip(*series[k])
            ax.plot(it, v, label=k.rsplit("/", 1)[0] if "/" in k else k)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(output, exist_ok=True)
    fig.savefig(os.path.join(output, "training_metrics.png"), dpi=80)
    plt.close(fig)
    return dict(series)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--metrics-json", default="")
    pre.add_argument("--dataset", default="")
    pre.add_argument("--output", default="output/diagnose")
    own, rest = pre.parse_known_args(argv)
    if own.metrics_json:
        series = plot_training_metrics(own.metrics_json, own.output)
        print(f"plotted {len(series)} series from {own.metrics_json} to "
              f"{own.output}/training_metrics.png")
    if "--config-file" in rest:
        args = default_argument_parser().parse_args(rest)
        cfg = setup(args)
        dataset = own.dataset or (cfg.DATASETS.TEST[-1] if cfg.DATASETS.TEST else "")
        if not dataset:
            raise SystemExit("give --dataset or DATASETS.TEST")
        detector = cfg.MODEL.META_ARCHITECTURE != "TDEImageClassifier"
        # before the model is built: a detector's classes are ranked over DATASETS.TRAIN
        Trainer.check_datasets(cfg, training=detector, test=[dataset])
        rows = (diagnose_detector if detector else diagnose_classifier)(cfg, dataset, own.output)
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
        print(f"wrote {own.output}/per_class.csv and per_class.png")
    elif not own.metrics_json:
        raise SystemExit("give --config-file ... (per-class diagnostics) and/or --metrics-json")


if __name__ == "__main__":
    main()
