"""Shape rules and numpy kernels shared by several op definitions.

Layout is NCHW for feature maps and [M, C/groups, kh, kw] for filters, as in ONNX.
``pad`` is [top, left, bottom, right] (ONNX's [x1_begin, x2_begin, x1_end, x2_end]).
"""

from __future__ import annotations

import math

import numpy as np

from boldc.ir.types import Dim, DType, TensorType, size_product
from boldc.ops.registry import Attr, OpDef, TypeCheck

# Attribute specs shared by the convolution and pooling ops.
STRIDE = Attr("stride", "ints", [1, 1], length=2, doc="[sh, sw]")
PAD = Attr("pad", "ints", [0, 0, 0, 0], length=4, doc="[top, left, bottom, right]")
DILATION = Attr("dilation", "ints", [1, 1], length=2, doc="[dh, dw]")
GROUPS = Attr("groups", "int", 1, doc="input and output channels split into this many groups")
KERNEL = Attr("kernel", "ints", length=2, doc="[kh, kw]")
CEIL_MODE = Attr("ceil_mode", "bool", False, doc="round the output size up")
NEURON_LOGIC = Attr("logic", "str", "xnor", choices=("xnor", "xor"), doc="neuron logic L")


# --- type helpers --------------------------------------------------------------------


def expect_rank(t: TensorType, rank: int, what: str) -> None:
    if t.rank != rank:
        raise TypeCheck(f"{what} must have rank {rank}, got {t}")


def expect_dtype(t: TensorType, allowed, what: str) -> None:
    """``allowed`` is a predicate name ('float', 'int', 'bool') or a set of them."""
    kinds = {allowed} if isinstance(allowed, str) else set(allowed)
    ok = ("float" in kinds and t.dtype.is_float) or ("int" in kinds and t.dtype.is_int) or \
         ("bool" in kinds and t.dtype.is_bool)
    if not ok:
        names = " or ".join(sorted({"float": "f32", "int": "an integer type", "bool": "b1"}[k] for k in kinds))
        raise TypeCheck(f"{what} must be {names}, got {t}")


class FloatUnary(OpDef):
    """Shared type rule of the one-operand float functions (activations, exp, erf): an f32
    operand x, a result of the same type."""

    operands = ("x",)

    def infer(self, types, attrs):
        expect_dtype(types[0], "float", "input")
        return [types[0]]


def expect_static(d: Dim, what: str) -> int:
    if not isinstance(d, int):
        raise TypeCheck(f"{what} must be a static size, got symbol '{d}'")
    return d


def expect_shape(t: TensorType, shape: tuple, what: str) -> None:
    if tuple(t.shape) != tuple(shape):
        want = ", ".join(str(d) for d in shape)
        raise TypeCheck(f"{what} must have shape [{want}], got {t}")


def channel_vector(t: TensorType, channels: Dim, what: str, dtypes=("float",)) -> None:
    """A per-channel parameter: rank 1, length ``channels``."""
    expect_dtype(t, dtypes, what)
    expect_shape(t, (channels,), what)


# --- convolution / pooling geometry ----------------------------------------------------


