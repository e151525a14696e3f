#!/usr/bin/env bash
# Installs everything tde-det needs into a virtualenv, then tde-det itself (editable):
# torch, torchvision, Detectron2, fvcore, lvis, pycocotools, opencv-python, pytest, ruff.
#
#   bash install.sh            # creates ./.venv (or reuses it); TDE_VENV=path picks another folder
#   TDE_DETECTRON2=SRC TDE_LVIS=SRC bash install.sh   # Detectron2 / LVIS API from a source tree
#
# Detectron2: a Detectron2 whose compiled extension imports is kept as it is. TDE_DETECTRON2 names a
# Detectron2 source tree or `git archive` tarball (e.g. main): its Python sources are packaged as
# "detectron2 <version>+git<commit>.nocsrc" with a stand-in for the compiled ``detectron2._C``, on
# the newest numpy / Pillow / opencv / matplotlib that resolve. Otherwise Detectron2 v0.6's Python
# sources (PyPI sdist pb1-detectron2==0.6) become "detectron2 0.6+nocsrc", with the pins 0.6 needs.
# TDE_LVIS names an LVIS API source tree or tarball to install instead of PyPI's lvis 0.5.3.
# Safe to run again: what is already there is kept (a source install is never replaced by 0.6),
# and a second run takes seconds.
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
d2_src="${TDE_DETECTRON2:-}"
lvis_src="${TDE_LVIS:-}"
for src_var in d2_src lvis_src; do
  if [ -n "${!src_var}" ]; then
    [ -e "${!src_var}" ] || { log "${src_var/_src/} source not found: ${!src_var}"; exit 1; }
    printf -v "$src_var" '%s' "$(cd "$(dirname "${!src_var}")" && pwd -P)/$(basename "${!src_var}")"
  fi
done
# The installed Detectron2: compiled, a stand-in built from 0.6 or from a source tree, or none.
d2_state=$("$py" - <<'PY' 2>/dev/null || echo missing
import importlib.metadata as md
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
        if not getattr(_C, "TDE_DET_STANDIN", False):
            print("compiled")
        else:
            version = md.version("detectron2")
            print("standin-0.6" if version == "0.6+nocsrc" else "standin-source " + version)
PY
)
# <version>+git<commit>.nocsrc for a source tree; the commit from git, the archive or the name.
source_version() {
  local src="$1" commit="" base
  if [ -d "$src" ]; then
    commit=$(git -C "$src" rev-parse --short=7 HEAD 2>/dev/null || true)
  else
    commit=$( (gunzip -c "$src" 2>/dev/null || cat "$src") | git get-tar-commit-id 2>/dev/null \
      | cut -c1-7 || true)
  fi
  if [ -z "$commit" ]; then
    commit=$(basename "$src" | sed -n 's/.*-\([0-9a-f]\{7,40\}\)\(\.tar\.gz\|\.tgz\|\.tar\)\{0,1\}$/\1/p' \
      | cut -c1-7)
  fi
  base=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$2/detectron2/__init__.py")
  echo "${base:-0}+${commit:+git$commit.}nocsrc"
}
# Unpacks a source tree or archive into $work/src (the folder that holds detectron2/ or lvis/).
unpack() {
  local src="$1" pkg="$2" top
  rm -rf "$work/src" "$work/unpacked" && mkdir -p "$work/unpacked"
  if [ -d "$src" ]; then cp -r "$src" "$work/unpacked/"; else tar -xf "$src" -C "$work/unpacked"; fi
  top=$(dirname "$(find "$work/unpacked" -maxdepth 3 -path "*/$pkg/__init__.py" | head -1)")
  top=$(dirname "$top")
  [ -f "$top/$pkg/__init__.py" ] || { log "no $pkg/__init__.py in $src"; exit 1; }
  mv "$top" "$work/src"
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
constraints=()
upgrade=()
install_source=""
case "$d2_state" in
  compiled)
    log "keeping the installed Detectron2 with its compiled extension" ;;
  "standin-source "*)
    installed="${d2_state#standin-source }"
    if [ -n "$d2_src" ]; then
      unpack "$d2_src" detectron2
      wanted=$(source_version "$d2_src" "$work/src")
      if [ "$wanted" != "$installed" ]; then install_source=1; fi
    fi
    [ -n "$install_source" ] || log "Detectron2 $installed (Python sources, stand-in _C) already installed" ;;
  standin-0.6)
    if [ -n "$d2_src" ]; then
      log "replacing Detectron2 0.6 with the sources in $d2_src"
      unpack "$d2_src" detectron2
      install_source=1
    else
      log "Detectron2 0.6 (Python sources, stand-in _C) already installed"
      constraints=(-c tools/install/constraints-detectron2-0.6.txt)
    fi ;;
  *)
    [ "$d2_state" = no-extension ] && log "an installed Detectron2 has no working _C: replacing it with one with a stand-in _C"
    if [ -n "$d2_src" ]; then
      unpack "$d2_src" detectron2
      install_source=1
    else
      constraints=(-c tools/install/constraints-detectron2-0.6.txt)
      log "installing Detectron2 0.6 Python sources (pb1-detectron2==0.6) with a stand-in _C"
      pipi "${constraints[@]}" "setuptools<81" wheel numpy
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
    fi ;;
