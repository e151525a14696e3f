"""tools/sweep_alpha.py: one inference pass, and every alpha equals eval-only with that alpha."""
import json
import os
import subprocess
import sys

import pytest
from detectron2.utils import comm
from tests.helpers.tools import REPO, load_tool, lvis_overrides

from tde_det.data.classification.synthetic import write_cifar_pickles
from tde_det.engine import Trainer
from tde_det.evaluation import RecordsLVISEvaluator
from tde_det.evaluation import alpha_sweep
from tde_det.evaluation.detection_alpha_sweep import (
    DetectionAlphaSweep,
    EvaluatorsSharingGroundTruth,
    parallel_evaluation_workers,
    sweep_detection,
)

ALPHAS = [0.0, 0.5, 1.5]


def test_detection_sweep_equals_eval_only_and_runs_the_network_once(tiny_detector, tmp_path):
    cfg, model = tiny_detector[:2]
    calls, mask_rows = [], []
    original = model.backbone.forward
    model.backbone.forward = lambda x: calls.append(len(x)) or original(x)
    layers = model.roi_heads.mask_head.layers
    model.roi_heads.mask_head.layers = lambda x: mask_rows.append(len(x)) or layers(x)
    try:
        # as tools/sweep_alpha.py builds them: one parse of the json, shared
        sweep = DetectionAlphaSweep(model, ALPHAS, EvaluatorsSharingGroundTruth(
            lambda folder: Trainer.build_evaluator(cfg, "tools_lvis_val", folder),
            lambda a: str(tmp_path / f"sweep_{a}")))
        for batch in Trainer.build_test_loader(cfg, "tools_lvis_val"):
            sweep.process(batch)
    finally:
        del model.backbone.forward
        del model.roi_heads.mask_head.layers
    assert sum(calls) == 4  # 4 validation images, one backbone pass each for all alphas
    # the mask head ran on each distinct box once, in batches of at most one alpha's
    # detections: fewer rows than the distinct (box, class) pairs, fewer than all detections
    assert sum(mask_rows) == sweep.mask_rows < sweep.distinct < sweep.detections
    assert max(mask_rows) <= model.roi_heads.box_predictor[-1].test_topk_per_image
    # LVIS: the evaluators took json records, each distinct mask encoded once and shared
    predictions = [sweep.evaluators[a]._predictions for a in ALPHAS]
    assert all(isinstance(sweep.evaluators[a], RecordsLVISEvaluator) for a in ALPHAS)
    assert len({id(sweep.evaluators[a]._lvis_api) for a in ALPHAS}) == 1
    shared = [{id(r["segmentation"]) for p in preds for r in p["instances"]}
              for preds in predictions]
    assert shared[0] & shared[1] and shared[1] & shared[2]
    swept = sweep.evaluate(workers=2)  # two alphas at once, in forked processes
    predictors = model.roi_heads.box_predictor
    for alpha in ALPHAS:
        for p in predictors:
            p.alpha = alpha
        c = cfg.clone()
        c.defrost()
        c.OUTPUT_DIR, c.DATASETS.TEST = str(tmp_path / f"eval_{alpha}"), ("tools_lvis_val",)
        assert swept[alpha] == Trainer.test(c, model), alpha
        detections = json.load(open(tmp_path / f"sweep_{alpha}" / "lvis_instances_results.json"))
        again = json.load(open(tmp_path / f"eval_{alpha}" / "inference"
                               / "lvis_instances_results.json"))
        assert detections == again and len(detections) > 0
    for p in predictors:
        p.alpha = 1.5
    scores = {a: [d["score"] for d in json.load(open(tmp_path / f"sweep_{a}" /
                                                     "lvis_instances_results.json"))]
              for a in ALPHAS}
    assert scores[0.0] != scores[1.5]  # alpha matters, so the equality above could fail


