"""Tables and figures of tools/benchmarks/real_lt.py: per schedule, at the fair schedule, the
per-seed margins over the baseline and the test-time head-direction ablation."""
import sys
from typing import Dict, List

import numpy as np

__all__ = ["plot_alpha", "plot_schedules", "report", "summarise"]

METRICS = ("many", "medium", "few", "top1")
LABELS = {"baseline": ("baseline", ""), "cosine": ("cosine", ""), "capsule": ("capsule", ""),
          "deconfound": ("de-confound", ""),
          "deconfound-momentum0": ("de-confound", ", momentum 0"),
          "deconfound-average": ("de-confound", ", (1-mu) average")}


def row_labels(method: str, tde_capable: bool) -> List[tuple]:
    """(label, use TDE) of the table rows of one method."""
    name, suffix = LABELS[method]
    rows = [(name + suffix, False)]
    return rows + [(f"{name}-TDE{suffix}", True)] if tde_capable else rows


def _seed_row(run: Dict, direction: str, tde: bool) -> Dict:
    entry = run["directions"][direction]
    alpha = entry["alpha_val"] if tde else 0.0
    test = next(r for r in entry["test"] if r["alpha"] == alpha)
    val = next(r for r in entry["val"] if r["alpha"] == alpha)
    return dict({m: test[m] for m in METRICS}, alpha=alpha, val_top1=val["top1"],
                seed=run["seed"])


def _stats(per_seed: List[Dict], keys) -> Dict:
    out = {"seeds": per_seed}
    for k in keys:
        v = np.array([s[k] for s in per_seed], dtype=np.float64)
        out[k] = {"mean": float(v.mean()), "std": float(v.std(ddof=0))}
    return out


def summarise(runs: List[Dict], methods: List[str], schedules: List[float],
              directions: List[str]) -> Dict:
    """Rows per schedule; each row's fair schedule (best mean val top-1, the shortest on a tie);
    per-seed margins over the baseline; the head-direction ablation at the fair schedule.
    Methods or schedules without runs (an unfinished run) are left out."""
    keys = METRICS + ("alpha", "val_top1")
    per_schedule, fair, ablation = {}, {}, {}
    for method in methods:
        mine = [r for r in runs if r["method"] == method]
        if not mine:
            continue
        present = [x for x in schedules if any(r["multiple"] == x for r in mine)]
        capable = len(mine[0]["directions"]["ema"]["test"]) > 1
        for label, tde in row_labels(method, capable):
            rows = {}
            for x in present:
                seeds = [_seed_row(r, "ema", tde) for r in mine if r["multiple"] == x]
                rows[x] = dict(_stats(seeds, keys), max_iter=next(
                    r["max_iter"] for r in mine if r["multiple"] == x))
            per_schedule[label] = rows
            best = max(present, key=lambda x: rows[x]["val_top1"]["mean"])
            fair[label] = dict(rows[best], schedule=best, saturated=best < max(present))
            if tde:
                ablation[label] = {"schedule": best, "directions": {}}
                for d in (d for d in directions if d in mine[0]["directions"]):
                    runs_x = [r for r in mine if r["multiple"] == best]
                    seeds = [_seed_row(r, d, True) for r in runs_x]
                    entry = _stats(seeds, keys)
                    cos = np.array([r["directions"][d]["cos_with_ema"] for r in runs_x])
                    entry["cos_with_ema"] = cos.mean(0).tolist()
                    ablation[label]["directions"][d] = entry
    return {"per_schedule": per_schedule, "fair": fair, "ablation": ablation,
            "margins": margins(per_schedule, fair, schedules)}


