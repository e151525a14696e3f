"""The Detectron2 that install.sh leaves behind: an ordinary distribution whose compiled ops,
if it has none, fail with a message that names the op and says how to get it."""
import importlib.metadata
import os
import re
import subprocess
import sys

import pytest

import detectron2
from detectron2 import _C

STANDIN = getattr(_C, "TDE_DET_STANDIN", False)


def test_detectron2_is_an_installed_distribution():
    """pip knows the detectron2 that is imported: ``pip show`` lists it, its RECORD holds every
    module of the imported package (so ``pip uninstall`` removes them), and pip installed it
    (not files copied into site-packages by hand)."""
    dist = importlib.metadata.distribution("detectron2")
    files = {str(f) for f in dist.files or []}
    package_dir = os.path.dirname(detectron2.__file__)
    site = os.path.dirname(package_dir)
    on_disk = {os.path.relpath(os.path.join(root, f), site).replace(os.sep, "/")
               for root, _, names in os.walk(package_dir) for f in names if f.endswith(".py")}
    assert on_disk and on_disk <= files, sorted(on_disk - files)[:10]
    assert os.path.samefile(dist.locate_file("detectron2/__init__.py"), detectron2.__file__)
    assert (dist.read_text("INSTALLER") or "").strip() == "pip"
    show = subprocess.run([sys.executable, "-m", "pip", "show", "-f", "detectron2"],
                          capture_output=True, text=True, timeout=120)
    assert show.returncode == 0, show.stderr
    assert f"Version: {dist.version}" in show.stdout and f"Location: {site}" in show.stdout
    if STANDIN:  # 0.6 from PyPI's sdist, or a source tree (install.sh's TDE_DETECTRON2)
        assert re.fullmatch(r"0\.6\+nocsrc|[0-9][0-9.]*\+(git[0-9a-f]{7}\.)?nocsrc", dist.version)
        assert "detectron2/_C.py" in files


@pytest.mark.skipif(not STANDIN, reason="a compiled detectron2._C is installed")
@pytest.mark.parametrize("op", ["nms_rotated", "deform_conv_forward", "COCOevalAccumulate"])
def test_standin_names_the_missing_op(op):
    with pytest.raises(RuntimeError,
                       match=rf"detectron2\._C\.{op} is a compiled Detectron2 op") as e:
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


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.skipif(not os.path.isfile(os.path.join(sys.prefix, "pyvenv.cfg")),
                    reason="not running from a virtualenv that install.sh could reuse")
def test_install_sh_again_keeps_everything():
    """install.sh is idempotent: run again on the environment running the tests, it installs
    nothing (same distributions, same versions) and takes the fast path for every step."""
    freeze = [sys.executable, "-m", "pip", "freeze", "--all"]
    before = subprocess.run(freeze, capture_output=True, text=True, timeout=120).stdout
    run = subprocess.run(["bash", os.path.join(REPO, "install.sh")], capture_output=True,
                         text=True, timeout=600, env=dict(os.environ, TDE_VENV=sys.prefix))
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert "[install.sh] ready" in out
    assert "installing torch" not in out and "creating virtualenv" not in out
    assert "installing Detectron2" not in out and "installing tde-det" not in out
    after = subprocess.run(freeze, capture_output=True, text=True, timeout=120).stdout
    assert after == before


def _version(name):
    return tuple(int(p) for p in importlib.metadata.version(name).split(".")[:2])


SOURCE_STANDIN = STANDIN and importlib.metadata.version("detectron2") != "0.6+nocsrc"


@pytest.mark.skipif(not STANDIN or SOURCE_STANDIN, reason="only the Detectron2 0.6 stack")
def test_the_0_6_stack_keeps_the_pins_0_6_needs():
    assert _version("numpy") < (1, 24) and _version("Pillow") < (10, 0)
    assert _version("setuptools") < (81, 0)


@pytest.mark.skipif(not SOURCE_STANDIN, reason="only a Detectron2 installed from a source tree")
def test_a_source_stack_has_none_of_the_0_6_pins():
    """install.sh's TDE_DETECTRON2 path (CI: Detectron2 main) runs on today's libraries."""
    assert _version("numpy") >= (2, 0) and _version("Pillow") >= (10, 0)


def test_tde_det_never_imports_detectron2_model_zoo():
    """``detectron2.model_zoo`` imports ``pkg_resources``, which setuptools >= 81 lacks: nothing
    that the training, evaluation and tools import may need it."""
    code = ("import sys, runpy; import tde_det, tde_det.engine, tde_det.evaluation;"
            f"runpy.run_path({os.path.join(REPO, 'tools', 'train_net.py')!r}, run_name='x');"
            "print(sorted(m for m in sys.modules if m.startswith('detectron2.model_zoo')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
