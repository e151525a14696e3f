"""tools/train_net.py end to end on a tiny LVIS-format dataset with a tiny TDE Cascade Mask
R-CNN (CPU): training, checkpointed head directions, eval-only with the LVIS evaluator, TDE
switched off at test time, and --resume."""
import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from detectron2.engine import DefaultTrainer
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg

from tde_det import add_tde_config
from tde_det.data.detection.synthetic import write_tiny_lvis
from tde_det.engine import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "TinyLVIS/cascade_R_18_tde.yaml")
LVIS_METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"]


def tiny_overrides(paths, output_dir, max_iter=4):
    """configs/TinyLVIS/cascade_R_18_tde.yaml (a tiny R-18-FPN TDE Cascade Mask R-CNN) on the
    test's own copy of the tiny dataset, for a few iterations."""
    return [
        "DATASETS.LVIS_CUSTOM.NAMES", "('e2e_lvis_train', 'e2e_lvis_val')",
        "DATASETS.LVIS_CUSTOM.JSON_FILES", f"('{paths['train']}', '{paths['val']}')",
        "DATASETS.LVIS_CUSTOM.IMAGE_ROOTS", f"('{paths['image_root']}', '{paths['image_root']}')",
        "DATASETS.TRAIN", "('e2e_lvis_train',)", "DATASETS.TEST", "('e2e_lvis_val',)",
        "SOLVER.MAX_ITER", str(max_iter), "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.CHECKPOINT_PERIOD", "2", "OUTPUT_DIR", output_dir,
    ]


def train_net(*args, timeout=300):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py"),
                           "--config-file", CONFIG, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, OMP_NUM_THREADS="1"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def lvis_results(log: str):
    """{task: {metric: value}} from the 'copypaste' lines Detectron2 prints after evaluation."""
    results, task = {}, None
    lines = [ln.split("copypaste: ", 1)[1] for ln in log.splitlines() if "copypaste: " in ln]
    for i, line in enumerate(lines):
        m = re.match(r"Task: (\w+)", line)
        if m:
            task = m.group(1)
            names, values = lines[i + 1].split(","), lines[i + 2].split(",")
            results[task] = dict(zip(names, map(float, values)))
    return results


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    paths = write_tiny_lvis(str(root / "data"), num_train=8, num_val=4)
    out = str(root / "train")
    # Training only (the evaluation runs in the eval-only tests).
    log = train_net(*tiny_overrides(paths, out), "DATASETS.TEST", "()")
    return paths, out, log


