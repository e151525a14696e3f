"""End to end through tools/train_net.py on tiny generated data (CPU, subprocesses).

CIFAR-format pickles: a few training iterations, a checkpoint holding a non-zero head
direction, then --eval-only printing many/medium/few/overall with and without TDE.
Image folder + split files (ImageNet-style augmentation, the lr-driven mu): train, --resume.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from tde_det.data.classification.synthetic import write_cifar_pickles, write_image_folder

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMON = ["MODEL.DEVICE", "cpu", "SOLVER.IMS_PER_BATCH", "32", "DATALOADER.NUM_WORKERS", "0",
          "TEST.CLASSIFICATION.MANY_THRESHOLD", "40", "TEST.CLASSIFICATION.FEW_THRESHOLD", "15"]


def train_net(data_root, flags, opts):
    """Run tools/train_net.py with command-line ``flags`` then config ``opts``."""
    args = [*flags, *opts]
    env = dict(os.environ, DETECTRON2_DATASETS=str(data_root), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py"), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    return out


def assert_table(out, alpha):
    for text in ("many (2 cls)", "medium (4 cls)", "few (4 cls)", "overall top-1",
                 f"| TDE (eq. 8, alpha={alpha})", "| no TDE (eq. 7)"):
        assert text in out, out[-3000:]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("d2data")
    write_cifar_pickles(str(root), "cifar10", per_class=60, test_per_class=10)
    write_image_folder(str(root / "folder"), 10, per_class=60, ratio=10, val_per_class=2,
                       test_per_class=5)
    return root


def test_cifar_lt_train_then_eval_only(data_root, tmp_path):
    out_dir = str(tmp_path / "out")
    flags = ["--config-file", "configs/CIFAR-LT/cifar10_r10_tde.yaml"]
    opts = [*COMMON, "SOLVER.MAX_ITER", "4", "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "(3,)",
            "DATASETS.TEST", '("cifar10_lt_r10_test",)', "OUTPUT_DIR", out_dir]
    out = train_net(data_root, flags, opts)
    assert "Dataset cifar10_lt_r10_train: 240 images, 10 classes" in out
    assert_table(out, 1.0)
    ckpt = torch.load(os.path.join(out_dir, "model_final.pth"), map_location="cpu",
                      weights_only=False)
    ema = ckpt["model"]["head_direction.ema"]
    assert ema.shape == (128,) and torch.isfinite(torch.as_tensor(ema)).all()
    assert torch.as_tensor(ema).abs().sum() > 0
    assert os.path.isfile(os.path.join(out_dir, "inference",
                                       "per_class_accuracy_cifar10_lt_r10_test.csv"))

    out = train_net(data_root, [*flags, "--eval-only"],
                    [*opts, "MODEL.WEIGHTS", os.path.join(out_dir, "model_final.pth")])
    assert "Starting training" not in out
    assert_table(out, 1.0)
    assert "top1_no_tde" in out  # Detectron2's copy-paste lines list both sets
    assert "Evaluated with MODEL.TDE.ALPHA 1.0, MODEL.TDE.TEST_TDE True\n" in out
    assert "BACKGROUND_EXEMPTED" not in out.split("Evaluated with")[1].splitlines()[0]
    # metrics.json of the evaluation's own folder: the results beside the TDE settings
    row = json.loads(open(os.path.join(out_dir, "eval_model_final", "metrics.json")).read()
                     .splitlines()[-1])
    assert row["eval/MODEL.TDE.ALPHA"] == 1.0 and row["eval/MODEL.TDE.TEST_TDE"] == 1.0
    assert 0 <= row["classification/top1"] <= 100 and "iteration" not in row


def test_image_folder_with_lr_driven_mu_and_resume(data_root, tmp_path):
    folder = data_root / "folder"
    out_dir = str(tmp_path / "out")
    flags = ["--config-file", "configs/ImageNet-LT/X_50_32x4d_tde.yaml"]
    opts = [*COMMON, "MODEL.BACKBONE.NAME", "build_cifar_resnet_backbone",
            "MODEL.CIFAR_RESNET.DEPTH", "8", "MODEL.IMAGE_CLASSIFIER.NUM_CLASSES", "10",
            "INPUT.CLASSIFICATION.CROP_SIZE", "32", "INPUT.CLASSIFICATION.TEST_RESIZE", "36",
            "INPUT.CLASSIFICATION.TEST_CROP_SIZE", "32",
            "DATASETS.SPLIT_FILE.NAME", "tiny", "DATASETS.SPLIT_FILE.IMAGE_ROOT", str(folder),
            "DATASETS.SPLIT_FILE.TRAIN", str(folder / "train.txt"),
            "DATASETS.SPLIT_FILE.TEST", str(folder / "test.txt"),
            "DATASETS.TRAIN", '("tiny_train",)', "DATASETS.TEST", '("tiny_test",)',
            "SOLVER.CHECKPOINT_PERIOD", "2", "OUTPUT_DIR", out_dir]
    train_net(data_root, flags, [*opts, "SOLVER.MAX_ITER", "2"])
    out = train_net(data_root, [*flags, "--resume"], [*opts, "SOLVER.MAX_ITER", "4"])
    assert "Starting training from iteration 2" in out
    assert_table(out, 3.0)
    metrics = open(os.path.join(out_dir, "metrics.json")).read()
    assert "head_direction_mu" in metrics
    last = json.loads(metrics.splitlines()[-1])  # the evaluation after training
    assert last["eval/MODEL.TDE.ALPHA"] == 3.0 and last["eval/MODEL.TDE.TEST_TDE"] == 1.0
    assert "classification/top1" in last
