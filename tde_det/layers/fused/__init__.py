"""Triton kernels for the training steps of the TDE heads (``MODEL.TDE.FUSED_KERNELS``), and
where they run. The kernels (:mod:`.kernels`) are imported on first use only, so Triton is
optional: without it, or where the kernels fail their first try on a device, :func:`kernels_for`
says None (with one warning per device) and the layers run the eager maths of ``tde_math``."""
import logging
import os
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

__all__ = ["HeadDirectionUpdate", "kernels_for"]

# A head direction's update for the kernels: (x_bar, labels, num_classes, mu)
HeadDirectionUpdate = Tuple[Tensor, Tensor, int, float]

logger = logging.getLogger(__name__)

_KERNELS_ON: Dict[torch.device, Optional[object]] = {}  # device -> the kernels, or None


def kernels_for(*tensors: Tensor):
    """The kernels module (:mod:`tde_det.layers.fused.kernels`) if it can take these tensors --
    float32, on CUDA, or on the CPU under Triton's interpreter (``TRITON_INTERPRET=1``) -- else
    None. Also None, with one warning per device, where the kernels cannot run there: no Triton,
    or their first try on the device (``kernels.self_check``) failed (an old GPU, an
    incompatible Triton)."""
    if all(t.dtype == torch.float32 and t.is_cuda for t in tensors):
        device = tensors[0].device
    elif os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes") \
            and all(t.dtype == torch.float32 for t in tensors):
        device = torch.device("cpu")
    else:
        return None
    if device not in _KERNELS_ON:
        _KERNELS_ON[device] = _try_kernels(device)
    return _KERNELS_ON[device]


def _try_kernels(device: torch.device):
    try:
        from . import kernels
        kernels.self_check(device)
    except Exception as e:  # noqa: BLE001 - any failure means: use the eager maths here
        logger.warning("MODEL.TDE.FUSED_KERNELS: the Triton kernels cannot run on %s (%s: %s); "
                       "the TDE heads use the eager PyTorch maths there (same results, slower "
                       "training steps). Set MODEL.TDE.FUSED_KERNELS False to silence this.",
                       device, type(e).__name__, str(e).strip().split("\n")[0][:300])
        return None
    return kernels
