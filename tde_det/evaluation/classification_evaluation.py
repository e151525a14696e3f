"""Long-tailed classification accuracy: top-1 / top-k overall and per shot group, with and
without TDE from the same forward pass ("ImageNet-LT eval mode")."""
import csv
import itertools
import json
import logging
import math
import os
from collections import OrderedDict
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from tabulate import tabulate

from tde_det.data.classification import SHOT_GROUPS, shot_groups, train_class_counts

__all__ = ["ClassificationEvaluator", "accuracy_metrics"]

logger = logging.getLogger(__name__)


def accuracy_metrics(labels: np.ndarray, topk_preds: np.ndarray, groups: Sequence[str],
                     num_classes: int) -> Dict:
    """Accuracies in percent from ground truth ``labels`` [N] and ``topk_preds`` [N, k]
    (best first).

    Returns ``{"top1", "top<k>", "many", "medium", "few", "per_class"}``: overall top-1/top-k are
    micro averages over images; a group's accuracy is the mean of the top-1 accuracies of its
    classes (paper; classes without an evaluation image are left out, an empty group is NaN);
    ``per_class``: [C] top-1 accuracy (NaN for a class without images).
    """
    labels = np.asarray(labels, dtype=np.int64)
    topk_preds = np.asarray(topk_preds, dtype=np.int64).reshape(len(labels), -1)
    k = topk_preds.shape[1]
    correct1 = topk_preds[:, 0] == labels
    correctk = (topk_preds == labels[:, None]).any(axis=1)
    n = np.bincount(labels, minlength=num_classes).astype(np.float64)
    hits = np.bincount(labels, weights=correct1.astype(np.float64), minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(n > 0, 100.0 * hits / np.maximum(n, 1), np.nan)
    out = OrderedDict()
    out["top1"] = 100.0 * correct1.mean() if len(labels) else float("nan")
    out[f"top{k}"] = 100.0 * correctk.mean() if len(labels) else float("nan")
    groups = np.asarray(groups)
    for g in SHOT_GROUPS:
        accs = per_class[(groups == g) & (n > 0)]
        out[g] = float(accs.mean()) if len(accs) else float("nan")
    out["per_class"] = per_class
    return out


class ClassificationEvaluator(DatasetEvaluator):
    """Accuracy of a ``TDEImageClassifier`` on a classification dataset.

    ``evaluate()`` returns ``{"classification": {"top1", "top5", "many", "medium", "few", and,
    when the model applied TDE, the same keys with the suffix "_no_tde" (eq. 7 logits of the same
    forward pass)}}`` in percent. Unsuffixed keys are the model's prediction (eq. 8 when TDE is
    applied, else eq. 7). Writes ``per_class_accuracy_<dataset>.csv`` and
    ``classification_<dataset>.json`` to ``output_dir`` and logs a table. An empty group's
    accuracy is NaN in the returned dict and null in the json file.
    """

    def __init__(self, dataset_name: str, *, distributed: bool = True,
                 output_dir: Optional[str] = None, many_threshold: int = 100,
                 few_threshold: int = 20, topk: int = 5,
                 train_counts: Optional[Sequence[int]] = None, alpha: Optional[float] = None):
        """
        Args:
            train_counts: [C] training images per class; default from the dataset's metadata
                (``train_dataset``). Shot groups: many n > many_threshold, few n <
                few_threshold, medium otherwise.
            alpha: only printed in the table.
        """
        self.dataset_name = dataset_name
        meta = MetadataCatalog.get(dataset_name)
        self.num_classes = meta.num_classes
        self.class_names = meta.get("thing_classes", None) or [str(i) for i in
                                                               range(self.num_classes)]
        counts = train_class_counts(dataset_name) if train_counts is None else train_counts
        self.train_counts = np.asarray(counts, dtype=np.int64)
        if len(self.train_counts) != self.num_classes:
            raise ValueError(f"{len(self.train_counts)} train counts for {self.num_classes} "
                             f"classes of {dataset_name}")
        self.groups = shot_groups(self.train_counts, many_threshold, few_threshold)
        self.topk = min(topk, self.num_classes)
        self._distributed = distributed
        self._output_dir = output_dir
        self._alpha = alpha
        self.reset()

    def reset(self):
        self._labels = []
        self._preds = []
        self._preds_no_tde = []
        self._tde = False

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            self._labels.append(int(inp["label"]))
            self._preds.append(self._topk(out["logits"]))
            if out.get("tde", False):
                self._tde = True
                self._preds_no_tde.append(self._topk(out["logits_no_tde"]))

    def _topk(self, logits: torch.Tensor) -> np.ndarray:
        return logits.detach().float().topk(self.topk).indices.cpu().numpy().astype(np.int32)

    def evaluate(self):
        state = (self._labels, self._preds, self._preds_no_tde, self._tde)
        if self._distributed:
            comm.synchronize()
            states = comm.gather(state, dst=0)
            if not comm.is_main_process():
                return {}
        else:
            states = [state]
        labels = list(itertools.chain(*[s[0] for s in states]))
        if not labels:
            logger.warning(f"[ClassificationEvaluator] {self.dataset_name}: no prediction")
            return {}
        tde = any(s[3] for s in states)
        runs = [("", list(itertools.chain(*[s[1] for s in states])))]
        if tde:
            runs.append(("_no_tde", list(itertools.chain(*[s[2] for s in states]))))

        results = OrderedDict()
        per_class = {}
        for suffix, preds in runs:
            m = accuracy_metrics(np.asarray(labels), np.stack(preds), self.groups,
                                 self.num_classes)
            per_class[suffix] = m.pop("per_class")
            results.update({k + suffix: float(v) for k, v in m.items()})
        num_images = np.bincount(labels, minlength=self.num_classes)
        self._log_table(results, tde, num_images)
        if self._output_dir:
            self._save(results, per_class, num_images)
        return {"classification": results}

    def _group_sizes(self, num_images: np.ndarray) -> Dict[str, Dict[str, int]]:
        """Per group: its classes, and those with an evaluation image (the ones averaged)."""
        groups = np.asarray(self.groups)
        return {g: {"classes": int((groups == g).sum()),
                    "evaluated": int(((groups == g) & (num_images > 0)).sum())}
                for g in SHOT_GROUPS}

    def _log_table(self, results: Dict, tde: bool, num_images: np.ndarray):
        k = f"top{self.topk}"
        sizes = self._group_sizes(num_images)
        header = ["prediction"] + [
            f"{g} ({s['evaluated']} cls)" if s["evaluated"] == s["classes"]
            else f"{g} ({s['evaluated']} of {s['classes']} cls)" for g, s in sizes.items()
        ] + ["overall top-1", k]
        rows = []
        for suffix, name in ([("", f"TDE (eq. 8, alpha={self._alpha})" if self._alpha is not None
                               else "TDE (eq. 8)"), ("_no_tde", "no TDE (eq. 7)")] if tde
                             else [("", "no TDE (eq. 7)")]):
            rows.append([name] + [results[g + suffix] for g in SHOT_GROUPS]
                        + [results["top1" + suffix], results[k + suffix]])
        table = tabulate(rows, headers=header, tablefmt="pipe", floatfmt=".2f",
                         numalign="left")
        logger.info(f"Accuracy (%) on {self.dataset_name} ({int(num_images.sum())} images):\n"
                    + table)

    def _save(self, results: Dict, per_class: Dict, num_images: np.ndarray):
        os.makedirs(self._output_dir, exist_ok=True)
        path = os.path.join(self._output_dir, f"per_class_accuracy_{self.dataset_name}.csv")
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            suffixes = list(per_class)
            w.writerow(["class_id", "class_name", "train_count", "group", "num_images"]
                       + [f"top1{s}" for s in suffixes])
            for c in range(self.num_classes):
                w.writerow([c, self.class_names[c], int(self.train_counts[c]), self.groups[c],
                            int(num_images[c])] + [f"{per_class[s][c]:.4f}" for s in suffixes])
        sizes = self._group_sizes(num_images)
        with open(os.path.join(self._output_dir,
                               f"classification_{self.dataset_name}.json"), "w") as f:
            json.dump({"dataset": self.dataset_name, "alpha": self._alpha,
                       "results": {k: None if math.isnan(v) else v for k, v in results.items()},
                       "num_classes_per_group": {g: s["classes"] for g, s in sizes.items()},
                       "num_evaluated_classes_per_group": {g: s["evaluated"]
                                                           for g, s in sizes.items()}},
                      f, indent=2, allow_nan=False)
        logger.info(f"Per-class accuracy written to {path}")
