"""Alpha sweep for image classification from one inference pass.

Eq. 8 is linear in alpha before the softmax: TDE(alpha) = z - alpha * B, with z the eq. 7
logits and B the alpha-free TDE term (``TDEImageClassifier.logits_and_tde_bias``). One pass over a
split caches z and B per image; every alpha is then scored from the cache with the same metric
code as :class:`~tde_det.evaluation.ClassificationEvaluator`, so a row equals what
``--eval-only MODEL.TDE.TEST_TDE True MODEL.TDE.ALPHA <alpha>`` reports: sweeping alpha means
evaluating with TDE, whatever the config's ``MODEL.TDE.TEST_TDE`` (alpha = 0 is eq. 7).
"""
import csv
import json
import logging
import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import inference_context
from detectron2.utils import comm

from tde_det.data.classification import shot_groups, train_class_counts
from tde_det.layers.checks import check_has_tde, check_real
from tde_det.layers.tde_math import tde_logits

from .classification_evaluation import accuracy_metrics
from .ap_fixed import AP_FIXED_METRICS
from .lvis_records import LVIS_METRICS
from .progress import logged_progress

__all__ = ["AP_FIXED_COLUMNS", "ClassificationCache", "alpha_override", "best_alpha",
           "check_alphas", "check_metric",
           "check_sweep_config", "collect_classification_cache", "format_table", "plot_sweep",
           "reported_split_warning", "sweep_classification", "sweep_classification_dataset",
           "write_sweep_files"]

logger = logging.getLogger(__name__)
NO_ALPHA = "there is no alpha to sweep"


@dataclass
class ClassificationCache:
    """What one inference pass over a split yields.

    ``total``: [N, C] eq. 7 logits; ``bias``: [N, C] the alpha-free term B of eq. 8 (zeros for a
    linear classifier), so that TDE(alpha) = total - alpha * bias; ``labels``: [N] int64.
    """

    total: torch.Tensor
    bias: torch.Tensor
    labels: torch.Tensor

    def logits(self, alpha: float) -> torch.Tensor:
        """Eq. 8 logits for ``alpha`` (eq. 7 for alpha = 0)."""
        return self.total if alpha == 0 else tde_logits(self.total, self.bias, alpha)


def check_alphas(alphas: Iterable[float]) -> List[float]:
    """The distinct alphas as floats, in the order given (a repeated one is kept once, with a
    warning: each alpha is evaluated and reported once); a clear error for an empty list or a
    negative / non-finite one."""
    given = [check_real("every alpha (eq. 8)", a, 0.0, low_inclusive=True) for a in alphas]
    if not given:
        raise ValueError("no alpha to sweep: give at least one (e.g. --alphas 0 0.5 1 1.5 2 3)")
    out = list(dict.fromkeys(a + 0.0 for a in given))  # -0.0 and 0.0: one alpha, 0.0
    if len(out) < len(given):
        repeated = [a for a in out if given.count(a) > 1]
        logger.warning(f"alpha {', '.join(f'{a:g}' for a in repeated)} given more than once: "
                       f"each alpha is evaluated and reported once")
    return out


def check_sweep_config(cfg) -> None:
    """A clear error for a linear classifier; a log line when the config evaluates without TDE
    (``MODEL.TDE.TEST_TDE False``): the sweep evaluates every alpha with TDE on."""
    check_has_tde(cfg.MODEL.TDE.CLASSIFIER, NO_ALPHA)
    if not cfg.MODEL.TDE.TEST_TDE:
        logger.info("the config has MODEL.TDE.TEST_TDE False; the alpha sweep evaluates with TDE, "
                    "each alpha as --eval-only MODEL.TDE.TEST_TDE True MODEL.TDE.ALPHA <alpha>")