def conv_out_size(size: int, k: int, stride: int, pad_lo: int, pad_hi: int, dilation: int = 1,
                  ceil_mode: bool = False) -> int:
    """Output length of a sliding window: floor((size + pads - d(k-1) - 1)/s) + 1.

    With ``ceil_mode`` the division rounds up, but a window may not start in the
    trailing padding (the rule of PyTorch and onnxruntime)."""
    span = dilation * (k - 1) + 1
    num = size + pad_lo + pad_hi - span
    if num < 0:
        raise TypeCheck(f"window of {span} does not fit in input of {size} with pads {pad_lo}+{pad_hi}")
    if not ceil_mode:
        return num // stride + 1
    out = -(-num // stride) + 1
    if (out - 1) * stride >= size + pad_lo:
        out -= 1
    return out


def window_out_hw(x: TensorType, kernel, attrs, ceil_mode: bool = False) -> tuple[int, int]:
    """Output (H, W) of a conv or pool over NCHW input ``x``."""
    h = expect_static(x.shape[2], "input height")
    w = expect_static(x.shape[3], "input width")
    sh, sw = attrs["stride"]
    pt, pl, pb, pr = attrs["pad"]
    dh, dw = attrs.get("dilation", [1, 1])
    if min(sh, sw, dh, dw) < 1 or min(pt, pl, pb, pr) < 0:
        raise TypeCheck("strides and dilations must be >= 1 and pads >= 0")
    if min(kernel) < 1:
        raise TypeCheck(f"kernel {list(kernel)} must be >= 1 in both dimensions")
    return (conv_out_size(h, kernel[0], sh, pt, pb, dh, ceil_mode),
            conv_out_size(w, kernel[1], sw, pl, pr, dw, ceil_mode))


def conv_infer(x: TensorType, w: TensorType, attrs) -> tuple[Dim, int, int, int]:
    """Checks a convolution's operand shapes; returns (N, M, OH, OW)."""
    expect_rank(x, 4, "input")
    expect_rank(w, 4, "weights")
    m, cg, kh, kw = (expect_static(d, "filter dimension") for d in w.shape)
    c = expect_static(x.shape[1], "input channels")
    g = attrs["groups"]
    if g < 1 or c % g or m % g:
        raise TypeCheck(f"groups={g} must divide input channels {c} and output channels {m}")
    if cg * g != c:
        raise TypeCheck(f"weights {w} expect {cg * g} input channels, input {x} has {c}")
    oh, ow = window_out_hw(x, (kh, kw), attrs)
    return x.shape[0], m, oh, ow


def conv_transpose_out_hw(x_shape, w_shape, attrs) -> tuple[int, int]:
    """Output (H, W) of a transposed convolution of x [N, C, H, W] with w [C, M/g, kh, kw]:
    (H - 1)·s - pads + d·(k - 1) + 1 + output_padding per axis."""
    pt, pl, pb, pr = attrs["pad"]
    return tuple((size - 1) * s - lo - hi + d * (k - 1) + 1 + extra
                 for size, k, s, d, lo, hi, extra in zip(x_shape[2:], w_shape[2:], attrs["stride"], attrs["dilation"],
                                                         (pt, pl), (pb, pr), attrs["output_padding"]))


def conv_transpose_infer(x: TensorType, w: TensorType, attrs) -> tuple[Dim, int, int, int]:
    """Checks a transposed convolution's operand shapes (w [C, M/g, kh, kw]); returns (N, M, OH, OW).
    Each output padding is below its stride, so that the convolution of the output with the
    same geometry has the input's size again (the backward rule relies on it)."""
    expect_rank(x, 4, "input")
    expect_rank(w, 4, "weights")
    c, mg, kh, kw = (expect_static(d, "filter dimension") for d in w.shape)
    hw = [expect_static(d, f"input {what}") for d, what in zip(x.shape[2:], ("height", "width"))]
    g = attrs["groups"]
    if x.shape[1] != c:
        raise TypeCheck(f"weights {w} ([in, out/groups, kh, kw]) expect {c} input channels, input {x} has "
                        f"{x.shape[1]}")
    if g < 1 or c % g:
        raise TypeCheck(f"groups={g} must divide the input channels {c}")
    if min(*attrs["stride"], *attrs["dilation"], kh, kw) < 1 or min(attrs["pad"]) < 0:
        raise TypeCheck("strides, dilations and the kernel must be >= 1 and pads >= 0")
    if any(not 0 <= p < s for p, s in zip(attrs["output_padding"], attrs["stride"])):
        raise TypeCheck(f"output_padding {attrs['output_padding']} must be >= 0 and below the stride "
                        f"{attrs['stride']} in each dimension")
    oh, ow = conv_transpose_out_hw((0, 0, *hw), w.shape, attrs)
    if oh < 1 or ow < 1:
        raise TypeCheck(f"pads {attrs['pad']} leave no output of the transposed convolution of {x} with {w}")
    return x.shape[0], mg * g, oh, ow


def linear_infer(x: TensorType, w: TensorType) -> tuple[tuple, int]:
    """Checks x [..., m] against w [n, m]; returns (leading dims, n)."""
    if x.rank < 2:
        raise TypeCheck(f"input must have rank >= 2, got {x}")
    expect_rank(w, 2, "weights")
    n, m = (expect_static(d, "weight dimension") for d in w.shape)
    if x.shape[-1] != m:
        raise TypeCheck(f"input {x} has {x.shape[-1]} features, weights {w} expect {m}")
    return tuple(x.shape[:-1]), n


# --- numpy kernels ---------------------------------------------------------------------


def signed(x: np.ndarray) -> np.ndarray:
    """e(.) of docs/method.md §1 for b1 (T -> +1, F -> -1); other dtypes as float32."""
    if x.dtype == np.bool_:
        return np.where(x, np.float32(1), np.float32(-1))
    return x.astype(np.float32, copy=False)


def pad_nchw(x: np.ndarray, pad, value) -> np.ndarray:
    pt, pl, pb, pr = pad
    if not (pt or pl or pb or pr):
        return x
    return np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=value)


