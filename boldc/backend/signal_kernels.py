"""C emission helpers for the integer backward signals and the training form of BatchNorm
(docs/training.md, "Integer backward signals", "BatchNorm in training"): calls into
runtime/bd_grad.c, bd_signal.c, bd_norm.c and bd_train.c, which compute the interpreter's
bits exactly. The emitters (``emitters/training.py``) pick the helper.

The arena scratch of each call is computed here with the runtime's own formula, and the
generated ``*_init`` compares it with the runtime's ``*_scratch`` query (a drift is an
init error, never an overrun).
"""

from __future__ import annotations

from boldc.backend.cexpr import product
from boldc.backend.ckernel import CKernel, COp, CTensor, scalar_literal
from boldc.backend.grad_kernels import NR, _concrete, _conv_fields, _features_last, flip_runs, gemm_scratch
from boldc.backend.kernels import DTYPE_CODE, _init, _r, rows_of, runtime_call
from boldc.backend.layout import BATCH
from boldc.ir.types import DType

INT32_MAX = 2**31 - 1
ROUNDING_CODE = {"nearest": "BD_ROUND_NEAREST", "stochastic": "BD_ROUND_STOCHASTIC", "log": "BD_ROUND_LOG"}


def _wide(reduction: int, dy: CTensor) -> bool:
    """The runtime sums in int64 when ``reduction`` terms of the signal's largest magnitude
    (2^7 for i8, 2^15 for i16) could pass the int32 range."""
    return reduction * (128 if dy.dtype is DType.i8 else 32768) > INT32_MAX


# The integer panels of the runtime's GEMM (bd_gemm.c, bd_isa.h) per signal type: bytes per value,
# values per group (BD_IG16, BD_IG8), the k-block (BD_KC_I16, BD_KC_I8), the bytes after each B
# panel (an int8 panel's BD_NR int32 column sums) and the row block (BD_MC_INT).
PANELS = {DType.i16: {"size": 2, "group": 2, "k_block": 512, "b_extra": 0, "m_block": 512},
          DType.i8: {"size": 1, "group": 4, "k_block": 1024, "b_extra": 4 * NR, "m_block": 512}}


def _scratch(max_m: int, max_n: int, reduction: int, cop: COp, dy: CTensor, outputs: int) -> int:
    """The runtime's exact_scratch(): the integer GEMM's panels, then int64 accumulators of
    ``outputs`` results when the sums may pass the int32 range."""
    return (gemm_scratch(max_m, max_n, reduction, cop.max_threads, **PANELS[dy.dtype])
            + (_r(8 * outputs) if _wide(reduction, dy) else 0))


def is_integer_signal(t: CTensor) -> bool:
    return t.dtype in (DType.i8, DType.i16)


# --- layer gradients of integer signals -------------------------------------------------------


def linear_grad_x_int(cop: COp) -> CKernel:
    """dx = scale · dy_scale · Σ_j q·e(W), the sum exact: runtime ``bd_linear_grad_x_int``."""
    dy, w, dy_scale = cop.ins
    _features_last(cop, dy)
    m, k = w.shape
    max_rows = _concrete(dy.shape[:-1], cop.max_batch)
    scratch = _scratch(max_rows, k, m, cop, dy, max_rows * k)
    return runtime_call("bd_lgrad", _lgrad_fields(cop, m, k, w, max_rows),
                        f"bd_linear_grad_x_int(&cfg, {{ex}}, {rows_of(dy)}, {dy.name}, {w.name}, {dy_scale.name}, "
                        f"{cop.out.name}, scratch);", scratch, "bd_linear_grad_x_int_scratch")


def linear_grad_w_int(cop: COp) -> CKernel:
    """dW = scale · dy_scale · Σ_k q·e(x), the sum exact: runtime ``bd_linear_grad_w_int``."""
    dy, x, dy_scale = cop.ins
    _features_last(cop, dy)
    _features_last(cop, x)
    m, k = cop.out.shape
    max_rows = _concrete(dy.shape[:-1], cop.max_batch)
    scratch = _scratch(m, k, max_rows, cop, dy, m * k)
    return runtime_call("bd_lgrad", _lgrad_fields(cop, m, k, x, max_rows),
                        f"bd_linear_grad_w_int(&cfg, {{ex}}, {rows_of(dy)}, {dy.name}, {x.name}, {dy_scale.name}, "
                        f"{cop.out.name}, scratch);", scratch, "bd_linear_grad_w_int_scratch")