def reported_split_warning(cfg, dataset_name: str) -> Optional[str]:
    """A warning when choosing alpha on ``dataset_name`` looks like choosing it on the split
    that is reported: one of ``DATASETS.TEST`` (what ``--eval-only`` and the evaluation during
    training report), or a name containing "test"; None otherwise."""
    if dataset_name in cfg.DATASETS.TEST:
        why = "one of DATASETS.TEST, which --eval-only and training evaluate and report"
    elif "test" in dataset_name.lower():
        why = "named as a test split"
    else:
        return None
    return (f"alpha was chosen on {dataset_name!r}, {why}: an alpha chosen on the split you "
            f"report overstates its result. Choose alpha on a held-out "
            f"split (--dataset: a validation split, or held-out training images, see "
            f"tde_det.data.detection.holdout) and report this split with that alpha")


def alpha_override(cfg, alpha: float) -> str:
    """The KEY VALUE overrides that evaluate ``cfg`` as the sweep's row for ``alpha``. The value
    is written as a float (``2.0``, not ``2``): ``cfg.merge_from_list`` refuses an int for the
    float key ``MODEL.TDE.ALPHA``."""
    tde = "" if cfg.MODEL.TDE.TEST_TDE else "MODEL.TDE.TEST_TDE True "
    return f"{tde}MODEL.TDE.ALPHA {float(alpha)!r}"


@torch.no_grad()
def collect_classification_cache(model, data_loader, label: str = "alpha sweep"
                                 ) -> ClassificationCache:
    """Run ``model`` (a ``TDEImageClassifier``) once over ``data_loader`` and cache eq. 7 logits
    and the TDE term B of every image (``model.logits_and_tde_bias``), gathered from all
    processes (every rank gets the whole split). Progress is logged as Detectron2's inference
    logs it, under ``label``."""
    totals, biases, labels = [], [], []
    with inference_context(model):
        for batch in logged_progress(data_loader, label):
            total, bias = model.logits_and_tde_bias(
                model.extract_features(model.preprocess_image(batch)))
            totals.append(total.float().cpu())
            biases.append(bias.float().cpu())
            labels.append(torch.as_tensor([int(d["label"]) for d in batch], dtype=torch.long))
    parts = comm.all_gather((totals, biases, labels))
    if not any(p[2] for p in parts):
        raise ValueError("the data loader yielded no image: nothing to sweep")
    total, bias, label = ([t for p in parts for t in p[i]] for i in range(3))
    return ClassificationCache(total=torch.cat(total), bias=torch.cat(bias),
                               labels=torch.cat(label))


def sweep_classification(cache: ClassificationCache, alphas: Sequence[float],
                         train_counts: Sequence[int], many_threshold: int, few_threshold: int,
                         topk: int = 5) -> List[Dict]:
    """One row per alpha: ``{"alpha", "top1", "top<k>", "many", "medium", "few"}`` (percent),
    as ``ClassificationEvaluator`` computes them from the eq. 8 logits with that alpha."""
    alphas = check_alphas(alphas)
    num_classes = cache.total.shape[1]
    if len(train_counts) != num_classes:
        raise ValueError(f"{len(train_counts)} train counts for {num_classes} classes")
    groups = shot_groups(train_counts, many_threshold, few_threshold)
    k = min(topk, num_classes)
    labels = cache.labels.numpy()
    rows = []
    for alpha in alphas:
        preds = cache.logits(alpha).topk(k).indices.numpy()
        m = accuracy_metrics(labels, preds, groups, num_classes)
        per_class = m.pop("per_class")
        row = {"alpha": alpha}
        row.update({key: float(v) for key, v in m.items()})
        row["per_class"] = [float(v) for v in per_class]
        rows.append(row)
    return rows


def best_alpha(rows: Sequence[Dict], metric: str = "top1") -> Dict:
    """The row with the highest ``metric`` (ties: the smallest alpha; NaN never wins)."""
    if not rows:
        raise ValueError("no sweep rows")
    if metric not in rows[0]:
        raise ValueError(f"unknown metric {metric!r}; available: "
                         f"{sorted(k for k in rows[0] if k not in ('alpha', 'per_class'))}")
    valid = [r for r in rows if r[metric] == r[metric]]
    if not valid:
        raise ValueError(f"metric {metric!r} is NaN for every alpha")
    return max(sorted(valid, key=lambda r: r["alpha"]), key=lambda r: r[metric])


