"""The Triton kernels of MODEL.TDE.FUSED_KERNELS compile for NVIDIA GPUs, ahead of time, on a
machine without one: Triton's front end, its optimiser and ptxas down to a cubin. The
interpreter (test_fused_kernels_interpreted.py) checks their arithmetic but not that they
compile; this checks that (types, shapes, control flow) for Hopper (the H100) and Ampere."""
import pytest

triton = pytest.importorskip("triton")
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from tde_det.layers.fused import kernels as fk  # noqa: E402

F32, F64 = "*fp32", "*fp64"
SIDES = {"add_a": "fp32", "lo_a": "fp32", "scale_a": "fp32", "add_b": "fp32", "lo_b": "fp32",
         "scale_b": "fp32"}
SUMS = {"BLOCK_R": fk._SUM_BLOCK_R, "BLOCK_D": fk._SUM_BLOCK_D}
NORMALIZE = {"a_ptr": F32, "b_ptr": F32, "out_ptr": F32, "norm_ptr": F32, "rows_a": "i32",
             "rows_b": "i32", "head_dim": "i32", **SIDES, "labels_ptr": "*i64", "ema_ptr": F32,
             "num_classes": "i32", "mu": "fp32", "BLOCK": "constexpr", "UPDATE": "constexpr",
             "BLOCK_R": "constexpr", "BLOCK_D": "constexpr"}
KERNELS = {
    # the classifier's forward with the head-direction update in its launch, and without
    "_normalize_heads_kernel": (NORMALIZE, {"BLOCK": 512, "UPDATE": True, **SUMS}),
    "_normalize_heads_kernel[no update]": (
        {**NORMALIZE, "labels_ptr": F32}, {"BLOCK": 512, "UPDATE": False, **SUMS}),
    "_normalize_heads_backward_kernel": (
        {"g_ptr": F32, "out_ptr": F32, "norm_ptr": F32, "grad_ptr": F32, "first_row": "i32",
         "rows_a": "i32", "head_dim": "i32", **SIDES, "BLOCK": "constexpr"}, {"BLOCK": 512}),
    "_foreground_sums_kernel": (
        {"x_ptr": F32, "labels_ptr": "*i64", "sums_ptr": F64, "rows": "i32", "dim": "i32",
         "num_classes": "i32", "BLOCK_R": "constexpr", "BLOCK_D": "constexpr"}, SUMS),
    "_head_direction_update_kernel": (
        {"ema_ptr": F32, "sums_ptr": F64, "dim": "i32", "mu": "fp32", "BLOCK": "constexpr"},
        {"BLOCK": fk._UPDATE_BLOCK}),
    "_foreground_update_kernel": (
        {"x_ptr": F32, "labels_ptr": "*i64", "ema_ptr": F32, "rows": "i32", "dim": "i32",
         "num_classes": "i32", "mu": "fp32", "BLOCK_R": "constexpr", "BLOCK_D": "constexpr"},
        SUMS),
}


@pytest.mark.parametrize("arch", [90, 80])
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernel_compiles_to_a_cubin(name, arch):
    signature, constexprs = KERNELS[name]
    kernel = getattr(fk, name.split("[")[0])  # "[...]": another specialisation of the kernel
    try:
        compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
                                  target=GPUTarget("cuda", arch, 32))
    except (RuntimeError, FileNotFoundError) as e:  # no ptxas in this Triton build
        if "ptxas" in str(e):
            pytest.skip(f"Triton has no ptxas here: {e}")
        raise
    assert compiled.asm["cubin"] and "ld.global" in compiled.asm["ptx"]
