"""Local response normalization across channels (ONNX LRN, AlexNet's) and its gradient.

Channels are axis 1. Channel c's window is c' in [c - lo, c + hi] clipped to the channels,
lo = floor((size - 1)/2), hi = ceil((size - 1)/2): ONNX's window (for an even size one
channel more after c than before; PyTorch's local_response_norm puts the extra channel
before c, docs/convert.md). Values are computed in float64 and rounded once to f32; the
window sums are sequential, ((0 + v_lo) + v_lo+1) + ..., in ascending c' (``window_sums``),
the order the C and the torch engine follow. d^β is the C library's ``pow`` (numpy's, libm's,
torch's may differ in the last bit of the double, which reaches the f32 result only at a
rounding boundary).
"""

from __future__ import annotations

import math

import numpy as np

from boldc.ir.types import DType
from boldc.ir.works import ARITH, per_element
from boldc.ops.common import expect_dtype, expect_static
from boldc.ops.float_grad_ops import signal_stream
from boldc.ops.grad_ops import GradOp, as_f32, as_f64, expect_same_shape, expect_signal
from boldc.ops.registry import Attr, OpDef, TypeCheck, register
from boldc.ops.traits import Gradient, Normalization

LRN_ATTRS = (Attr("size", "int", doc="channels in the window"), Attr("alpha", "float", 1e-4),
             Attr("beta", "float", 0.75), Attr("bias", "float", 1.0))


def window(attrs) -> tuple[int, int]:
    """(lo, hi): channel c's window is [c - lo, c + hi] (ONNX: floor and ceil of (size - 1)/2)."""
    return (attrs["size"] - 1) // 2, attrs["size"] // 2


def window_sums(v: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """s[:, c] = Σ_{c' = c-lo}^{c+hi} v[:, c'] over the channels that exist (axis 1), float64,
    added one at a time in ascending c' from 0.0."""
    channels = v.shape[1]
    out = np.zeros(v.shape)
    for k in range(-lo, hi + 1):
        if abs(k) < channels:
            out[:, max(-k, 0):channels - max(k, 0)] += v[:, max(k, 0):channels + min(k, 0)]
    return out


def lrn_denominator(x: np.ndarray, attrs) -> np.ndarray:
    """d = bias + (alpha / size) · Σ_window x² (float64)."""
    lo, hi = window(attrs)
    return attrs["bias"] + (attrs["alpha"] / attrs["size"]) * window_sums(x * x, lo, hi)


def _check_attrs(attrs) -> None:
    if attrs["size"] < 1:
        raise TypeCheck(f"size must be >= 1, got {attrs['size']}")


def _check_input(t, what: str) -> None:
    expect_dtype(t, ("float", "int", "bool"), what)
    if t.rank < 2:
        raise TypeCheck(f"{what} must have rank >= 2 (channels on axis 1), got {t}")
    expect_static(t.shape[1], "the channel count")


def _check_params(attrs) -> None:
    """bias > 0 and alpha >= 0 keep the denominator d = bias + alpha/size · Σ x² positive: the
    result then has the sign of x (which makes removing an LRN before a threshold exact) and
    d^beta is defined."""
    bias, alpha = attrs["bias"], attrs["alpha"]
    if not (math.isfinite(bias) and bias > 0 and math.isfinite(alpha) and alpha >= 0):
        raise TypeCheck(f"LRN needs bias > 0 and alpha >= 0 (a positive denominator), got bias {bias}, alpha {alpha}")


def _window_ops(attrs, extra: int):
    """size - 1 additions of the window sum, ``extra`` other operations, per element."""
    return ARITH.times(attrs["size"] - 1 + extra)


@register
class LRN(OpDef):
    """Local response normalization across channels (axis 1; b1 read as ±1):
    y[n,c,...] = x[n,c,...] / (bias + alpha/size · Σ_{c' in [c-lo, c+hi]} x[n,c',...]²)^beta,
    lo = floor((size-1)/2), hi = ceil((size-1)/2), channels outside the map left out (ONNX LRN)."""

    name = "lrn"
    operands = ("x",)
    attrs = LRN_ATTRS
    traits = (Normalization(boolean_only=True),)

    @classmethod
    def check_attrs(cls, attrs):
        _check_attrs(attrs)

    def cost(self, ctx):
        """Per element: its square, the window's size - 1 additions, the scale and bias (2),
        the power and the division (2)."""
        return per_element(ctx, _window_ops(ctx.attrs, 5))

    def backward(self, ctx, op, dys):
        """dx by the analytic derivative (``lrn_grad``)."""
        return [ctx.op("lrn_grad", [dys[0], op.operands[0]], dict(op.attrs), grad_of=op.operands[0])]

    def fan_in(self, op, fan_in_of):
        """x's, passed through (as BatchNorm's)."""
        return fan_in_of(op.operands[0])

    def infer(self, types, attrs):
        _check_input(types[0], "input")
        _check_params(attrs)
        return [types[0].with_dtype(DType.f32)]

    def evaluate(self, args, attrs):
        x = as_f64(args[0])
        return [as_f32(x / np.power(lrn_denominator(x, attrs), attrs["beta"]))]


@register
class LRNGrad(GradOp):
    """Backward of ``lrn`` to its input, with d_c = bias + alpha/size · Σ_{window(c)} x² and
    p_c = d_c^beta as in the forward:

        dx[j] = dy[j] / p[j] - (2·alpha·beta/size) · x[j] · Σ_{c in [j-hi, j+lo]} dy[c]·x[c] / (p[c]·d[c])

    (the channels c whose window holds j; sums sequential in ascending c, ``window_sums``)."""

    name = "lrn_grad"
    operands = ("dy", "x")
    attrs = LRN_ATTRS
    traits = (Gradient(),)

    @classmethod
    def check_attrs(cls, attrs):
        _check_attrs(attrs)

    def cost(self, ctx):
        """Per element: the forward's d and p again (size + 3), its term of the transposed
        window (3), the window's size - 1 additions and the combination (4)."""
        return signal_stream(ctx, _window_ops(ctx.attrs, ctx.attrs["size"] + 10))

    def infer(self, types, attrs):
        dy, x = types
        expect_signal(dy)
        _check_input(x, "input")
        _check_params(attrs)
        expect_same_shape(dy, x, "signal and input")
        return [dy]

    def evaluate(self, args, attrs):
        dy, x = as_f64(args[0]), as_f64(args[1])
        lo, hi = window(attrs)
        d = lrn_denominator(x, attrs)
        p = np.power(d, attrs["beta"])
        total = window_sums(dy * x / (p * d), hi, lo)
        k = 2.0 * attrs["alpha"] * attrs["beta"] / attrs["size"]
        return [as_f32(dy / p - k * x * total)]
