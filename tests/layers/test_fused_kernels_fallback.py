"""MODEL.TDE.FUSED_KERNELS is on by default: where the Triton kernels cannot run (no Triton, an
old GPU, an incompatible Triton), the TDE heads fall back to the eager maths with one warning
per device instead of failing the training step."""
import logging
import sys

import pytest
import torch

import tde_det.layers.fused
from tde_det.layers import NormalizedClassifier


def _fail(device):
    raise RuntimeError("no kernel image for sm_60")


@pytest.mark.parametrize("failure", ["first try fails", "no triton"])
def test_the_eager_maths_with_one_warning_where_the_kernels_fail(failure, monkeypatch, caplog):
    monkeypatch.setattr(tde_det.layers.fused, "_KERNELS_ON", {})
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # routes CPU tensors to the kernels' check
    if failure == "no triton":
        monkeypatch.setitem(sys.modules, "tde_det.layers.fused.kernels", None)  # ImportError
        monkeypatch.delattr(tde_det.layers.fused, "kernels", raising=False)
    else:
        fk = pytest.importorskip("tde_det.layers.fused.kernels")
        monkeypatch.setattr(fk, "self_check", _fail)
    x = torch.randn(4, 8, requires_grad=True)
    clf = NormalizedClassifier(8, 3, fused=True)
    with caplog.at_level(logging.WARNING, logger=tde_det.layers.fused.__name__):
        for _ in range(2):
            z = clf(x)
            z.sum().backward()
    assert "Fused" not in type(z.grad_fn).__name__  # the eager maths
    assert x.grad is not None and clf.weight.grad is not None
    warned = [r.getMessage() for r in caplog.records if "FUSED_KERNELS" in r.getMessage()]
    assert len(warned) == 1, warned
    assert ("sm_60" if failure == "first try fails" else "ModuleNotFoundError") in warned[0]
    assert "eager PyTorch maths" in warned[0]