def _margin(rows: Dict, base: Dict) -> Dict:
    by_seed = {s["seed"]: s for s in base["seeds"]}
    diffs = [{"seed": s["seed"], "top1": s["top1"] - by_seed[s["seed"]]["top1"],
              "few": s["few"] - by_seed[s["seed"]]["few"]} for s in rows["seeds"]
             if s["seed"] in by_seed]
    return {"seeds": diffs, "below": sum(d["top1"] < 0 for d in diffs), "n": len(diffs),
            "top1": float(np.mean([d["top1"] for d in diffs])) if diffs else float("nan"),
            "few": float(np.mean([d["few"] for d in diffs])) if diffs else float("nan")}


def margins(per_schedule: Dict, fair: Dict, schedules: List[float]) -> Dict:
    """Every row minus the baseline, per seed (overall and few top-1): each at its fair
    schedule, and at every schedule; and each -TDE row minus the same model without TDE."""
    out = {"fair": {}, "per_schedule": {}, "tde_vs_plain": {}}
    if "baseline" in fair:
        for label in fair:
            if label == "baseline":
                continue
            out["fair"][label] = _margin(fair[label], fair["baseline"])
            out["per_schedule"][label] = {x: _margin(per_schedule[label][x],
                                                     per_schedule["baseline"][x])
                                          for x in schedules if x in per_schedule[label]
                                          and x in per_schedule["baseline"]}
    for label in fair:
        if "-TDE" in label:
            plain = label.replace("-TDE", "")
            out["tde_vs_plain"][label] = {x: _margin(per_schedule[label][x],
                                                     per_schedule[plain][x])
                                          for x in schedules if x in per_schedule[label]}
    return out


def _cell(s: Dict) -> str:
    return f"{s['mean']:.2f} ± {s['std']:.2f}"


def _table(rows: Dict, file, first: str = "", schedule: bool = False) -> None:
    head = [first, *(["schedule"] if schedule else []), "many", "medium", "few", "overall",
            "alpha (val)", "val top-1"]
    print("| " + " | ".join(head) + " |", file=file)
    print("|" + "|".join(["---"] * len(head)) + "|", file=file)
    for label, r in rows.items():
        sched = [f"{r['schedule']:g}x ({r['max_iter']} it)" + ("" if r["saturated"] else " *")] \
            if schedule else []
        alpha = _cell(r["alpha"]) if "-TDE" in label else ""
        print("| " + " | ".join([label, *sched, *(_cell(r[m]) for m in METRICS), alpha,
                                 _cell(r["val_top1"])]) + " |", file=file)


