"""The diagnostics' pictures at LVIS scale: per-class panels binned by training frequency."""
import numpy as np

from tde_det.evaluation.diagnostic_plots import frequency_bins, plot_per_class


def lvis_like_rows(frequent=405, common=461, rare=337, seed=0):
    """Rows as tools/diagnose.py writes them for an LVIS v1-sized detector (1,203 classes),
    sorted by training images; some classes without AP (not in the evaluated images)."""
    rng = np.random.default_rng(seed)
    groups = ["f"] * frequent + ["c"] * common + ["r"] * rare
    rows = []
    for rank, group in enumerate(groups):
        ap = float(rng.uniform(0, 40)) if rng.random() > 0.1 else float("nan")
        rows.append({"rank": rank, "frequency": group, "feature_norm": float(rng.normal(30, 3)),
                     "cos_head_direction": float(rng.uniform(0.5, 0.9)),
                     "weight_norm": float(rng.normal(0.6, 0.05)), "segm_AP_no_tde": ap,
                     "segm_AP_tde_alpha_1.5": ap + 1})
    return rows


def test_bins_follow_ranks_and_never_cross_a_frequency_group():
    groups = [r["frequency"] for r in lvis_like_rows()]
    bins = frequency_bins(groups, max_bins=48)
    assert 40 <= len(bins) <= 51  # about 48, a few more where a group's run is cut
    assert bins[0][0] == 0 and bins[-1][1] == 1203
    assert all(a[1] == b[0] for a, b in zip(bins, bins[1:]))  # every rank once, in order
    assert all(len(set(groups[a:b])) == 1 for a, b in bins)
    assert max(b - a for a, b in bins) <= 26
    # few classes: one bin each
    assert frequency_bins(["many"] * 3 + ["few"] * 2) == [(i, i + 1) for i in range(5)]


def test_per_class_picture_of_1203_classes(tmp_path):
    path = tmp_path / "per_class.png"
    plot_per_class(lvis_like_rows(), str(path), "segm_AP_no_tde", "segm_AP_tde_alpha_1.5",
                   "frequency")
    assert path.stat().st_size > 10000
