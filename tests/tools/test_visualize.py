"""tools/visualize.py on the tiny detector: predictions, ground truth and TDE on/off panels."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.helpers.tools import REPO, load_tool, lvis_overrides

visualize = load_tool("visualize")


def run(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "visualize.py"),
                           "--config-file",
                           os.path.join(REPO, "configs", "TinyLVIS/cascade_R_18_tde.yaml"),
                           *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_dataset_split_with_ground_truth_and_tde_comparison(tiny_detector, tmp_path):
    _, _, paths, weights = tiny_detector
    out = tmp_path / "vis"
    proc = run("--dataset", "tools_lvis_val", "--show-gt", "--compare-tde", "--max-images", "2",
               "--confidence-threshold", "0.0", "--output", str(out), *lvis_overrides(paths),
               "MODEL.WEIGHTS", weights)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(f for f in os.listdir(out) if f.endswith(".png"))
    assert len(files) == 2 and "wrote 2 images" in proc.stdout
    assert {"config.yaml", "log.txt"} <= set(os.listdir(out))  # the tool's own record
    img = np.asarray(Image.open(out / files[0]))
    # Three panels side by side (ground truth, TDE, no TDE), each as wide as the image,
    # enlarged (a small image): its shorter side 480 pixels (--min-size).
    source = Image.open(os.path.join(paths["image_root"], files[0]))
    scale = 480 / min(source.size)
    assert abs(img.shape[0] - source.height * scale) <= 1
    assert img.shape[1] >= 3 * source.width * scale


def test_folder_input_skips_an_unreadable_image(tiny_detector, tmp_path):
    _, _, paths, weights = tiny_detector
    folder = tmp_path / "in"
    folder.mkdir()
    first = sorted(os.listdir(paths["image_root"]))[0]
    Image.open(os.path.join(paths["image_root"], first)).save(folder / "good.png")
    (folder / "broken.png").write_bytes(b"not a png")
    # Another image of the same name in another folder: drawn to good_2.png, not over good.png.
    other = tmp_path / "other"
    other.mkdir()
    second = sorted(os.listdir(paths["image_root"]))[1]
    Image.open(os.path.join(paths["image_root"], second)).save(other / "good.png")
    out = tmp_path / "vis"
    proc = run("--input", str(folder), str(other / "good.png"), str(tmp_path / "none*.jpg"),
               "--output", str(out), "--min-size", "0", *lvis_overrides(paths), "MODEL.WEIGHTS",
               weights)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote 2 images" in proc.stdout and "skipped 1 unreadable" in proc.stdout
    assert sorted(f for f in os.listdir(out) if f.endswith(".png")) == ["good.png", "good_2.png"]
    log = proc.stderr + proc.stdout
    assert "broken.png" in log and "writing good_2.png" in log
    assert "none*.jpg: the pattern matches no file" in log
    # each drawing is of its own image: the panel is as large as the input (--min-size 0)
    for name, source in (("good.png", first), ("good_2.png", second)):
        height = Image.open(os.path.join(paths["image_root"], source)).height
        assert Image.open(out / name).height == height


def test_inputs_and_trailing_overrides_are_split_by_config_keys(tmp_path, monkeypatch):
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
    settings = visualize.panel_settings
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


def test_inputs_are_expanded_once_each_and_nothing_found_is_reported(tmp_path, caplog):
    (tmp_path / "a").mkdir()
    (tmp_path / "empty").mkdir()
    for name in ("x.jpg", "y.PNG", "notes.txt"):
        (tmp_path / "a" / name).write_bytes(b"")
    a = str(tmp_path / "a")
    with caplog.at_level("WARNING", logger="tde_det.visualize"):
        paths = visualize.expand_inputs([a, os.path.join(a, "x.jpg"), os.path.join(a, "*.jpg"),
                                         str(tmp_path / "empty"), str(tmp_path / "z*.jpg")])
    assert paths == [os.path.join(a, "x.jpg"), os.path.join(a, "y.PNG")]  # x.jpg once
    assert "empty: the folder holds no image" in caplog.text
    assert "z*.jpg: the pattern matches no file" in caplog.text
    with pytest.raises(SystemExit, match="no image file to draw"):
        visualize.expand_inputs([str(tmp_path / "empty")])
    with pytest.raises(FileNotFoundError, match="missing.jpg: no such file"):
        visualize.expand_inputs([str(tmp_path / "missing.jpg")])


def test_output_names_never_collide():
    names = visualize.output_names(["a/img.jpg", "b/img.jpg", "img.png", "img_2.jpg", "c/d.jpeg"],
                                 "png")
    assert names == ["img.png", "img_2.png", "img_3.png", "img_2_2.png", "d.png"]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("option, value, message", [
    ("--max-images", "0", "--max-images must be >= 1"),
    ("--confidence-threshold", "1.5", "--confidence-threshold must be a score in [0, 1]"),
    ("--confidence-threshold", "nan", "--confidence-threshold must be a score in [0, 1]"),
])
def test_bad_options_are_refused(option, value, message, capsys):
    with pytest.raises(SystemExit):
        visualize.parse_args(["--config-file", "c.yaml", "--input", "x.jpg", option, value])
    assert message in capsys.readouterr().err


def test_a_misspelt_dataset_is_named(tiny_detector, tmp_path):
    _, _, paths, weights = tiny_detector
    proc = run("--dataset", "tools_lvis_vall", "--output", str(tmp_path / "vis"),
               *lvis_overrides(paths), "MODEL.WEIGHTS", weights)
    assert proc.returncode != 0
    assert "--dataset: 'tools_lvis_vall' is not a registered dataset; did you mean " \
           "'tools_lvis_val'" in proc.stderr