def test_training_checkpoints_three_finite_head_directions(trained):
    _, out, log = trained
    assert "TDECascadeROIHeads" in log
    state = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu",
                       weights_only=False)["model"]
    emas = sorted(k for k in state if k.endswith("head_direction.ema"))
    assert emas == [f"roi_heads.box_predictor.{s}.head_direction.ema" for s in range(3)]
    for k in emas:
        assert torch.isfinite(state[k]).all() and state[k].abs().sum() > 0
    assert not torch.equal(state[emas[0]], state[emas[1]])  # one EMA per stage
    with open(os.path.join(out, "metrics.json")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    logged = {k for r in records for k in r}
    for s in range(3):
        assert f"tde/stage{s}/ema_norm" in logged and f"tde/stage{s}/fg_cos" in logged
        assert f"tde/stage{s}/direction_cos_prev" in logged
    # LOG_PERIOD 2 (the tiny config): put at iterations 1 and 3, written by Detectron2's writer
    # (every 20 iterations and the last) with the latest value
    assert [r["iteration"] for r in records if "tde/stage0/ema_norm" in r] == [3]
    # ... and printed to the console, as the README says
    console = [ln for ln in log.splitlines() if "tde/stage2/ema_norm: " in ln]
    assert len(console) == 2 and "iter: 3 " in console[1] and "tde/stage0/fg_cos: " in console[1]


def test_eval_only_reports_every_lvis_metric(trained):
    paths, out, _ = trained
    log = train_net("--eval-only", *tiny_overrides(paths, out + "_eval"), "MODEL.WEIGHTS",
                    os.path.join(out, "model_final.pth"))
    results = lvis_results(log)
    assert set(results) == {"bbox", "segm"}, log[-3000:]
    assert "Loading from" in log  # the checkpointer's line (see the misspelt-split test)
    for task in ("bbox", "segm"):
        assert list(results[task]) == LVIS_METRICS
        # Detectron2 0.6 reports -100 for a group without ground truth (LVIS's -1, x 100).
        assert all(math.isfinite(v) and (0 <= v <= 100 or v == -100)
                   for v in results[task].values()), results
        assert 0 <= results[task]["AP"] <= 100 and 0 <= results[task]["APf"] <= 100
    # per task, the per-class AP files beside the predictions, whose rows give the headline
    folder = os.path.join(out + "_eval", "inference")
    categories = sorted(json.load(open(paths["val"]))["categories"], key=lambda c: c["id"])
    for task in ("bbox", "segm"):
        with open(os.path.join(folder, f"per_class_{task}.csv")) as f:
            rows = list(csv.DictReader(f))
        assert [(int(r["id"]), r["name"], r["frequency"]) for r in rows] == [
            (c["id"], c["name"], c["frequency"]) for c in categories]
        for metric, groups in (("AP", "rcf"), ("APr", "r"), ("APc", "c"), ("APf", "f")):
            values = [float(r["AP"]) for r in rows if r["frequency"] in groups and r["AP"]]
            assert values or results[task][metric] == -100, metric  # LVIS's -1: no class
            if values:  # the copypaste lines have four decimals
                assert abs(sum(values) / len(values) - results[task][metric]) < 1e-4, metric
        assert os.path.isfile(os.path.join(folder, f"per_class_{task}.png"))
        assert f"Wrote the per-class {task} AP of {len(categories)} categories" in log


def test_eval_only_refuses_a_misspelt_test_split_before_loading_anything(trained, tmp_path):
    paths, out, _ = trained
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py"),
                           "--config-file", CONFIG, "--eval-only",
                           *tiny_overrides(paths, str(tmp_path / "eval")), "DATASETS.TEST",
                           "('e2e_lvis_vall',)", "MODEL.WEIGHTS",
                           os.path.join(out, "model_final.pth")],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "DATASETS.TEST: 'e2e_lvis_vall' is not a registered dataset; did you mean " \
           "'e2e_lvis_val'" in log
    assert "Loading from" not in log  # the checkpointer's line: no weights were loaded


def test_eval_only_refuses_plain_detectron2_weights_with_tde(trained, tmp_path):
    """A stock CascadeROIHeads checkpoint has no head directions: with TDE on, eq. 8 would be
    eq. 7 under TDE's name; the error names MODEL.WEIGHTS and the buffers, before any image."""
    paths, _, _ = trained
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(CONFIG)
    cfg.MODEL.ROI_HEADS.NAME = "CascadeROIHeads"
    DetectionCheckpointer(Trainer.build_model(cfg), save_dir=str(tmp_path)).save("plain")
    weights = str(tmp_path / "plain.pth")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py"),
                           "--config-file", CONFIG, "--eval-only",
                           *tiny_overrides(paths, str(tmp_path / "eval")), "MODEL.WEIGHTS",
                           weights], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert f"RuntimeError: MODEL.WEIGHTS {weights!r} has no head direction" in log
    assert "missing from the checkpoint: " + ", ".join(
        f"roi_heads.box_predictor.{s}.head_direction.ema" for s in range(3)) in log
    assert "Start inference" not in log


TTA = ["TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "(48, 64)", "TEST.AUG.MAX_SIZE", "200"]


def test_test_time_augmentation_in_eval_only_and_after_training(trained, tmp_path):
    """TEST.AUG as in Detectron2's tools/train_net.py: the plain evaluation, then the one with
    GeneralizedRCNNWithTTA over the TDE heads (its own results and files); after training, its
    metrics reach metrics.json."""
    paths, out, _ = trained
    log = train_net("--eval-only", *tiny_overrides(paths, str(tmp_path / "eval")), *TTA,
                    "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"))
    tasks = [ln.split("copypaste: Task: ")[1] for ln in log.splitlines() if "Task: " in ln]
    assert tasks == ["bbox", "segm", "bbox", "segm"], log[-3000:]
    assert "Evaluating with test-time augmentation" in log
    assert os.path.isfile(str(tmp_path / "eval" / "inference_TTA" / "e2e_lvis_val" /
                              "lvis_instances_results.json"))
    train_net(*tiny_overrides(paths, str(tmp_path / "train"), max_iter=2), *TTA)
    with open(tmp_path / "train" / "metrics.json") as f:
        last = [json.loads(line) for line in f if line.strip()][-1]
    for task in ("bbox_TTA", "segm_TTA", "bbox", "segm"):
        assert math.isfinite(last[f"{task}/AP"]), last
    # what was evaluated, beside the AP (True: 1.0)
    assert {k: v for k, v in last.items() if k.startswith("eval/")} == {
        "eval/MODEL.TDE.ALPHA": 1.5, "eval/MODEL.TDE.TEST_TDE": 1.0,
        "eval/MODEL.TDE.BACKGROUND_EXEMPTED": 1.0}


