"""The Detectron2 that install.sh leaves behind: an ordinary distribution whose compiled ops,
if it has none, fail with a message that names the op and says how to get it."""
import importlib.metadata
import subprocess
import sys

import pytest

from detectron2 import _C

STANDIN = getattr(_C, "TDE_DET_STANDIN", False)


def test_detectron2_is_an_installed_distribution():
    dist = importlib.metadata.distribution("detectron2")
    assert dist.version.startswith("0.") or dist.version[0].isdigit()
    files = {str(f) for f in dist.files or []}
    assert "detectron2/__init__.py" in files
    if STANDIN:
        assert dist.version == "0.6+nocsrc"
        assert "detectron2/_C.py" in files


@pytest.mark.skipif(not STANDIN, reason="a compiled detectron2._C is installed")
@pytest.mark.parametrize("op", ["nms_rotated", "deform_conv_forward", "COCOevalAccumulate"])
def test_standin_names_the_missing_op(op):
    with pytest.raises(RuntimeError, match=rf"detectron2\._C\.{op} is a compiled Detectron2 op") as e:
        getattr(_C, op)(1, 2)
    assert "install.sh" in str(e.value) and "github.com/facebookresearch/detectron2" in str(e.value)


@pytest.mark.skipif(not STANDIN, reason="a compiled detectron2._C is installed")
def test_standin_keeps_python_module_protocol():
    assert not hasattr(_C, "__wrapped__")  # dunder look-ups stay AttributeError
    assert _C.has_cuda() is False


def test_detectron2_modules_that_need_c_import_and_collect_env_runs():
    code = (
        "import detectron2.modeling, detectron2.evaluation, detectron2.layers.deform_conv;"
        "from detectron2.utils.collect_env import collect_env_info; print(collect_env_info())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "detectron2" in out.stdout


def test_pip_check_is_clean():
    out = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
