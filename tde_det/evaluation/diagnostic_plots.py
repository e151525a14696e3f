"""The pictures of ``tools/diagnose.py``: per-class diagnostics by training frequency (paper
Fig. 1b, supplement Fig. 1), readable from ten classes to LVIS's 1,203, and the head-direction
metrics of a training run's ``metrics.json``."""
import json
import logging
import math
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["PER_CLASS_PANELS", "frequency_bins", "plot_per_class", "plot_training_metrics",
           "read_training_metrics"]

logger = logging.getLogger(__name__)
# (row key, title) of the per-class panels before the score panel
PER_CLASS_PANELS = (("feature_norm", "mean ||x||"), ("cos_head_direction", "mean cos(x, d_hat)"),
                    ("weight_norm", "||w_i||"))
GROUP_COLOURS = {"r": "#f4cccc", "c": "#fff2cc", "f": "#d9ead3", "few": "#f4cccc",
                 "medium": "#fff2cc", "many": "#d9ead3"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def frequency_bins(groups: Sequence[str], max_bins: int = 48) -> List[Tuple[int, int]]:
    """[start, end) rank ranges of consecutive classes (sorted by training frequency, so
    ``groups`` come in runs) that each stay within one group: one class a bin for at most
    ``max_bins`` classes, else bins of about ``len(groups) / max_bins`` classes."""
    width = max(1, math.ceil(len(groups) / max_bins))
    bins, start = [], 0
    while start < len(groups):
        end = start + 1
        while end < len(groups) and groups[end] == groups[start]:
            end += 1
        n = math.ceil((end - start) / width)  # this group's run, in n near-equal bins
        edges = np.linspace(start, end, n + 1).round().astype(int)
        bins += list(zip(edges[:-1].tolist(), edges[1:].tolist()))
        start = end
    return bins


def _group_spans(ax, groups: Sequence[str]) -> None:
    """Shade each group's ranks and name it at the top of the panel."""
    start = 0
    while start < len(groups):
        end = start
        while end < len(groups) and groups[end] == groups[start]:
            end += 1
        ax.axvspan(start - 0.5, end - 0.5, color=GROUP_COLOURS.get(groups[start], "#eeeeee"),
                   zorder=0, lw=0)
        ax.text((start + end - 1) / 2, 1.0, f"{groups[start]} ({end - start})", ha="center",
                va="bottom", fontsize=7, transform=ax.get_xaxis_transform())
        start = end


def plot_per_class(rows: List[Dict], path: str, score: str, score_tde: Optional[str],
                   group_key: str, max_bins: int = 48) -> None:
    """Per class, in ``rows``' order (rank by training frequency): the feature norm, cos with
    the head direction, weight norm and ``score`` (and ``score_tde``), with each class's group
    (``row[group_key]``: r/c/f, many/medium/few) shaded. Up to ``max_bins`` classes, one point
    each; more (LVIS), each class a faint dot and the mean of bins of neighbouring ranks (never
    across groups) as a line."""
    plt = _plt()
    groups = [str(r[group_key]) for r in rows]
    bins = frequency_bins(groups, max_bins)
    binned = len(bins) < len(rows)
    centres = [(a + b - 1) / 2 for a, b in bins]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    series = [(ax, [(key, title)]) for ax, (key, title) in zip(axes, PER_CLASS_PANELS)]
    scores = [(score, "no TDE")] + ([(score_tde, "TDE, alpha " + score_tde.rsplit("_", 1)[1])]
                                    if score_tde else [])
    series.append((axes[3], scores))
    for ax, keys in series:
        _group_spans(ax, groups)
        for key, label in keys:
            values = np.array([r[key] for r in rows], dtype=float)
            if binned:
                means = [np.nanmean(values[a:b]) if np.isfinite(values[a:b]).any()
                         else np.nan for a, b in bins]  # NaN: no class of the bin has a value
                line, = ax.plot(centres, means, marker="o", ms=2.5, label=label)
                ax.scatter(np.arange(len(rows)), values, s=2, alpha=0.25, lw=0,
                           color=line.get_color())
            else:
                ax.plot(np.arange(len(rows)), values, marker="o", ms=3, label=label)
        ax.set_xlim(-0.5, len(rows) - 0.5)
        ax.set_xlabel("class rank by training count (0 = most frequent)", fontsize=8)
        ax.grid(alpha=0.3)
    for ax, (_, title) in zip(axes, PER_CLASS_PANELS):
        ax.set_title(title, fontsize=9, pad=12)
    axes[3].set_title(score.replace("_no_tde", "") + " (%)", fontsize=9, pad=12)
    axes[3].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2,
                   frameon=False)  # below the panel, off the data
    if binned:
        fig.suptitle(f"{len(rows)} classes: dots per class, lines the mean of {len(bins)} bins "
                     f"of neighbouring ranks", fontsize=8, y=0.995)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def read_training_metrics(metrics_json: str) -> Dict[str, List[Tuple[int, float]]]:
    """{key: [(iteration, value)]} of the head-direction scalars (``tde/...``,
    ``head_direction_mu``) of a ``metrics.json``. After a resume the file repeats the
    iterations from the resumed checkpoint on: an iteration at or below one already read
    starts again from there, so the points of the interrupted run from that iteration on are
    dropped (each iteration keeps its last occurrence), which is logged."""
    series: Dict[str, List[Tuple[int, float]]] = defaultdict(list)
    last, restarts = -1, []
    with open(metrics_json) as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            it = record.get("iteration")
            if it is not None and it <= last:
                restarts.append((it, last))
                for k in series:
                    series[k] = [p for p in series[k] if p[0] < it]
            last = it if it is not None else last
            for k, v in record.items():
                if k.startswith("tde/") or k == "head_direction_mu":
                    series[k].append((it if it is not None else len(series[k]), v))
    for it, previous in restarts:
        logger.info(f"{metrics_json}: iterations {it} to {previous} were written again "
                    f"(a resumed run): plotting the later ones")
    return dict(series)


def plot_training_metrics(metrics_json: str, path: str) -> Dict[str, List[Tuple[int, float]]]:
    """Plot the head-direction scalars of a metrics.json (one panel per metric, one line per
    cascade stage) to ``path``; returns what :func:`read_training_metrics` read."""
    series = read_training_metrics(metrics_json)
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
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return series