def test_tde_off_and_alpha_zero_give_the_same_deconfound_scores(trained):
    paths, out, _ = trained
    weights = ["MODEL.WEIGHTS", os.path.join(out, "model_final.pth")]
    off_log = train_net("--eval-only", *tiny_overrides(paths, out + "_off"), *weights,
                        "MODEL.TDE.TEST_TDE", "False")
    zero_log = train_net("--eval-only", *tiny_overrides(paths, out + "_zero"), *weights,
                         "MODEL.TDE.ALPHA", "0.0")
    off, zero = lvis_results(off_log), lvis_results(zero_log)
    assert off and off == zero
    # the logs say what was evaluated (the model's settings, after the results)
    assert "Evaluated with MODEL.TDE.ALPHA 1.5, MODEL.TDE.TEST_TDE False, " \
        "MODEL.TDE.BACKGROUND_EXEMPTED True" in off_log
    assert "Evaluated with MODEL.TDE.ALPHA 0.0, MODEL.TDE.TEST_TDE True, " \
        "MODEL.TDE.BACKGROUND_EXEMPTED True" in zero_log
    with open(os.path.join(out + "_off", "inference", "lvis_instances_results.json")) as f:
        a = json.load(f)
    with open(os.path.join(out + "_zero", "inference", "lvis_instances_results.json")) as f:
        b = json.load(f)
    assert len(a) > 0 and [d["score"] for d in a] == [d["score"] for d in b]
    # ... and TDE on (alpha 1.5 of the config) does change them: the head directions were
    # loaded from MODEL.WEIGHTS (a zero x_bar would make TDE a no-op).
    train_net("--eval-only", *tiny_overrides(paths, out + "_on"), *weights)
    with open(os.path.join(out + "_on", "inference", "lvis_instances_results.json")) as f:
        on = json.load(f)
    assert [d["score"] for d in on] != [d["score"] for d in a]


def test_resume_continues_and_restores_the_head_directions(trained, tmp_path):
    paths, out, _ = trained
    resumed = str(tmp_path / "resumed")
    shutil.copytree(out, resumed)
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(tiny_overrides(paths, resumed))
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model, save_dir=resumed).resume_or_load("", resume=True)
    saved = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu",
                       weights_only=False)
    for s in range(3):
        assert torch.equal(model.roi_heads.box_predictor[s].head_direction.ema,
                           saved["model"][f"roi_heads.box_predictor.{s}.head_direction.ema"])
    log = train_net("--resume", *tiny_overrides(paths, resumed, max_iter=6), "DATASETS.TEST", "()")
    assert "Starting training from iteration 4" in log
    final = torch.load(os.path.join(resumed, "model_final.pth"), map_location="cpu",
                       weights_only=False)
    assert final["iteration"] == 5


def test_resume_refuses_a_changed_model_before_overwriting_its_config(trained, tmp_path):
    """--resume with another FC_DIM would re-initialise the box heads and head directions and go
    on from the saved iteration: an error listing the changed keys (test-time ones are not)."""
    paths, out, _ = trained
    resumed = str(tmp_path / "resumed")
    shutil.copytree(out, resumed)
    with open(os.path.join(resumed, "config.yaml")) as f:
        saved_config = f.read()
    changed = [*tiny_overrides(paths, resumed, max_iter=5), "DATASETS.TEST", "()",
               "MODEL.ROI_BOX_HEAD.FC_DIM", "32", "MODEL.TDE.ALPHA", "1.0"]
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py"),
                           "--config-file", CONFIG, "--resume", *changed], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert f"--resume: the model differs from the one saved in {resumed} (its config.yaml, " \
           f"saved -> now): MODEL.ROI_BOX_HEAD.FC_DIM: 64 -> 32. " in log
    assert "RESUME_ALLOW_MODEL_CHANGE True" in log and "Starting training" not in log
    with open(os.path.join(resumed, "config.yaml")) as f:
        assert f.read() == saved_config  # not overwritten by default_setup
    log = train_net("--resume", *changed, "RESUME_ALLOW_MODEL_CHANGE", "True")
    assert "--resume with a changed model (RESUME_ALLOW_MODEL_CHANGE): " \
           "MODEL.ROI_BOX_HEAD.FC_DIM: 64 -> 32" in log
    assert "Starting training from iteration 4" in log
    if "state_dict" in vars(DefaultTrainer):  # a Detectron2 that saves the optimizer's state
        assert "optimizer state (momentum buffers) does not fit the model's parameters" in log


