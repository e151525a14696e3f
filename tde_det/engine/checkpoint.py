"""Loading weights for evaluation: Detectron2's checkpointer, then a check that every head
direction TDE will use came with them."""
from typing import Iterable, List, Optional, Tuple

from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

from tde_det.layers import HeadDirection

__all__ = ["TDECheckpointer", "check_head_directions_for_tde"]


def _tde_head_directions(model: nn.Module) -> List[Tuple[str, HeadDirection]]:
    """(buffer name, head direction) of every module of ``model`` that applies TDE in inference
    (``applies_tde``: MODEL.TDE.TEST_TDE and MODEL.TDE.ALPHA > 0)."""
    found = []
    for name, module in model.named_modules():
        direction = getattr(module, "head_direction", None)
        if isinstance(direction, HeadDirection) and getattr(module, "applies_tde", False):
            found.append((f"{name}.head_direction.ema" if name else "head_direction.ema",
                          direction))
    return found


def check_head_directions_for_tde(model: nn.Module, weights: str,
                                  missing: Iterable[str] = ()) -> None:
    """After ``weights`` (MODEL.WEIGHTS) were loaded into ``model``: raise, naming the file and
    the buffers, if a head direction that TDE (eq. 8) will use is zero (``missing``: the keys
    the checkpoint lacked, named as such) or not finite. Eq. 8 with a zero x_bar is eq. 7, so
    the results would be the TDE-off ones under TDE's name; the rule is
    ``HeadDirection.tde_problem``, checked here before any image is read."""
    missing = set(missing)
    absent, zero, not_finite = [], [], []
    for name, direction in _tde_head_directions(model):
        problem = direction.tde_problem()
        if problem == "not finite":
            not_finite.append(name)
        elif problem == "zero":
            (absent if name in missing or not weights else zero).append(name)
    if not_finite:
        raise FloatingPointError(
            f"MODEL.WEIGHTS {weights!r}: the head direction is not finite in "
            f"{', '.join(not_finite)} (its training diverged), so TDE (eq. 8) would give NaN "
            f"scores. Set MODEL.TDE.TEST_TDE False to evaluate eq. 7 only, or use another "
            f"checkpoint")
    if absent or zero:
        what = "; ".join(part for part in (
            absent and f"missing from the checkpoint: {', '.join(absent)}",
            zero and f"zero in the checkpoint: {', '.join(zero)}") if part)
        raise RuntimeError(
            f"MODEL.WEIGHTS {weights!r} has no head direction for TDE (eq. 8) ({what}): the "
            f"weights were not trained with tde-det (e.g. a plain Detectron2 model) or not for "
            f"a single iteration, and eq. 8 with a zero head direction is eq. 7 (the TDE-off "
            f"results). Set MODEL.TDE.TEST_TDE False (or MODEL.TDE.ALPHA 0) to evaluate eq. 7 "
            f"only, or use weights trained with tde-det")


class TDECheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` for evaluation (``--eval-only``, the tools): after
    :meth:`load`, :func:`check_head_directions_for_tde`. Training keeps Detectron2's
    checkpointer: there the head directions are learnt, whatever the initial weights."""

    _missing: Optional[List[str]] = None

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        self._missing = list(incompatible.missing_keys) if incompatible is not None else []
        return incompatible

    def load(self, path: str, checkpointables=None):
        self._missing = None
        ret = super().load(path, checkpointables)
        check_head_directions_for_tde(self.model, path, self._missing or ())
        return ret