def windows(xp: np.ndarray, kernel, stride, dilation, out_hw) -> np.ndarray:
    """Sliding windows of padded NCHW ``xp``: view of shape [N, C, OH, OW, kh, kw]."""
    kh, kw = kernel
    sh, sw = stride
    dh, dw = dilation
    oh, ow = out_hw
    n, c, hp, wp = xp.shape
    # Make sure the view never reads past the array when ceil_mode adds a window.
    need_h = (oh - 1) * sh + dh * (kh - 1) + 1
    need_w = (ow - 1) * sw + dw * (kw - 1) + 1
    if need_h > hp or need_w > wp:
        raise AssertionError("window view out of bounds (padding not applied)")
    s = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, shape=(n, c, oh, ow, kh, kw),
        strides=(s[0], s[1], s[2] * sh, s[3] * sw, s[2] * dh, s[3] * dw),
        writeable=False,
    )


def conv_nchw(x: np.ndarray, w: np.ndarray, attrs, pad_value=0.0) -> np.ndarray:
    """Correlation of float32 x [N,C,H,W] with w [M,C/g,kh,kw] (no bias), float32."""
    g = attrs["groups"]
    n = x.shape[0]
    m, cg, kh, kw = w.shape
    oh, ow = window_out_hw(TensorType(DType.f32, x.shape), (kh, kw), attrs)
    xp = pad_nchw(x, attrs["pad"], pad_value)
    win = windows(xp, (kh, kw), attrs["stride"], attrs["dilation"], (oh, ow))
    out = np.empty((n, m, oh, ow), dtype=np.float32)
    mg = m // g
    for gi in range(g):
        # [N, OH, OW, cg*kh*kw] @ [cg*kh*kw, mg]
        patches = win[:, gi * cg:(gi + 1) * cg].transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, cg * kh * kw)
        filt = w[gi * mg:(gi + 1) * mg].reshape(mg, cg * kh * kw)
        res = patches @ filt.T
        out[:, gi * mg:(gi + 1) * mg] = res.reshape(n, oh, ow, mg).transpose(0, 3, 1, 2)
    return out


def transposed_conv_nchw(x: np.ndarray, w: np.ndarray, attrs, out_hw) -> np.ndarray:
    """The transposed convolution of float64 x [N, M, H, W] with w [M, C/g, kh, kw] into
    [N, C, *out_hw], float64: every x[n, m, h, w] · w[m, c', i, j] is added at
    [n, g(m)·C/g + c', h·sh + i·dh - pt, w·sw + j·dw - pl]; what lands outside is dropped.
    (conv2d_grad_x, with x = dy and out_hw the input size, and conv_transpose2d.)"""
    n, m, h, wd = x.shape
    _, cg, kh, kw = w.shape
    g = attrs["groups"]
    pt, pl, _, _ = attrs["pad"]
    sh, sw = attrs["stride"]
    dh, dw = attrs["dilation"]
    oh, ow = out_hw
    # room for every tap: the top/left padding and whatever reaches past the bottom/right
    full_h = max(pt + oh, (h - 1) * sh + (kh - 1) * dh + 1)
    full_w = max(pl + ow, (wd - 1) * sw + (kw - 1) * dw + 1)
    yp = np.zeros((n, cg * g, full_h, full_w))
    mg = m // g
    for gi in range(g):
        xg = x[:, gi * mg:(gi + 1) * mg]
        for i in range(kh):
            for j in range(kw):
                # [n, h, w, cg] -> [n, cg, h, w], scattered onto the strided positions
                part = np.tensordot(xg, w[gi * mg:(gi + 1) * mg, :, i, j], axes=([1], [0]))
                yp[:, gi * cg:(gi + 1) * cg, i * dh:i * dh + sh * (h - 1) + 1:sh,
                   j * dw:j * dw + sw * (wd - 1) + 1:sw] += part.transpose(0, 3, 1, 2)
    return yp[:, :, pt:pt + oh, pl:pl + ow]