# K above what 4 images give any class (64 proposals each): every class is short of it
AP_FIXED = ["TEST.AP_FIXED.ENABLED", "True", "TEST.AP_FIXED.DETS_PER_CLASS", "400"]


def test_eval_only_reports_ap_fixed_beside_unchanged_standard_metrics(trained, tmp_path):
    """--eval-only with TEST.AP_FIXED.ENABLED: AP-fixed and its r/c/f parts in the copypaste
    lines and metrics.json, the classes short of K logged, and the standard results (metrics
    and detections) those of the run without it."""
    paths, out, _ = trained
    weights = ["MODEL.WEIGHTS", os.path.join(out, "model_final.pth")]
    plain = train_net("--eval-only", *tiny_overrides(paths, str(tmp_path / "plain")), *weights)
    log = train_net("--eval-only", *tiny_overrides(paths, str(tmp_path / "fixed")), *weights,
                    *AP_FIXED)
    results, standard = lvis_results(log), lvis_results(plain)
    assert {t: results[t] for t in ("bbox", "segm")} == standard
    names = ["AP-fixed", "APr-fixed", "APc-fixed", "APf-fixed"]
    for task in ("bbox", "segm"):
        assert list(results[f"{task}_fixed"]) == names, log[-3000:]
    assert "AP-fixed: 6 of 6 classes have fewer than K = 400 detections over the split" in log
    with open(tmp_path / "fixed" / "metrics.json") as f:
        row = json.loads(f.read().splitlines()[-1])
    for task in ("bbox", "segm"):
        for name in names:
            assert abs(row[f"{task}/{name}"] - results[f"{task}_fixed"][name]) < 1e-3
            assert math.isfinite(row[f"{task}/{name}"])
        assert row[f"{task}/AP"] == pytest.approx(standard[task]["AP"], abs=1e-3)
    inference = tmp_path / "fixed" / "inference"
    with open(inference / "lvis_instances_results.json") as f, \
            open(tmp_path / "plain" / "inference" / "lvis_instances_results.json") as g:
        assert json.load(f) == json.load(g)
    with open(inference / "lvis_ap_fixed_results.json") as f:
        fixed = json.load(f)
    per_class = {}
    for d in fixed:
        per_class[d["category_id"]] = per_class.get(d["category_id"], 0) + 1
    # fewer than 300 per image here: AP-fixed keeps every detection (the heap: its own tests)
    assert fixed and max(per_class.values()) <= 400
    # the per-class files get an AP-fixed column whose group means are the headline's
    for task in ("bbox", "segm"):
        with open(inference / f"per_class_{task}.csv") as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0])[-1] == "AP-fixed"
        for group in "rcf":
            values = [float(r["AP-fixed"]) for r in rows
                      if r["frequency"] == group and r["AP-fixed"] != ""]
            expected = results[f"{task}_fixed"][f"AP{group}-fixed"]
            assert sum(values) / len(values) == pytest.approx(expected, abs=1e-3)


def test_evaluation_during_training_reports_ap_fixed(trained, tmp_path):
    """The evaluation after training (Trainer.test from the EvalHook) wraps the model too: its
    AP-fixed reaches metrics.json beside the AP."""
    paths, _, _ = trained
    log = train_net(*tiny_overrides(paths, str(tmp_path / "train"), max_iter=2), *AP_FIXED)
    assert "copypaste: Task: segm_fixed" in log
    with open(tmp_path / "train" / "metrics.json") as f:
        last = [json.loads(line) for line in f if line.strip()][-1]
    for task in ("bbox", "segm"):
        assert math.isfinite(last[f"{task}/AP-fixed"]) and math.isfinite(last[f"{task}/AP"])
