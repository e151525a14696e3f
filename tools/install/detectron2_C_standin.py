"""Stand-in for Detectron2's compiled extension ``detectron2._C`` (installed by tde-det's
``install.sh`` only when no compiled Detectron2 is present).

Detectron2 imports ``detectron2._C`` at module level in a few places, so ``import
detectron2.modeling`` needs *a* module of that name. The ops it provides (deformable
convolution, ROIAlignRotated, rotated NMS / IoU, the C++ COCOeval) are not used by Cascade
Mask R-CNN with ROIAlignV2, by axis-aligned NMS (torchvision) or by LVIS evaluation. Calling any
of them through this stand-in raises an error that names the op and says how to get it.
"""

TDE_DET_STANDIN = True

_HOW_TO_FIX = (
    "detectron2 was installed by tde-det's install.sh from Detectron2's Python sources "
    "without its compiled extension (`pip show detectron2` gives the version). To use this op, "
    "build Detectron2 from source with its C++/CUDA ops (python -m pip install 'git+https://github.com/facebookresearch/detectron2.git'"
    " or a local clone with `pip install -e .`), then re-run install.sh, which keeps a compiled "
    "Detectron2."
)


class CompiledOpUnavailable(RuntimeError):
    """Raised when code calls an op of Detectron2's compiled extension, which is not built."""


def get_compiler_version() -> str:
    """Reported by ``detectron2.utils.collect_env``."""
    return "not compiled (tde-det stand-in for detectron2._C)"


def get_cuda_version() -> str:
    """Reported by ``detectron2.utils.collect_env``."""
    return "not compiled (tde-det stand-in for detectron2._C)"


def has_cuda() -> bool:
    """No compiled CUDA kernels are present."""
    return False


def _unavailable(name: str):
    def op(*args, **kwargs):
        raise CompiledOpUnavailable(
            f"detectron2._C.{name} is a compiled Detectron2 op and it is not built here. "
            + _HOW_TO_FIX
        )

    op.__name__ = name
    return op


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    return _unavailable(name)