def _lgrad_fields(cop: COp, m: int, k: int, other: CTensor, max_rows: int) -> dict:
    return {"M": m, "K": k, "other_type": DTYPE_CODE[other.dtype], "scale": _double(cop.attrs["scale"]),
            "max_rows": max_rows, "max_threads": cop.max_threads, "dy_type": DTYPE_CODE[cop.ins[0].dtype]}


def conv2d_grad_x_int(cop: COp) -> CKernel:
    """The transposed convolution of an integer signal, exact: ``bd_conv2d_grad_x_int``."""
    dy, w, dy_scale = cop.ins
    f = {**_conv_fields(cop, cop.out.shape, dy.shape, w.shape, w), "dy_type": DTYPE_CODE[dy.dtype]}
    mg, cg = f["M"] // f["groups"], f["C"] // f["groups"]
    pixels = f["max_batch"] * f["H"] * f["W"]
    reduction = f["kh"] * f["kw"] * mg
    scratch = _scratch(pixels, cg, reduction, cop, dy, pixels * f["C"])
    return runtime_call("bd_cgrad", f, f"bd_conv2d_grad_x_int(&cfg, {{ex}}, {dy.name}, {w.name}, {dy_scale.name}, "
                                       f"{cop.out.name}, scratch);", scratch, "bd_conv2d_grad_x_int_scratch", dy.lead)


def conv2d_grad_w_int(cop: COp) -> CKernel:
    """The correlation of an integer signal with e(x padded), exact: ``bd_conv2d_grad_w_int``."""
    dy, x, dy_scale = cop.ins
    if cop.attrs.get("pad_value", 0.0) not in (-1.0, 0.0, 1.0):
        raise cop.fail(f"pad_value {cop.attrs['pad_value']} with an integer signal: the exact sums need -1, 0 or 1")
    f = {**_conv_fields(cop, x.shape, dy.shape, cop.out.shape, x), "dy_type": DTYPE_CODE[dy.dtype]}
    mg, cg = f["M"] // f["groups"], f["C"] // f["groups"]
    reduction = f["max_batch"] * f["OH"] * f["OW"]
    taps = f["kh"] * f["kw"] * cg
    scratch = _scratch(mg, taps, reduction, cop, dy, f["M"] * taps)
    return runtime_call("bd_cgrad", f, f"bd_conv2d_grad_w_int(&cfg, {{ex}}, {dy.name}, {x.name}, {dy_scale.name}, "
                                       f"{cop.out.name}, scratch);", scratch, "bd_conv2d_grad_w_int_scratch", dy.lead)


def channel_sum_int(cop: COp, axis: int) -> CKernel:
    """y[c] = dy_scale · Σ q over every axis but ``axis`` (exact in int64): ``bd_channel_sum_int``."""
    dy, dy_scale = cop.ins
    q = dy.layout.perm.index(axis)  # the channel axis among the stored ones
    extents = dy.layout.storage_extents
    outer, inner = product(*extents[:q]), product(*extents[q + 1:])
    return CKernel(f"bd_channel_sum_int(ex, {outer}, {dy.shape[axis]}, {inner}, {dy.name}, {DTYPE_CODE[dy.dtype]}, "
                   f"{dy_scale.name}, {cop.out.name});\n")


# --- quantize_signal, the loss signal, the i16 accumulator ---------------------------------------


def quantize_signal(cop: COp) -> CKernel:
    """q, scale = the integer signal of z and its power-of-two scale: ``bd_quantize_signal``
    (a map is stored [N][H·W][C], anything else [shape[0]][the rest])."""
    z = cop.ins[0]
    step = cop.ins[1].name if len(cop.ins) > 1 else "NULL"
    q, scale = cop.outs
    a = cop.attrs
    if z.rank == 0:
        raise cop.fail("a signal of rank 0 cannot be quantized in C")
    if z.rank == 4:
        hw, channels = z.shape[2] * z.shape[3], z.shape[1]
    else:
        hw, channels = 1, _concrete(z.shape[1:], 1)
    fields = {"bits": a["bits"], "rounding": ROUNDING_CODE[a["rounding"]], "seed": f"UINT64_C({a['seed'] % 2**64})",
              "stream": f"UINT64_C({a['stream'] % 2**64})", "hw": hw, "C": channels, "max_threads": cop.max_threads}
    return CKernel(f"static const bd_quant cfg = {_init(fields)};\n"
                   f"bd_quantize_signal(&cfg, ex, {z.lead}, {z.name}, {step}, {q.name}, {scale.name});\n")