def sweep_classification_dataset(cfg, model, dataset_name: str, alphas: Sequence[float],
                                 data_loader: Iterable) -> Tuple[List[Dict], ClassificationCache]:
    """Sweep ``alphas`` on a registered split, read by ``data_loader`` (e.g.
    ``Trainer.build_test_loader(cfg, dataset_name)``), with the config's groups and top-k (TDE
    on for every alpha, whatever ``MODEL.TDE.TEST_TDE``; a linear classifier only with
    alpha 0)."""
    if any(a > 0 for a in check_alphas(alphas)):
        check_has_tde(model.classifier.kind, NO_ALPHA)
    cache = collect_classification_cache(model, data_loader, f"alpha sweep on {dataset_name}")
    c = cfg.TEST.CLASSIFICATION
    rows = sweep_classification(cache, alphas, train_class_counts(dataset_name),
                                c.MANY_THRESHOLD, c.FEW_THRESHOLD, c.TOPK)
    return rows, cache


DEFAULT_ALPHAS = [0, 0.5, 1, 1.5, 2, 2.5, 3]
DETECTION_COLUMNS = [f"{t}/{m}" for t in ("segm", "bbox") for m in ("AP", "APr", "APc", "APf")]
# with TEST.AP_FIXED.ENABLED, beside them
AP_FIXED_COLUMNS = [f"{t}/{m}" for t in ("segm", "bbox") for m in AP_FIXED_METRICS.values()]
CLASSIFICATION_COLUMNS = ["many", "medium", "few", "top1"]
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
    fixed = tuple(AP_FIXED_METRICS.values())
    if name in fixed and not cfg.TEST.AP_FIXED.ENABLED:
        raise ValueError(f"--metric {metric!r} is an AP-fixed metric: evaluate it with "
                         f"TEST.AP_FIXED.ENABLED True")
    for dataset in datasets:
        kind = MetadataCatalog.get(dataset).get("evaluator_type", None)
        known = (LVIS_METRICS + (fixed if cfg.TEST.AP_FIXED.ENABLED else ())) if kind == "lvis" \
            else COCO_METRICS if kind == "coco" else None
        if known is not None and name not in known and not (kind == "coco"
                                                            and name.startswith("AP-")):
            raise ValueError(f"--metric {metric!r}: {name!r} is not a {kind.upper()} metric of "
                             f"{dataset!r}; use one of {list(known)}"
                             + (" or AP-<class name>" if kind == "coco" else ""))


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
    task = metric.rpartition("/")[0]
    for col, marker in ((f"{task}/AP", "^"), (f"{task}/AP-fixed", "v")):
        # where AP and AP-fixed peak, so that a user sees whether they agree
        if col != metric and col in columns and all(col in r for r in rows) \
                and any(r[col] == r[col] for r in rows):
            top = best_alpha(rows, col)
            ax.plot([top["alpha"]], [top[col]], marker=marker, ms=9, color="k", ls="none",
                    label=f"max {col}: alpha {top['alpha']:g}")
    ax.plot([best["alpha"]], [best[metric]], marker="*", ms=13, color="k", ls="none",
            label=f"chosen: alpha {best['alpha']:g}\n({metric} {best[metric]:.2f})")
    ax.set_xlabel("alpha (eq. 8)")
    ax.set_ylabel("%")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def write_sweep_files(rows: List[Dict], columns: List[str], output: str, title: str,
                      best: Dict, metric: str) -> None:
    """``alpha_sweep.csv``, ``alpha_sweep.json`` and ``alpha_sweep.png`` in ``output``."""
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


def format_table(rows: List[Dict], columns: List[str]) -> str:
    """The rows as a markdown table of the ``columns`` they have."""
    present = [c for c in columns if any(c in r for r in rows)]
    lines = ["| alpha | " + " | ".join(present) + " |", "|---" * (len(present) + 1) + "|"]
    for r in rows:
        lines.append(f"| {r['alpha']:g} | " + " | ".join(
            f"{r[c]:.2f}" if c in r else "" for c in present) + " |")
    return "\n".join(lines)