def test_a_repeated_alpha_is_evaluated_and_reported_once(tiny_detector, tmp_path,
                                                         progress_log):
    """--alphas 0.5 0.5 1.5 0.5: one row per alpha, each equal to eval-only with that alpha, in
    one pass and in one pass per alpha."""
    cfg, model = tiny_detector[:2]
    given = [0.5, 0.5, 1.5, 0.5]
    assert DetectionAlphaSweep(model, given, lambda a: LVISEvaluatorStub()).alphas == [0.5, 1.5]
    rows = {per_pass: sweep_detection(
        model, Trainer.build_test_loader(cfg, "tools_lvis_val"),
        lambda folder: Trainer.build_evaluator(cfg, "tools_lvis_val", folder), given,
        str(tmp_path), alphas_per_pass=per_pass, dataset="tools_lvis_val")
        for per_pass in (0, 1)}
    assert rows[0] == rows[1] and [r["alpha"] for r in rows[0]] == [0.5, 1.5]
    # the inference passes log their progress, as Detectron2's inference does
    done = [m.split(": inference done ")[1].split(".")[0] for m in progress_log
            if "inference done" in m]
    assert done == ["1/4", "2/4", "3/4", "4/4"] * 3  # one pass, then two passes
    assert "alpha sweep on tools_lvis_val, pass 2 of 2: inference done 4/4." in progress_log[-2]
    assert "ETA=0:00:00" in progress_log[-2] and "total inference time" in progress_log[-1]
    predictors = model.roi_heads.box_predictor
    try:
        for row in rows[0]:
            for p in predictors:
                p.alpha = row["alpha"]
            c = cfg.clone()
            c.defrost()
            c.OUTPUT_DIR, c.DATASETS.TEST = str(tmp_path / f"eval_{row['alpha']}"), \
                ("tools_lvis_val",)
            expected = {f"{task}/{k}": float(v) for task, metrics in Trainer.test(c, model).items()
                        for k, v in metrics.items()}
            assert row == {"alpha": row["alpha"], **expected}
            # each alpha's per-class files (and no predictions: not asked for), equal to
            # eval-only's
            swept = tmp_path / f"alpha_{row['alpha']:g}"
            assert {p.name for p in swept.iterdir()} == {
                f"per_class_{t}.{e}" for t in ("bbox", "segm") for e in ("csv", "json", "png")}
            for task in ("bbox", "segm"):
                assert (swept / f"per_class_{task}.json").read_text() == (
                    tmp_path / f"eval_{row['alpha']}" / "inference" / f"per_class_{task}.json"
                ).read_text()
    finally:
        for p in predictors:
            p.alpha = 1.5
    # alpha matters here (which metric moves depends on how the tiny detector trained)
    assert any(rows[0][0][k] != rows[0][1][k] for k in rows[0][0] if k != "alpha")


class LVISEvaluatorStub:
    def reset(self):
        pass


def test_parallel_evaluation_workers(monkeypatch):
    assert parallel_evaluation_workers(4, 10) == 4
    assert parallel_evaluation_workers(16, 3) == 3  # one per alpha at most
    assert parallel_evaluation_workers(1, 3) == 1
    with pytest.raises(ValueError, match="evaluation workers.*0"):
        parallel_evaluation_workers(0, 3)
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    assert parallel_evaluation_workers(4, 10) == 1  # evaluators gather over the processes


def test_bad_sweeps_are_refused(tiny_detector):
    model = tiny_detector[1]
    with pytest.raises(ValueError, match="alpha"):
        DetectionAlphaSweep(model, [-1.0], lambda a: None)
    with pytest.raises(ValueError, match="no alpha"):
        DetectionAlphaSweep(model, [], lambda a: None)