def softmax_xent_grad(cop: COp, positions: tuple, label_check: tuple[str, str]) -> CKernel:
    """dz = softmax(z) - onehot at every position whose label is not ignore_index (0 at the
    others; /their number for "mean"), with boldc's exp: ``bd_softmax_xent_grad_map`` over
    ``positions`` (``loss_kernels.xent_positions``)."""
    z, labels = cop.ins
    outer, inner, classes, pos_stride, class_stride = positions
    mean = int(cop.attrs["reduction"] == "mean")
    check, message = label_check
    return CKernel(f"bd_softmax_xent_grad_map({outer}, {inner}, {classes}, {pos_stride}, {class_stride}, {z.name}, "
                   f"{labels.name}, {cop.attrs['ignore_index']}, {mean}, {cop.out.name});\n", input_check=check,
                   input_check_message=message, input_check_operands=(1,))


def flip_update_i16(cop: COp) -> CKernel:
    """The Boolean optimizer with an i16 accumulator: ``bd_flip_update_i16``."""
    w, m, beta, q, eta, saturated = cop.ins
    runs, d = flip_runs(cop)
    step = scalar_literal(cop.attrs["m_step"], "float")
    return CKernel(f"bd_flip_update_i16(ex, {runs}, {d}, {w.name}, {m.name}, {beta.name}, {q.name}, {eta.name}, "
                   f"{step}, {saturated.name});\n")


# --- BatchNorm with batch statistics --------------------------------------------------------------


def _bnorm(cop: COp, x: CTensor) -> tuple[dict, int]:
    """The runtime's config of a BatchNorm over ``x`` and the scratch it needs."""
    if x.rank < 2 or BATCH in x.shape[1:]:
        raise cop.fail(f"batch normalisation in C needs a static [N, C, ...] input, got {x.ref}")
    channels = x.shape[1]
    inner = _concrete(x.shape[2:], 1)
    max_batch = _concrete(x.shape[:1], cop.max_batch)
    fields = {"C": channels, "inner": inner, "channels_last": int(x.rank == 4 and x.layout.perm == (0, 2, 3, 1)),
              "x_type": DTYPE_CODE[x.dtype], "epsilon": _double(cop.attrs["epsilon"]),
              "momentum": _double(cop.attrs.get("momentum", 0.1)), "max_batch": max_batch,
              "max_threads": cop.max_threads}
    return fields, 5 * _r(8 * channels)  # the statistics: mean, 1/std, variance and two sums


def batchnorm_train(cop: COp) -> CKernel:
    """y with the batch's statistics, the running ones updated: ``bd_batchnorm_train``; a call
    with one value per channel (n·inner < 2) is refused before the function runs."""
    x, scale, bias, running_mean, running_var = cop.ins
    fields, scratch = _bnorm(cop, x)
    kernel = runtime_call("bd_bnorm", fields, f"bd_batchnorm_train(&cfg, {{ex}}, {x.name}, {scale.name}, "
                                              f"{bias.name}, {running_mean.name}, {running_var.name}, "
                                              f"{cop.out.name}, scratch);", scratch, "bd_batchnorm_scratch", x.lead)
    count = f"(long)({x.lead}) * {fields['inner']}"
    if isinstance(x.shape[0], int) and x.shape[0] * fields["inner"] < 2:
        raise cop.fail("batchnorm_train needs more than one value per channel; this input has one "
                       "(a fixed batch of 1 with 1x1 maps): train with a batch of at least 2")
    if not isinstance(x.shape[0], int):
        kernel.input_check = f"if ({count} < 2) return 1;\n"
        kernel.input_check_message = ("batchnorm_train needs more than one value per channel: train with a batch "
                                      "of at least 2")
    return kernel


def batchnorm_train_grad_x(cop: COp) -> CKernel:
    """dx through the batch statistics: ``bd_batchnorm_train_grad_x`` (may run in place over dy)."""
    dy, x, scale = cop.ins
    fields, scratch = _bnorm(cop, x)
    kernel = runtime_call("bd_bnorm", fields, f"bd_batchnorm_train_grad_x(&cfg, {{ex}}, {dy.name}, {x.name}, "
                                              f"{scale.name}, {cop.out.name}, scratch);", scratch,
                          "bd_batchnorm_scratch", x.lead)
    kernel.inplace = 0
    return kernel


def batchnorm_train_grad_scale(cop: COp) -> CKernel:
    """dscale = Σ dy·x̂ per channel: ``bd_batchnorm_train_grad_scale``."""
    dy, x = cop.ins
    fields, scratch = _bnorm(cop, x)
    return runtime_call("bd_bnorm", fields, f"bd_batchnorm_train_grad_scale(&cfg, {{ex}}, {dy.name}, {x.name}, "
                                            f"{cop.out.name}, scratch);", scratch, "bd_batchnorm_scratch", x.lead)


def _double(v) -> str:
    return scalar_literal(float(v), "double")