esac
if [ -n "$install_source" ]; then
  # A Detectron2 source tree: its Python sources, a stand-in _C, its model-zoo configs, none of
  # 0.6's pins; the libraries it runs on are brought to their newest versions that resolve.
  src="$work/src"
  version=$(source_version "$d2_src" "$src")
  log "installing Detectron2 $version from $d2_src (Python sources, stand-in _C)"
  pipi -U setuptools wheel numpy
  rm -rf "$src"/*.egg-info "$src/PKG-INFO" "$src/setup.cfg" "$src/build"
  cp tools/install/detectron2_setup.py "$src/setup.py"
  cp tools/install/detectron2_C_standin.py "$src/detectron2/_C.py"
  if [ -d "$src/configs" ] && [ ! -d "$src/detectron2/model_zoo/configs" ]; then
    cp -r "$src/configs" "$src/detectron2/model_zoo/configs"
  fi
  TDE_D2_VERSION="$version" pipi --no-build-isolation "$src"
  upgrade=(-U numpy Pillow pycocotools opencv-python matplotlib)
fi

# The LVIS API from a source tree (its PyPI release 0.5.3 fails on numpy >= 1.24), unless pip
# already installed it from that same place.
if [ -n "$lvis_src" ]; then
  lvis_from=$("$py" - <<'PY' 2>/dev/null || true
import importlib.metadata as md, json
print(json.loads(md.distribution("lvis").read_text("direct_url.json") or "{}").get("url", "")
      .split("#")[0])
PY
)
  if [ "$lvis_from" = "file://$lvis_src" ]; then
    log "LVIS API from $lvis_src already installed"
  else
    log "installing the LVIS API from $lvis_src"
    unpack "$lvis_src" lvis
    [ ! -f "$work/src/requirements.txt" ] || pipi "${upgrade[@]}" -r "$work/src/requirements.txt"
    # Its setup.py imports pip and reads requirements.txt, hence --no-build-isolation.
    pipi --no-build-isolation --force-reinstall --no-deps "$lvis_src"
  fi
fi

# 3. The rest, then tde-det itself in editable mode.
pipi "${constraints[@]}" "${upgrade[@]}" fvcore lvis pycocotools opencv-python matplotlib pytest \
  pytest-xdist ruff
# (pip's output is read whole first: with pipefail, `pip show | grep -q` fails on SIGPIPE.)
tde_location=$("$py" -m pip show tde-det 2>/dev/null | sed -n 's/^Editable project location: //p' \
  || true)  # pip show fails while tde-det is not installed
if [ "$tde_location" != "$here" ]; then
  log "installing tde-det (editable) from $here"
  pipi --no-build-isolation --no-deps -e "$here"
fi
"$py" - <<'PY'
import inspect, re
import numpy
import lvis.eval
if not hasattr(numpy, "float") and re.search(r"\bnp\.float\b(?!\d)", inspect.getsource(lvis.eval)):
    print("[install.sh] WARNING: this LVIS API's LVISEval uses np.float, which numpy "
          + numpy.__version__ + " no longer has: LVIS evaluation will fail. Install the LVIS API "
          "from its repository (TDE_LVIS=path, see README).")
PY
"$py" -m pip check >/dev/null || { "$py" -m pip check; exit 1; }
"$py" -c "import importlib.metadata as md, tde_det, detectron2, lvis, torch, numpy; print('[install.sh] ready: torch', torch.__version__, '| detectron2', md.version('detectron2'), '| numpy', numpy.__version__, '| python', '$py')"