def test_cli_on_a_classifier_writes_table_files_and_best_alpha(tmp_path):
    write_cifar_pickles(str(tmp_path / "data"), "cifar10", per_class=60, test_per_class=6)
    common = ["--config-file", os.path.join(REPO, "configs", "CIFAR-LT/cifar10_r10_tde.yaml"),
              "MODEL.DEVICE", "cpu", "MODEL.CIFAR_RESNET.DEPTH", "8", "SOLVER.IMS_PER_BATCH",
              "16", "SOLVER.MAX_ITER", "3", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()",
              "DATALOADER.NUM_WORKERS", "0", "DATASETS.TEST", "()",
              "TEST.CLASSIFICATION.MANY_THRESHOLD", "40", "TEST.CLASSIFICATION.FEW_THRESHOLD",
              "15", "OUTPUT_DIR", str(tmp_path / "out")]
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "data"), OMP_NUM_THREADS="1")
    run = lambda tool, *a: subprocess.run(  # noqa: E731
        [sys.executable, os.path.join(REPO, "tools", tool), *a], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=300)
    train = run("train_net.py", *common)
    assert train.returncode == 0, train.stderr[-3000:]
    record = {n: (tmp_path / "out" / n).read_text() for n in ("config.yaml", "log.txt")}
    proc = run("sweep_alpha.py", *common, "MODEL.WEIGHTS", str(tmp_path / "out" /
                                                               "model_final.pth"),
               "--dataset", "cifar10_lt_r10_test", "--alphas", "0", "1", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best alpha on cifar10_lt_r10_test by top1" in proc.stdout
    assert "MODEL.TDE.ALPHA" in proc.stdout
    # OUTPUT_DIR holds the training run: the sweep writes to its own subfolder, and the run's
    # config.yaml and log.txt are as training left them
    assert {n: (tmp_path / "out" / n).read_text() for n in record} == record
    own = tmp_path / "out" / "sweep_alpha_model_final"
    assert "ALPHA" in (own / "config.yaml").read_text() and (own / "log.txt").is_file()
    assert "alpha was chosen on 'cifar10_lt_r10_test', named as a test split" \
        in proc.stdout + proc.stderr
    # the printed override pastes into train_net.py --eval-only (a whole-number alpha too)
    override = proc.stdout.split("to use it: ")[1].splitlines()[0].split()
    assert override[0] == "MODEL.TDE.ALPHA" and float(override[1]) in (0.0, 1.0, 2.0)
    evaluated = run("train_net.py", "--eval-only", *common, "MODEL.WEIGHTS",
                    str(tmp_path / "out" / "model_final.pth"), *override,
                    "DATASETS.TEST", "('cifar10_lt_r10_test',)")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    out = own / "cifar10_lt_r10_test"
    rows = json.loads((out / "alpha_sweep.json").read_text())
    assert [r["alpha"] for r in rows] == [0.0, 1.0, 2.0]
    header = (out / "alpha_sweep.csv").read_text().splitlines()[0].split(",")
    assert {"alpha", "top1", "many", "medium", "few"} <= set(header)
    assert (out / "alpha_sweep.png").stat().st_size > 1000


def test_detection_sweep_evaluates_with_tde_when_test_tde_is_off(tiny_detector, tmp_path):
    """Sweeping alpha means TDE on: with test_tde False (MODEL.TDE.TEST_TDE False) the row equals
    eval-only with TEST_TDE True, and test_tde is False again afterwards."""
    cfg, model = tiny_detector[:2]
    predictors = model.roi_heads.box_predictor
    c = cfg.clone()
    c.defrost()
    c.DATASETS.TEST = ("tools_lvis_val",)
    try:
        for p in predictors:
            p.test_tde, p.alpha = False, 1.5
        sweep = DetectionAlphaSweep(model, [1.5], lambda a: Trainer.build_evaluator(
            cfg, "tools_lvis_val", str(tmp_path / "sweep")))
        for batch in Trainer.build_test_loader(cfg, "tools_lvis_val"):
            sweep.process(batch)
        assert all(not p.test_tde for p in predictors)
        for p in predictors:
            p.test_tde = True
        c.OUTPUT_DIR = str(tmp_path / "eval")
        assert sweep.evaluate()[1.5] == Trainer.test(c, model)
    finally:
        for p in predictors:
            p.test_tde, p.alpha = True, 1.5


def test_a_dead_evaluation_process_is_an_error_not_a_hang(tiny_detector, tmp_path):
    cfg, model = tiny_detector[:2]

    class Dies:
        def reset(self):
            pass

        def process(self, inputs, outputs):
            pass

        def evaluate(self):
            os._exit(1)  # as the kernel's OOM killer would

    sweep = DetectionAlphaSweep(model, [0.5, 1.5], lambda a: Dies())
    with pytest.raises(RuntimeError, match="died.*--eval-workers, now 2"):
        sweep.evaluate(workers=2)


def test_detection_cli_in_several_passes_gives_the_same_rows(tiny_detector, tmp_path):
    """--alphas-per-pass 2 on 3 alphas: two inference passes (bounded memory), the same table
    as one pass; and a negative value is refused by name."""
    cfg, _, paths, weights = tiny_detector
    common = ["--config-file", os.path.join(REPO, "configs", "TinyLVIS/cascade_R_18_tde.yaml"),
              *lvis_overrides(paths), "MODEL.WEIGHTS", weights, "--alphas", "0", "0.5", "1.5",
              "--eval-workers", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, os.path.join(REPO, "tools", "sweep_alpha.py"), *common, *a], cwd=REPO,
        env=env, capture_output=True, text=True, timeout=300)
    rows = {}
    for per_pass in ("0", "2"):
        out = tmp_path / f"per_pass_{per_pass}"
        proc = run("--output", str(out), "--alphas-per-pass", per_pass,
                   "OUTPUT_DIR", str(tmp_path / "o"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert ("pass 2 of 2 over tools_lvis_val: alphas 1.5" in proc.stdout + proc.stderr) \
            == (per_pass == "2")
        assert "best alpha on tools_lvis_val by segm/AP" in proc.stdout
        # chosen on the split that eval-only reports: said so
        assert "alpha was chosen on 'tools_lvis_val', one of DATASETS.TEST" \
            in proc.stdout + proc.stderr
        assert "Loading" in proc.stdout + proc.stderr  # the weights and the json (see below)
        rows[per_pass] = json.loads((out / "tools_lvis_val" / "alpha_sweep.json").read_text())
    assert [r["alpha"] for r in rows["2"]] == [0.0, 0.5, 1.5]
    assert rows["2"] == rows["0"] and "segm/APr" in rows["0"][0]
    # the table files and each alpha's per-class AP files by default; each alpha's
    # predictions too with --save-predictions
    assert sorted(p.name for p in (out / "tools_lvis_val").iterdir()) == [
        "alpha_0", "alpha_0.5", "alpha_1.5", "alpha_sweep.csv", "alpha_sweep.json",
        "alpha_sweep.png"]
    per_class = {f"per_class_{t}.{e}" for t in ("bbox", "segm") for e in ("csv", "json", "png")}
    for alpha in ("0", "0.5", "1.5"):
        assert {p.name for p in (out / "tools_lvis_val" / f"alpha_{alpha}").iterdir()} \
            == per_class
    # the masks of each alpha's own detections (a flag, also after the overrides): same rows
    out = tmp_path / "per_alpha_masks"
    proc = run("--output", str(out), "OUTPUT_DIR", str(tmp_path / "o"), "--per-alpha-masks",
               "--save-predictions")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distinct boxes" not in proc.stdout + proc.stderr  # no sharing to report
    assert json.loads((out / "tools_lvis_val" / "alpha_sweep.json").read_text()) == rows["0"]
    for alpha in ("0", "0.5", "1.5"):
        saved = out / "tools_lvis_val" / f"alpha_{alpha}"
        assert (saved / "instances_predictions.pth").is_file()
        assert json.loads((saved / "lvis_instances_results.json").read_text())
        assert per_class <= {p.name for p in saved.iterdir()}
    bad = run("--alphas-per-pass", "-1")
    assert bad.returncode != 0 and "--alphas-per-pass must be >= 0" in bad.stderr
    # a metric no row would have is refused before the inference pass, not after it
    bad = run("--metric", "segm/APR", "OUTPUT_DIR", str(tmp_path / "o"))
    assert bad.returncode != 0 and "'APR' is not a LVIS metric of 'tools_lvis_val'" in bad.stderr
    assert "Loading" not in bad.stdout + bad.stderr  # neither the weights nor the json
    bad = run("--dataset", "tools_lvis_vall", "OUTPUT_DIR", str(tmp_path / "o"))
    assert bad.returncode != 0 and "--dataset: 'tools_lvis_vall' is not a registered dataset; " \
        "did you mean 'tools_lvis_val'" in bad.stderr
    assert "Loading" not in bad.stdout + bad.stderr


def test_metric_is_checked_against_the_columns_of_the_sweep(tiny_detector):
    from detectron2.data import MetadataCatalog

    tool = alpha_sweep
    cfg = tiny_detector[0].clone()
    MetadataCatalog.get("sweep_metric_coco").set(evaluator_type="coco")
    lvis = ["tools_lvis_val"]
    for metric in ("segm/AP", "segm/APr", "bbox/APf"):
        tool.check_metric(cfg, lvis, metric, classification=False)
    tool.check_metric(cfg, ["sweep_metric_coco"], "bbox/AP-person", classification=False)
    refused = [(lvis, "segm/APR", "'APR' is not a LVIS metric"),
               (lvis, "mask/AP", "task one of ('segm', 'bbox')"),
               (lvis, "AP", "must be <task>/<metric>"),
               (["sweep_metric_coco"], "bbox/APr", "'APr' is not a COCO metric")]
    for datasets, metric, message in refused:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            tool.check_metric(cfg, datasets, metric, classification=False)
    cfg.defrost()
    cfg.MODEL.MASK_ON = False
    with pytest.raises(ValueError, match="MODEL.MASK_ON False"):
        tool.check_metric(cfg, lvis, "segm/AP", classification=False)
    cfg.TEST.CLASSIFICATION.TOPK, cfg.MODEL.IMAGE_CLASSIFIER.NUM_CLASSES = 5, 3
    for metric in ("top1", "top3", "many", "medium", "few"):
        tool.check_metric(cfg, ["x"], metric, classification=True)
    for metric in ("top5", "accuracy", "segm/AP"):
        with pytest.raises(ValueError, match="not a column of a classifier's sweep"):
            tool.check_metric(cfg, ["x"], metric, classification=True)


def test_negative_evaluation_workers_are_refused_when_parsing(capsys):
    with pytest.raises(SystemExit):
        load_tool("sweep_alpha").parse_args(["--config-file", "c.yaml", "--eval-workers", "-2"])
    assert "--eval-workers must be >= 0" in capsys.readouterr().err


def test_other_evaluators_and_per_alpha_masks_give_the_same_detections(tiny_detector,
                                                                        tmp_path):
    """Plain LVISEvaluator (no process_records): each alpha's Instances through process(); and
    share_masks=False: the mask head on each alpha's own detections. Both give the json of the
    default (records, shared masks)."""
    from detectron2.evaluation import LVISEvaluator

    cfg, model = tiny_detector[:2]
    records = lambda a, name: Trainer.build_evaluator(  # noqa: E731
        cfg, "tools_lvis_val", str(tmp_path / f"{name}_{a}"))
    plain = lambda a, name: LVISEvaluator(  # noqa: E731
        "tools_lvis_val", ("bbox", "segm"), output_dir=str(tmp_path / f"{name}_{a}"),
        max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE)
    runs = {"records": (records, True), "plain": (plain, True), "per_alpha": (records, False)}
    results = {}
    for name, (make, share) in runs.items():
        sweep = DetectionAlphaSweep(model, ALPHAS, lambda a: make(a, name), share_masks=share)
        for batch in Trainer.build_test_loader(cfg, "tools_lvis_val"):
            sweep.process(batch)
        results[name] = sweep.evaluate(workers=1)
        if not share:
            assert sweep.mask_rows == sweep.detections  # every alpha's own detections
    assert results["plain"] == results["records"] == results["per_alpha"]
    for a in ALPHAS:
        files = {name: json.load(open(tmp_path / f"{name}_{a}" / "lvis_instances_results.json"))
                 for name in runs}
        assert files["plain"] == files["records"] == files["per_alpha"]
        assert len(files["records"]) > 0


def test_the_printed_override_merges_into_train_nets_config(tmp_path):
    """Every default alpha (whole numbers too) and awkward ones: the override the sweep prints
    is accepted by the config merge of tools/train_net.py and gives that alpha."""
    from detectron2.engine import default_argument_parser

    from tde_det.engine import setup
    from tde_det.evaluation.alpha_sweep import alpha_override

    tool = alpha_sweep
    args = default_argument_parser().parse_args([
        "--config-file", os.path.join(REPO, "configs", "lvis_cascade_tde.yaml"),
        "OUTPUT_DIR", str(tmp_path)])
    cfg = setup(args)  # as train_net.py builds it
    for alpha in [*tool.DEFAULT_ALPHAS, 1e-5, 0.1234567, 10]:
        for test_tde in (True, False):
            c = cfg.clone()
            c.defrost()
            c.MODEL.TDE.TEST_TDE = test_tde
            c.merge_from_list(alpha_override(c, alpha).split())
            assert c.MODEL.TDE.ALPHA == alpha and c.MODEL.TDE.TEST_TDE, alpha


def test_the_plot_marks_the_chosen_alpha_with_the_legend_off_the_curves():
    tool = alpha_sweep
    rows = [{"alpha": a, **{c: 20 + i - (a - 1.5) ** 2 for i, c in
                            enumerate(tool.DETECTION_COLUMNS)}} for a in (3, 0, 1.5, 0.5, 2)]
    best = {"alpha": 1.5, "segm/AP": 20.0}
    fig = tool.plot_sweep(rows, tool.DETECTION_COLUMNS, "lvis_v1_val", best, "segm/AP")
    ax = fig.axes[0]
    fig.canvas.draw()
    legend, box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= box.x1  # beside the axes, so on no curve
    chosen = [line for line in ax.get_lines() if line.get_label().startswith("chosen")]
    assert len(chosen) == 1 and list(chosen[0].get_xdata()) == [1.5]
    assert list(chosen[0].get_ydata()) == [20.0] and "alpha 1.5" in chosen[0].get_label()
    assert [line.get_xdata() for line in ax.get_lines()][0].tolist() == [0, 0.5, 1.5, 2, 3]
    assert any(list(line.get_xdata()) == [1.5, 1.5] for line in ax.get_lines())  # axvline
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_each_evaluators_log_is_labelled_with_its_alpha(tiny_detector, tmp_path):
    """The LVIS tables of the sweep's evaluators start with their alpha, also when they are
    evaluated in forked processes (which write to the same handlers)."""
    import logging

    cfg, model = tiny_detector[:2]
    log_file = tmp_path / "log.txt"
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(message)s"))
    target = logging.getLogger("tde_det")  # RecordsLVISEvaluator logs its tables there
    target.addHandler(handler)
    level = target.level
    target.setLevel(logging.INFO)
    try:
        for workers in (1, 2):
            sweep = DetectionAlphaSweep(model, [0.5, 1.5], lambda a: Trainer.build_evaluator(
                cfg, "tools_lvis_val", ""))
            for batch in Trainer.build_test_loader(cfg, "tools_lvis_val"):
                sweep.process(batch)
            sweep.evaluate(workers=workers)
            handler.flush()
            lines = [ln for ln in log_file.read_text().splitlines()
                     if "Evaluation results for" in ln]
            assert sorted(ln.split(" Evaluation")[0] for ln in lines) == \
                ["alpha 0.5:"] * 2 + ["alpha 1.5:"] * 2, (workers, lines)
            log_file.write_text("")
        logging.getLogger("tde_det.x").info("after the sweep")
        assert log_file.read_text().strip().endswith("after the sweep")  # no label left
    finally:
        target.removeHandler(handler)
        target.setLevel(level)
        handler.close()


def test_the_sweep_drives_the_model_without_changing_it(tiny_detector, monkeypatch):
    """A sweep's pass sets no attribute of a box predictor (no method patched, no alpha or
    test_tde switched and restored): the heads hand out each stage's z and B."""
    from tde_det.modeling.roi_heads import TDEFastRCNNOutputLayers

    cfg, model = tiny_detector[:2]
    assigned = []
    original = TDEFastRCNNOutputLayers.__setattr__
    monkeypatch.setattr(TDEFastRCNNOutputLayers, "__setattr__",
                        lambda self, name, value: assigned.append(name)
                        or original(self, name, value))
    outputs = []

    class Collects(LVISEvaluatorStub):
        def process(self, inputs, out):
            outputs.append(out)

    sweep = DetectionAlphaSweep(model, ALPHAS, lambda a: Collects(), share_masks=False)
    sweep.process(next(iter(Trainer.build_test_loader(cfg, "tools_lvis_val"))))
    assert len(outputs) == len(ALPHAS) and set(assigned) <= {"_checked_direction"}, assigned


def test_ap_fixed_per_alpha_equals_eval_only_at_that_alpha(tiny_detector, tmp_path):
    """TEST.AP_FIXED.ENABLED: each row has AP-fixed beside the standard metrics, all equal to
    eval-only (Trainer.test, which wraps the model in APFixedInference) at that alpha; K below
    what the split gives a class, so the per-class heaps evict."""
    cfg, model = tiny_detector[:2]
    cfg = cfg.clone()
    cfg.defrost()
    cfg.TEST.AP_FIXED.ENABLED, cfg.TEST.AP_FIXED.DETS_PER_CLASS = True, 30
    alphas = [0.0, 1.5]
    rows = sweep_detection(model, Trainer.build_test_loader(cfg, "tools_lvis_val"),
                           lambda folder: Trainer.build_evaluator(cfg, "tools_lvis_val", folder),
                           alphas, str(tmp_path), dataset="tools_lvis_val")
    predictors = model.roi_heads.box_predictor
    try:
        for row in rows:
            assert {f"{t}/{m}" for t in ("bbox", "segm") for m in
                    ("AP-fixed", "APr-fixed", "APc-fixed", "APf-fixed")} <= set(row)
            for p in predictors:
                p.alpha = row["alpha"]
            c = cfg.clone()
            c.OUTPUT_DIR, c.DATASETS.TEST = str(tmp_path / f"eval_{row['alpha']}"), \
                ("tools_lvis_val",)
            expected = {f"{task}/{k}": float(v) for task, metrics in Trainer.test(c, model).items()
                        for k, v in metrics.items()}
            assert row == {"alpha": row["alpha"], **expected}
            kept = json.load(open(tmp_path / f"eval_{row['alpha']}" / "inference" /
                                  "lvis_ap_fixed_results.json"))
            per_class = [d["category_id"] for d in kept]
            assert max(per_class.count(c) for c in set(per_class)) == 30
    finally:
        for p in predictors:
            p.alpha = 1.5
    scores = [[d["score"] for d in json.load(open(tmp_path / f"eval_{a}" / "inference" /
                                                  "lvis_ap_fixed_results.json"))] for a in alphas]
    assert scores[0] != scores[1]  # alpha matters here, so the equality above could fail
    # --metric may pick by AP-fixed only when it is computed
    alpha_sweep.check_metric(cfg, ["tools_lvis_val"], "segm/AP-fixed", classification=False)
    cfg.TEST.AP_FIXED.ENABLED = False
    with pytest.raises(ValueError, match="TEST.AP_FIXED.ENABLED True"):
        alpha_sweep.check_metric(cfg, ["tools_lvis_val"], "bbox/APr-fixed",
                                 classification=False)


def test_the_plot_marks_where_ap_and_ap_fixed_peak():
    tool = alpha_sweep
    columns = tool.DETECTION_COLUMNS + tool.AP_FIXED_COLUMNS
    rows = [{"alpha": a, **{c: 20 - (a - (2.0 if "fixed" in c else 1.0)) ** 2 for c in columns}}
            for a in (0, 0.5, 1, 1.5, 2, 3)]
    best = tool.best_alpha(rows, "segm/AP")
    fig = tool.plot_sweep(rows, columns, "lvis_v1_val", best, "segm/AP")
    marks = {line.get_label(): list(line.get_xdata()) for line in fig.axes[0].get_lines()}
    assert marks["max segm/AP-fixed: alpha 2"] == [2.0]
    assert [k for k in marks if k.startswith("chosen")] == ["chosen: alpha 1\n(segm/AP 20.00)"]
    assert marks["segm/AP-fixed"] == [0, 0.5, 1, 1.5, 2, 3]
    import matplotlib.pyplot as plt

    plt.close(fig)