def pool_nchw(x: np.ndarray, attrs, reduce: str) -> np.ndarray:
    """Max or average pooling of NCHW ``x`` with ONNX attributes.

    Max pads with -inf (or the dtype minimum, or F for bool). Average divides by the
    window positions inside the input (``count_include_pad=False``) or inside the
    padded input (``True``); positions added by ``ceil_mode`` beyond the pads never
    count."""
    kh, kw = attrs["kernel"]
    dil = attrs.get("dilation", [1, 1])
    oh, ow = window_out_hw(TensorType(DType.f32, x.shape), (kh, kw), attrs, attrs["ceil_mode"])
    pt, pl, pb, pr = attrs["pad"]
    sh, sw = attrs["stride"]
    n, c, h, w = x.shape
    # Extra trailing padding so that ceil_mode windows stay inside the array.
    extra_h = max(0, (oh - 1) * sh + dil[0] * (kh - 1) + 1 - (h + pt + pb))
    extra_w = max(0, (ow - 1) * sw + dil[1] * (kw - 1) + 1 - (w + pl + pr))
    pad = [pt, pl, pb + extra_h, pr + extra_w]
    if reduce == "max":
        if x.dtype == np.bool_:
            fill = False
        elif np.issubdtype(x.dtype, np.integer):
            fill = np.iinfo(x.dtype).min
        else:
            fill = -np.inf
        win = windows(pad_nchw(x, pad, fill), (kh, kw), (sh, sw), dil, (oh, ow))
        return win.max(axis=(4, 5)) if x.dtype != np.bool_ else win.any(axis=(4, 5))
    xf = x.astype(np.float32, copy=False)
    win = windows(pad_nchw(xf, pad, 0.0), (kh, kw), (sh, sw), dil, (oh, ow))
    total = win.sum(axis=(4, 5), dtype=np.float64)
    # Count the positions of each window that fall in the counted region.
    lo_h, hi_h = (-pt, h + pb) if attrs["count_include_pad"] else (0, h)
    lo_w, hi_w = (-pl, w + pr) if attrs["count_include_pad"] else (0, w)
    rows = count_inside(oh, kh, sh, dil[0], -pt, lo_h, hi_h)
    cols = count_inside(ow, kw, sw, dil[1], -pl, lo_w, hi_w)
    count = np.outer(rows, cols)
    return (total / count).astype(np.float32)


def count_inside(out: int, k: int, stride: int, dil: int, start: int, lo: int, hi: int) -> np.ndarray:
    pos = start + np.arange(out)[:, None] * stride + np.arange(k)[None, :] * dil
    return ((pos >= lo) & (pos < hi)).sum(axis=1)


# --- symbolic sizes for reshape/flatten --------------------------------------------------


def single_dim(dims, what: str) -> Dim:
    """The product of ``dims`` as one dimension: an int, or a lone symbol."""
    coeff, syms = size_product(dims)
    if not syms:
        return coeff
    if len(syms) == 1 and coeff == 1:
        return syms[0]
    raise TypeCheck(f"{what}: size {coeff}*{'*'.join(syms)} is not expressible (only a lone "
                    "symbolic dimension such as the batch can be kept)")


# --- exp, identical in numpy and in the C runtime ------------------------------------------------
# numpy's and the C library's exp and tanh differ in the last bit of a double for some
# inputs (measured: 5% of exp, 25% of tanh arguments), and the difference can reach an f32
# result. The backward rules that feed integer signals (the threshold's tanh derivative, the
# softmax cross-entropy gradient) compute exp by this fixed sequence of IEEE double
# operations instead; runtime/boldc_rt.h's bd_exp is the same sequence, so both give the same
# bits on every machine (docs/training.md, "Determinism").

LN2_HI = 6.93147180369123816490e-01   # ln 2 to 32 bits (k·LN2_HI is exact for |k| < 2^21)
LN2_LO = 1.90821492927058770002e-10   # ln 2 - LN2_HI
LOG2_E = 1.44269504088896338700e+00
EXP_TERMS = tuple(1.0 / math.factorial(n) for n in range(14))  # Taylor terms of exp(r), |r| <= ln2/2


def exp_fixed(x: np.ndarray) -> np.ndarray:
    """e^x in float64: k = rint(x·log2 e), r = (x - k·LN2_HI) - k·LN2_LO, exp(r) by Horner's
    rule on EXP_TERMS (error below 1e-16 relative), times 2^k; 0 below -745, inf above 709."""
    x = np.asarray(x, dtype=np.float64)
    clipped = np.clip(x, -746.0, 710.0)
    k = np.rint(clipped * LOG2_E)
    r = (clipped - k * LN2_HI) - k * LN2_LO
    p = np.full(r.shape, EXP_TERMS[-1])
    for c in EXP_TERMS[-2::-1]:
        p = p * r + c
    with np.errstate(over="ignore"):  # above 709: inf, as exp
        return np.ldexp(p, k.astype(np.int64))


def tanh_derivative(u: np.ndarray) -> np.ndarray:
    """1 - tanh²(u) = 4t / (1 + t)² with t = e^(-2|u|) (``exp_fixed``), in float64."""
    t = exp_fixed(-2.0 * np.abs(np.asarray(u, dtype=np.float64)))
    return 4.0 * t / ((1.0 + t) * (1.0 + t))


def matmul_in_order(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a [R, K] · b [K, M] in float64, each sum taken in k order (k = 0, 1, ...): the same
    sequence of exactly rounded double additions the C runtime performs, so both give the
    same bits (BLAS's order depends on the CPU). Products of f32 (or ±1) values are exact
    in double; the float layers whose values reach the integer signals use it."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    acc = np.zeros((a.shape[0], b.shape[1]))
    for k in range(a.shape[1]):
        acc = acc + a[:, k, None] * b[None, k, :]
    return acc
