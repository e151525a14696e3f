#!/usr/bin/env bash
# Installs everything tde-det needs into a virtualenv, then tde-det itself (editable):
# torch, torchvision, Detectron2, fvcore, lvis, pycocotools, opencv-python, pytest.
#
#   bash install.sh            # creates ./.venv (or reuses it); TDE_VENV=path picks another folder
#
# Detectron2: a Detectron2 whose compiled extension imports is kept as it is. Otherwise Detectron2
# v0.6's Python sources (PyPI sdist pb1-detectron2==0.6) are packaged as the distribution
# "detectron2 0.6+nocsrc" with a stand-in for the compiled ``detectron2._C`` (see README).
# Safe to run again: what is already there is kept, and a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")"
here="$(pwd -P)"
venv="${TDE_VENV:-$here/.venv}"
python_for_venv="${PYTHON:-python3}"

log() { printf '[install.sh] %s\n' "$*"; }

if [ ! -x "$venv/bin/python" ]; then
  log "creating virtualenv $venv"
  "$python_for_venv" -m venv "$venv"
fi
py="$venv/bin/python"
pipi() { "$py" -m pip install --disable-pip-version-check -q "$@"; }

# 1. PyTorch (kept when present; pip on these machines takes 2.14.1 / 0.29.1 from local disk).
if ! "$py" -c "import torch, torchvision" 2>/dev/null; then
  log "installing torch and torchvision"
  pipi "${TORCH_SPEC:-torch==2.14.1}" "${TORCHVISION_SPEC:-torchvision==0.29.1}"
fi

# 2. Detectron2.
d2_state=$("$py" - <<'PY' 2>/dev/null || echo missing
try:
    import detectron2  # noqa: F401
except Exception:
    print("missing")
else:
    try:
        from detectron2 import _C
    except Exception:
        print("no-extension")
    else:
        print("standin" if getattr(_C, "TDE_DET_STANDIN", False) else "compiled")
PY
)
constraints=()
case "$d2_state" in
  compiled)
    log "keeping the installed Detectron2 with its compiled extension" ;;
  standin)
    log "Detectron2 0.6 (Python sources, stand-in _C) already installed"
    constraints=(-c tools/install/constraints-detectron2-0.6.txt) ;;
  *)
    [ "$d2_state" = no-extension ] && log "an installed Detectron2 has no working _C: replacing it with 0.6 + stand-in"
    constraints=(-c tools/install/constraints-detectron2-0.6.txt)
    log "installing Detectron2 0.6 Python sources (pb1-detectron2==0.6) with a stand-in _C"
    pipi "${constraints[@]}" "setuptools<81" wheel numpy
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    # The sdist's own setup.py imports torch, hence --no-build-isolation; nothing is compiled.
    "$py" -m pip download --disable-pip-version-check -q --no-deps --no-build-isolation \
      --no-binary :all: -d "$work" pb1-detectron2==0.6
    tar -xzf "$work"/pb1-detectron2-0.6.tar.gz -C "$work"
    src="$work/pb1-detectron2-0.6"
    test -f "$src/detectron2/__init__.py" || { log "unexpected sdist layout in $src"; exit 1; }
    rm -rf "$src"/*.egg-info "$src/PKG-INFO" "$src/setup.cfg"
    cp tools/install/detectron2_setup.py "$src/setup.py"
    cp tools/install/detectron2_C_standin.py "$src/detectron2/_C.py"
    pipi "${constraints[@]}" --no-build-isolation "$src"
    ;;
esac

# 3. The rest, then tde-det itself in editable mode.
pipi "${constraints[@]}" fvcore lvis pycocotools opencv-python matplotlib pytest pytest-xdist
# (pip's output is read whole first: with pipefail, `pip show | grep -q` fails on SIGPIPE.)
tde_location=$("$py" -m pip show tde-det 2>/dev/null | sed -n 's/^Editable project location: //p' \
  || true)  # pip show fails while tde-det is not installed
if [ "$tde_location" != "$here" ]; then
  log "installing tde-det (editable) from $here"
  pipi --no-build-isolation --no-deps -e "$here"
fi
"$py" - <<'PY'
import importlib.metadata as md
import numpy
if md.version("lvis") == "0.5.3" and tuple(int(x) for x in numpy.__version__.split(".")[:2]) >= (1, 24):
    print("[install.sh] WARNING: lvis 0.5.3's LVISEval uses np.float, removed in numpy "
          + numpy.__version__ + ": LVIS evaluation will fail. Install the LVIS API from "
          "https://github.com/lvis-dataset/lvis-api (see README).")
PY
"$py" -m pip check >/dev/null || { "$py" -m pip check; exit 1; }
"$py" -c "import tde_det, detectron2, lvis, torch; print('[install.sh] ready: torch', torch.__version__, '| detectron2', detectron2.__version__, '| python', '$py')"