def report(result: Dict, file=sys.stdout) -> None:
    s = result["summary"]
    print(f"\n{result['dataset']}: test top-1 (%), mean ± std over seeds {result['seeds']}; "
          f"groups by training count (many > {result['many_threshold']}, few < "
          f"{result['few_threshold']}); schedules: multiples of {result['base_iters']} "
          f"iterations, each its own cosine run", file=file)
    print("\nAt the fair schedule (best mean val top-1; * = the longest tried, may not be "
          "saturated):", file=file)
    _table(s["fair"], file, schedule=True)
    for x in result["schedules"]:
        rows = {label: per[x] for label, per in s["per_schedule"].items() if x in per}
        if not rows:
            continue
        print(f"\nSchedule {x:g}x ({next(iter(rows.values()))['max_iter']} iterations):",
              file=file)
        _table(rows, file)
    m = s["margins"]
    if m["fair"]:
        print("\nMargin over the baseline, each at its fair schedule (overall / few; per seed):",
              file=file)
        for label, d in m["fair"].items():
            seeds = ", ".join(f"s{e['seed']} {e['top1']:+.1f} / {e['few']:+.1f}"
                              for e in d["seeds"])
            print(f"- {label}: {d['top1']:+.2f} / {d['few']:+.2f} ({seeds}); below the baseline "
                  f"in {d['below']} of {d['n']} seeds", file=file)
        print("\nMargin over the baseline at the same schedule (overall / few, mean; seeds "
              "below):", file=file)
        for label, per in m["per_schedule"].items():
            cells = "; ".join(f"{x:g}x {d['top1']:+.2f} / {d['few']:+.2f} ({d['below']}/{d['n']})"
                              for x, d in per.items())
            print(f"- {label}: {cells}", file=file)
    if m["tde_vs_plain"]:
        print("\nTDE minus the same model without TDE (overall / few, mean; seeds below):",
              file=file)
        for label, per in m["tde_vs_plain"].items():
            cells = "; ".join(f"{x:g}x {d['top1']:+.2f} / {d['few']:+.2f} ({d['below']}/{d['n']})"
                              for x, d in per.items())
            print(f"- {label}: {cells}", file=file)
    for label, a in s["ablation"].items():
        print(f"\nHead-direction ablation at test time, {label} at {a['schedule']:g}x (the same "
              f"trained models; alpha chosen on val per direction; cos = per-head cosine with "
              f"x_bar):", file=file)
        head = ["direction", "many", "medium", "few", "overall", "alpha (val)", "cos with x_bar"]
        print("| " + " | ".join(head) + " |", file=file)
        print("|" + "|".join(["---"] * len(head)) + "|", file=file)
        for d, r in a["directions"].items():
            cos = " / ".join(f"{c:.3f}" for c in r["cos_with_ema"])
            print("| " + " | ".join([d, *(_cell(r[k]) for k in METRICS), _cell(r["alpha"]),
                                     cos]) + " |", file=file)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_alpha(runs: List[Dict], summary: Dict, path: str) -> None:
    """Fig. 4 style: mean test accuracy per group vs alpha, each TDE row at its fair schedule."""
    rows = [(label, a["schedule"]) for label, a in summary["ablation"].items()]
    if not rows:
        return
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.4), squeeze=False,
                             sharey=True)
    for ax, (label, x) in zip(axes[0], rows):
        method = next(m for m, (n, s) in LABELS.items() if f"{n}-TDE{s}" == label)
        mine = [r["directions"]["ema"] for r in runs if r["method"] == method
                and r["multiple"] == x]
        alphas = [row["alpha"] for row in mine[0]["test"]]
        for m, name in zip(METRICS, ("many", "medium", "few", "overall")):
            ys = np.array([[row[m] for row in e["test"]] for e in mine])
            ax.plot(alphas, ys.mean(0), label=name)
        for e in mine:
            ax.axvline(e["alpha_val"], color="grey", lw=0.6, ls=":")
        ax.set_title(f"{label}, {x:g}x (test, {len(mine)} seeds)", fontsize=9)
        ax.set_xlabel("alpha (dotted: chosen on val)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("top-1 accuracy (%)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_schedules(result: Dict, path: str) -> None:
    """Overall and few-shot test top-1 vs training iterations per row; the direction ablation."""
    s = result["summary"]
    plt = _pyplot()
    panels = 3 if s["ablation"] else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.4 * panels, 3.6), squeeze=False)
    for ax, metric, title in zip(axes[0], ("top1", "few"), ("overall", "few-shot")):
        for label, per in s["per_schedule"].items():
            have = [x for x in result["schedules"] if x in per]
            ax.errorbar([per[x]["max_iter"] for x in have], [per[x][metric]["mean"] for x in have],
                        yerr=[per[x][metric]["std"] for x in have],
                        label=label, marker="o", capsize=2, lw=1)
        ax.set_xlabel("training iterations (each its own cosine run)")
        ax.set_title(f"{title} test top-1 (mean ± std)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    if s["ablation"]:
        ax = axes[0][2]
        label, a = next(iter(s["ablation"].items()))
        names = list(a["directions"])
        pos = np.arange(len(names))
        for k, (metric, name) in enumerate((("top1", "overall"), ("few", "few"))):
            ax.bar(pos + 0.4 * k, [a["directions"][d][metric]["mean"] for d in names], 0.4,
                   yerr=[a["directions"][d][metric]["std"] for d in names], label=name)
        ax.set_xticks(pos + 0.2)
        ax.set_xticklabels(names, fontsize=8)
        ax.set_title(f"{label} at {a['schedule']:g}x: test-time direction", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
