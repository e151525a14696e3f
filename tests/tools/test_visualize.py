"""tools/visualize.py on the tiny detector: predictions, ground truth and TDE on/off panels."""
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from tools_helpers import REPO, lvis_overrides


def run(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "visualize.py"),
                           "--config-file",
                           os.path.join(REPO, "configs", "tiny_lvis_cascade_tde_cpu.yaml"),
                           *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_dataset_split_with_ground_truth_and_tde_comparison(tiny_detector, tmp_path):
    _, _, paths, weights = tiny_detector
    out = tmp_path / "vis"
    proc = run("--dataset", "tools_lvis_val", "--show-gt", "--compare-tde", "--max-images", "2",
               "--confidence-threshold", "0.0", "--output", str(out), *lvis_overrides(paths),
               "MODEL.WEIGHTS", weights)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(os.listdir(out))
    assert len(files) == 2 and "wrote 2 images" in proc.stdout
    img = np.asarray(Image.open(out / files[0]))
    # Three panels side by side (ground truth, TDE, no TDE), each as wide as the image.
    source = Image.open(os.path.join(paths["image_root"], files[0]))
    assert img.shape[0] == source.height and img.shape[1] >= 3 * source.width


def test_folder_input_skips_an_unreadable_image(tiny_detector, tmp_path):
    _, _, paths, weights = tiny_detector
    folder = tmp_path / "in"
    folder.mkdir()
    first = sorted(os.listdir(paths["image_root"]))[0]
    Image.open(os.path.join(paths["image_root"], first)).save(folder / "good.png")
    (folder / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "vis"
    proc = run("--input", str(folder), "--output", str(out), *lvis_overrides(paths),
               "MODEL.WEIGHTS", weights)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped 1 unreadable" in proc.stdout and os.listdir(out) == ["good.png"]
    assert "broken.png" in proc.stderr + proc.stdout


def _tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("visualize", os.path.join(REPO, "tools",
                                                                            "visualize.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_inputs_and_trailing_overrides_are_split_by_config_keys(tmp_path, monkeypatch):
    visualize = _tool()
    upper = tmp_path / "IMG_01.JPG"  # str.isupper() is True for this name
    upper.write_bytes(b"")
    args = visualize.parse_args(["--config-file", "c.yaml", "--input", str(upper), "IMG_02.JPG",
                                 "MODEL.WEIGHTS", "w.pth", "MODEL.TDE.ALPHA", "1", "--show-gt"])
    assert args.input == [str(upper), "IMG_02.JPG"]
    assert args.opts == ["MODEL.WEIGHTS", "w.pth", "MODEL.TDE.ALPHA", "1"] and args.show_gt
    # An existing path is an input even when it spells a config key.
    key_named = tmp_path / "MODEL.WEIGHTS"
    key_named.write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    args = visualize.parse_args(["--config-file", "c.yaml", "--input", "MODEL.WEIGHTS",
                                 "MODEL.DEVICE", "cpu"])
    assert args.input == ["MODEL.WEIGHTS"] and args.opts == ["MODEL.DEVICE", "cpu"]


def test_panels_follow_the_config():
    settings = _tool().panel_settings
    assert settings(True, 1.5, False) == [(True, "TDE (alpha=1.5)")]
    assert settings(False, 1.5, False) == [(False, "no TDE")]
    assert settings(False, 0.5, True) == [(False, "no TDE"), (True, "TDE (alpha=0.5)")]


def test_linear_detector_draws_without_tde_and_refuses_the_comparison(tiny_detector, tmp_path):
    _, _, paths, weights = tiny_detector
    common = ["--dataset", "tools_lvis_val", "--max-images", "1", "--confidence-threshold", "0.0",
              "--output", str(tmp_path / "vis"), *lvis_overrides(paths), "MODEL.WEIGHTS",
              weights, "MODEL.TDE.CLASSIFIER", "linear", "MODEL.TDE.TEST_TDE", "False"]
    proc = run(*common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote 1 images" in proc.stdout
    proc = run(*common, "--compare-tde")
    assert proc.returncode != 0 and "does not apply" in proc.stderr
    assert "MODEL.TDE.CLASSIFIER 'linear'" in proc.stderr
