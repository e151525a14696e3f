#!/usr/bin/env python
"""Per-class diagnostics of a TDE image classifier, and the head-direction metrics of training.

    python tools/diagnose.py --config-file configs/fashion_mnist_lt_r100_deconfound.yaml \
        --dataset fashion_mnist_lt_r100_s0_test MODEL.WEIGHTS model_final.pth
    python tools/diagnose.py --metrics-json output/tiny_lvis_cascade_tde/metrics.json

Per class, sorted by training frequency (paper Fig. 1b, supplement Fig. 1): training count,
mean feature norm ||x||, mean cos(x, d_hat) with the head direction, classifier weight norm
||w_i||, top-1 accuracy with and without TDE (MODEL.TDE.ALPHA). Writes ``per_class.csv`` and
``per_class.png``. With --metrics-json, plots every ``tde/...`` (detection: per cascade stage)
and ``head_direction_mu`` scalar of a training run's metrics.json vs iteration
(``training_metrics.png``).
"""
import argparse
import csv
import json
import os
import sys
from collections import defaultdict
from typing import Dict, List

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser

import tde_det  # noqa: F401  (registration)
from tde_det.data.classification import train_class_counts
from tde_det.engine import Trainer, setup
from tde_det.evaluation.alpha_sweep import collect_classification_cache
from tde_det.evaluation.diagnostics import (
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
    for batch in loader:
        feats.append(model.extract_features(model.preprocess_image(batch)).float().cpu())
        labels.append(torch.as_tensor([int(d["label"]) for d in batch]))
    return torch.cat(feats), torch.cat(labels)


def diagnose_classifier(cfg, dataset: str, output: str) -> List[Dict]:
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    if cfg.MODEL.META_ARCHITECTURE != "TDEImageClassifier":
        raise SystemExit("per-class diagnostics need a TDEImageClassifier config; for a detector "
                         "plot its training metrics with --metrics-json")
    loader = Trainer.build_test_loader(cfg, dataset)
    x, labels = collect_features(model, loader)
    c = model.classifier
    stats = per_class_feature_stats(x, labels, model.head_direction.ema, c.num_heads, c.num_classes)
    wn = weight_norms(c.weight, c.num_heads)
    cache = collect_classification_cache(model, loader)
    acc_plain = per_class_accuracy(cache.total, cache.labels, c.num_classes)
    acc_tde = per_class_accuracy(cache.logits(cfg.MODEL.TDE.ALPHA), cache.labels, c.num_classes) \
        if c.kind != "linear" else acc_plain
    counts = train_class_counts(dataset)
    order = np.argsort(-counts, kind="stable")
    rows = [{"rank": r, "class": int(i), "train_count": int(counts[i]),
             "eval_images": int(stats["count"][i]), "feature_norm": stats["feature_norm"][i],
             "cos_head_direction": stats["cos_head_direction"][i],
             "weight_norm": wn["norm"][i], "accuracy_no_tde": acc_plain[i],
             f"accuracy_tde_alpha_{cfg.MODEL.TDE.ALPHA:g}": acc_tde[i]}
            for r, i in enumerate(order)]
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
    axes[3].plot(rank, [r["accuracy_no_tde"] for r in rows], marker="o", label="no TDE")
    axes[3].plot(rank, acc_tde[order], marker="o", label=f"TDE alpha {cfg.MODEL.TDE.ALPHA:g}")
    axes[3].set_title("top-1 accuracy (%)", fontsize=9)
    axes[3].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("class rank by training count (0 = most frequent)", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(output, "per_class.png"), dpi=80)
    plt.close(fig)
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
        rows = diagnose_classifier(cfg, dataset, own.output)
        print(f"{'rank':>4} {'class':>5} {'train':>6} {'||x||':>8} {'cos(x,d)':>8} "
              f"{'||w||':>7} {'acc':>6} {'acc TDE':>7}")
        for r in rows:
            tde_key = [k for k in r if k.startswith("accuracy_tde")][0]
            print(f"{r['rank']:>4} {r['class']:>5} {r['train_count']:>6} "
                  f"{r['feature_norm']:>8.3f} {r['cos_head_direction']:>8.3f} "
                  f"{r['weight_norm']:>7.3f} {r['accuracy_no_tde']:>6.1f} {r[tde_key]:>7.1f}")
        print(f"wrote {own.output}/per_class.csv and per_class.png")
    elif not own.metrics_json:
        raise SystemExit("give --config-file ... (per-class diagnostics) and/or --metrics-json")


if __name__ == "__main__":
    main()
