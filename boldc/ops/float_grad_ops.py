"""Gradient ops of the float ops: activations (GELU and erf among them), pooling and
BatchNorm (docs/training.md, "Float ops"; the second operands' of ``sub`` and ``div`` are in
elementwise_ops.py), with the conventions of grad_ops.py: every signal is f32 shaped like the value it is the gradient
of, sums are accumulated in float64 and rounded once to f32 (the reference value), b1
operands are read as +-1.
"""

from __future__ import annotations

import math

import numpy as np

from boldc.ir.types import DType, TensorType
from boldc.ir.works import ARITH, BACKWARD, BIT, LOGIC, Ops, Work, add_op, stream, window_ops
from boldc.ops.activation_ops import GELU_CUBIC3, GELU_FORMS, INV_SQRT_2PI, SQRT1_2, SQRT_2_OVER_PI, gelu_tanh_argument
from boldc.ops.common import (
    CEIL_MODE,
    DILATION,
    KERNEL,
    PAD,
    STRIDE,
    count_inside,
    exp_fixed,
    expect_rank,
    pad_nchw,
    tanh_derivative,
    window_out_hw,
    windows,
)
from boldc.ops.elementwise_ops import erfc64
from boldc.ops.grad_ops import INPUT_HW, GradOp, as_f32, as_f64, expect_same_shape, expect_signal
from boldc.ops.registry import Attr, TypeCheck, register
from boldc.ops.shape_ops import SumTo
from boldc.ops.traits import Epilogue, Gradient


def signal_stream(ctx, per: Ops) -> list[Work]:
    """An elementwise gradient: reads its operands, writes δx, ``per`` operations per element."""
    return [stream("signal", BACKWARD, ctx.operands, ctx.results, per.times(ctx.results[0].numel))]


class _SameShapeGrad(GradOp):
    """Operands (dy, x or y, ...) with x or y shaped like dy; the result is shaped like dy."""

    operands = ("dy", "x")
    traits = (Gradient(),)

    def infer(self, types, attrs):
        expect_signal(types[0])
        expect_same_shape(types[0], types[1], "signal and value")
        return [types[0]]


class _UnaryGrad(_SameShapeGrad):
    """dx = dy · f'(x or y) elementwise: an epilogue of the layer gradient that makes dy."""

    traits = (Gradient(), Epilogue(chain=("dy",)))

    def evaluate(self, args, attrs):
        return [as_f32(as_f64(args[0]) * self.derivative(as_f64(args[1]), attrs))]


@register
class ReluGrad(_UnaryGrad):
    """dx = dy · 1{x > 0}."""

    name = "relu_grad"

    def cost(self, ctx):
        """One comparison of x per element."""
        return signal_stream(ctx, add_op(ctx.operands[1]))

    def derivative(self, x, attrs):
        return (x > 0).astype(np.float64)


@register
class SoftmaxGrad(_SameShapeGrad):
    """dx = y · (dy - Σ_axis dy·y), y the softmax output."""

    name = "softmax_grad"
    operands = ("dy", "y")
    attrs = (Attr("axis", "int", -1),)
    def cost(self, ctx):
        """Per element two multiplications, one accumulation and one subtraction."""
        return signal_stream(ctx, ARITH.times(2) + add_op(ctx.results[0]).times(2))

    def evaluate(self, args, attrs):
        dy, y = as_f64(args[0]), as_f64(args[1])
        return [as_f32(y * (dy - (dy * y).sum(axis=attrs["axis"], keepdims=True)))]


@register
class LeakyReluGrad(_UnaryGrad):
    """dx = dy · (1 if x >= 0 else alpha)."""

    name = "leaky_relu_grad"
    attrs = (Attr("alpha", "float", 0.01),)

    def cost(self, ctx):
        return signal_stream(ctx, ARITH.times(2))

    def derivative(self, x, attrs):
        return np.where(x >= 0, 1.0, attrs["alpha"])


@register
class ClipGrad(_UnaryGrad):
    """dx = dy · 1{min <= x <= max}."""

    name = "clip_grad"
    attrs = (Attr("min", "float", float("-inf")), Attr("max", "float", float("inf")))

    def cost(self, ctx):
        return signal_stream(ctx, ARITH.times(2))

    def derivative(self, x, attrs):
        return ((x >= attrs["min"]) & (x <= attrs["max"])).astype(np.float64)


@register
class SigmoidGrad(_UnaryGrad):
    """dx = dy · y (1 - y), y the sigmoid output."""

    name = "sigmoid_grad"
    operands = ("dy", "y")

    def cost(self, ctx):
        return signal_stream(ctx, ARITH.times(3))

    def derivative(self, y, attrs):
        return y * (1.0 - y)


@register
class TanhGrad(_UnaryGrad):
    """dx = dy · (1 - y²), y the tanh output."""

    name = "tanh_grad"
    operands = ("dy", "y")

    def cost(self, ctx):
        return signal_stream(ctx, ARITH.times(3))

    def derivative(self, y, attrs):
        return 1.0 - y * y


@register
class PReluGradX(_SameShapeGrad):
    """dx = dy · (1 if x >= 0 else slope), slope broadcast to x."""

    name = "prelu_grad_x"
    operands = ("dy", "x", "slope")

    def cost(self, ctx):
        return signal_stream(ctx, ARITH.times(2))

    def evaluate(self, args, attrs):
        dy, x, slope = (as_f64(a) for a in args)
        return [as_f32(dy * np.where(x >= 0, 1.0, slope))]


@register
class PReluGradSlope(_SameShapeGrad):
    """dslope = Σ over the broadcast axes of dy · x · 1{x < 0}, shaped like the slope."""

    name = "prelu_grad_slope"
    operands = ("dy", "x", "slope")
    traits = (Gradient(),)

    def cost(self, ctx):
        dy, x, slope = ctx.operands
        out = ctx.results[0]
        per = ARITH.times(2) + add_op(out)
        return [stream("slope signal", BACKWARD, (dy, x, slope), (out,), per.times(dy.numel))]

    def infer(self, types, attrs):
        super().infer(types, attrs)
        return [types[2]]

    def evaluate(self, args, attrs):
        dy, x = as_f64(args[0]), as_f64(args[1])
        return SumTo().evaluate([dy * np.where(x < 0, x, 0.0)], {"shape": list(args[2].shape)})


@register
class LogSoftmaxGrad(_SameShapeGrad):
    """dx = dy - exp(y) · Σ_axis dy, y the log-softmax output."""

    name = "log_softmax_grad"
    operands = ("dy", "y")
    attrs = (Attr("axis", "int", -1),)
    def cost(self, ctx):
        return signal_stream(ctx, ARITH.times(4))

    def evaluate(self, args, attrs):
        dy, y = as_f64(args[0]), as_f64(args[1])
        return [as_f32(dy - np.exp(y) * dy.sum(axis=attrs["axis"], keepdims=True))]


TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)  # erf's derivative at 0


@register
class ErfGrad(_UnaryGrad):
    """dx = dy · (2/√π) · e^(-x²) (e^ by ``exp_fixed``)."""

    name = "erf_grad"

    def cost(self, ctx):
        """A square, a negation, an exponential and two multiplications per element."""
        return signal_stream(ctx, ARITH.times(5))

    def derivative(self, x, attrs):
        return TWO_OVER_SQRT_PI * exp_fixed(-(x * x))


@register
class GeluGrad(_UnaryGrad):
    """dx = dy · gelu'(x), in double: for "none", 0.5·(1 + erf(x/√2)) + x·e^(-x²/2)/√(2π); for
    "tanh", with u = √(2/π)·(x + 0.044715·x³), 0.5·(1 + tanh u) + 0.5·x·(1 - tanh² u)·√(2/π)·
    (1 + 3·0.044715·x²). Written as GELU's values are (``activation_ops.gelu_values``):
    0.5·erfc(-(x·SQRT1_2)) for the first term, 1/(1 + e^(-2u)) and ``tanh_derivative(u)`` for
    the tanh form; every exp is ``exp_fixed`` (the C runtime's bd_exp: the same bits)."""

    name = "gelu_grad"
    attrs = (Attr("approximate", "str", "none", choices=GELU_FORMS),)

    def cost(self, ctx):
        """Exact form: erfc, exp and 8 arithmetic operations (10 per element); tanh form: two
        exps and 14 arithmetic operations (16)."""
        return signal_stream(ctx, ARITH.times(16 if ctx.attrs["approximate"] == "tanh" else 10))

    def derivative(self, x, attrs):
        if attrs["approximate"] == "tanh":
            u = gelu_tanh_argument(x)
            return 1.0 / (1.0 + exp_fixed(-2.0 * u)) + 0.5 * x * tanh_derivative(u) * (
                SQRT_2_OVER_PI * (1.0 + GELU_CUBIC3 * (x * x)))
        return 0.5 * erfc64(-(x * SQRT1_2)) + x * (exp_fixed(-0.5 * (x * x)) * INV_SQRT_2PI)


# --- pooling --------------------------------------------------------------------------------


def _pool_padded(x: np.ndarray, attrs, oh: int, ow: int, fill) -> tuple[np.ndarray, list[int]]:
    """x padded as the pooling forward pads it (plus ceil_mode's trailing rows)."""
    kh, kw = attrs["kernel"]
    dil = attrs.get("dilation", [1, 1])
    pt, pl, pb, pr = attrs["pad"]
    sh, sw = attrs["stride"]
    h, w = x.shape[2:]
    extra_h = max(0, (oh - 1) * sh + dil[0] * (kh - 1) + 1 - (h + pt + pb))
    extra_w = max(0, (ow - 1) * sw + dil[1] * (kw - 1) + 1 - (w + pl + pr))
    pad = [pt, pl, pb + extra_h, pr + extra_w]
    return pad_nchw(x, pad, fill), pad


def _scatter(dxp: np.ndarray, i: int, j: int, part: np.ndarray, attrs) -> None:
    """dxp[window position (i, j) of every output] += part."""
    dh, dw = attrs.get("dilation", [1, 1])
    sh, sw = attrs["stride"]
    oh, ow = part.shape[2:]
    dxp[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw] += part


def _crop(dxp: np.ndarray, pad, hw) -> np.ndarray:
    return dxp[:, :, pad[0]:pad[0] + hw[0], pad[1]:pad[1] + hw[1]]


@register
class MaxPool2dGrad(GradOp):
    """Max-pool backward: each dy goes to the first maximal element of its window (row-major
    order; b1 read as +-1, padding never wins); overlapping windows add up."""

    name = "maxpool2d_grad"
    operands = ("dy", "x")
    attrs = (KERNEL, STRIDE, PAD, DILATION, CEIL_MODE)
    traits = (Gradient(),)

    def cost(self, ctx):
        dy, x = ctx.operands
        kh, kw = ctx.attrs["kernel"]
        find = window_ops(kh * kw, LOGIC if x.kind == BIT else add_op(x))
        dx = ctx.results[0]
        return [stream("signal", BACKWARD, (dy, x), (dx,), (find + add_op(dx)).times(dy.numel))]

    def infer(self, types, attrs):
        dy, x = types
        expect_signal(dy)
        expect_rank(x, 4, "input")
        want = (x.shape[0], x.shape[1], *window_out_hw(x, attrs["kernel"], attrs, attrs["ceil_mode"]))
        if tuple(dy.shape) != want:
            raise TypeCheck(f"signal {dy} is not the pooled shape of {x}")
        return [TensorType(DType.f32, x.shape)]

    def evaluate(self, args, attrs):
        dy, x = as_f64(args[0]), as_f64(args[1])
        kh, kw = attrs["kernel"]
        oh, ow = dy.shape[2:]
        xp, pad = _pool_padded(x, attrs, oh, ow, -np.inf)
        inside, _ = _pool_padded(np.ones(x.shape), attrs, oh, ow, 0.0)
        taps = (*dy.shape, kh * kw)
        win = windows(xp, (kh, kw), attrs["stride"], attrs["dilation"], (oh, ow)).reshape(taps)
        real = windows(inside, (kh, kw), attrs["stride"], attrs["dilation"], (oh, ow)).reshape(taps) > 0
        # the first maximal tap inside the input (a padding tap never wins, not even over -inf; the
        # first NaN wins, as np.max and argmax take it); -1 (nobody) for a window wholly outside
        top = np.where(real, win, -np.inf).max(axis=-1, keepdims=True)
        best = real & ((win == top) | (np.isnan(win) & np.isnan(top)))
        first = np.where(best.any(axis=-1), best.argmax(axis=-1), -1)
        dxp = np.zeros(xp.shape)
        for i in range(kh):
            for j in range(kw):
                _scatter(dxp, i, j, np.where(first == i * kw + j, dy, 0.0), attrs)
        return [as_f32(_crop(dxp, pad, x.shape[2:]))]


@register
class AvgPool2dGrad(GradOp):
    """Average-pool backward: each dy[n,c,oh,ow] / count is added to the counted positions
    of its window (count as in the forward: inside the input, or the padded input with
    count_include_pad)."""

    name = "avgpool2d_grad"
    operands = ("dy",)
    attrs = (KERNEL, STRIDE, PAD, CEIL_MODE, Attr("count_include_pad", "bool", False), INPUT_HW)
    traits = (Gradient(),)

    def cost(self, ctx):
        """Each δy, scaled by 1/window (one multiplication), is added into its window."""
        dy, dx = ctx.operands[0], ctx.results[0]
        kh, kw = ctx.attrs["kernel"]
        return [stream("signal", BACKWARD, (dy,), (dx,), (ARITH + add_op(dx).times(kh * kw)).times(dy.numel))]

    def infer(self, types, attrs):
        dy = types[0]
        expect_signal(dy)
        expect_rank(dy, 4, "signal")
        x = TensorType(DType.f32, (dy.shape[0], dy.shape[1], *attrs["input_hw"]))
        if tuple(dy.shape[2:]) != window_out_hw(x, attrs["kernel"], attrs, attrs["ceil_mode"]):
            raise TypeCheck(f"signal {dy} is not the pooled shape of an input of {attrs['input_hw']}")
        return [x]

    def evaluate(self, args, attrs):
        dy = as_f64(args[0])
        kh, kw = attrs["kernel"]
        h, w = attrs["input_hw"]
        oh, ow = dy.shape[2:]
        pt, pl, pb, pr = attrs["pad"]
        sh, sw = attrs["stride"]
        lo_h, hi_h = (-pt, h + pb) if attrs["count_include_pad"] else (0, h)
        lo_w, hi_w = (-pl, w + pr) if attrs["count_include_pad"] else (0, w)
        count = np.outer(count_inside(oh, kh, sh, 1, -pt, lo_h, hi_h),
                         count_inside(ow, kw, sw, 1, -pl, lo_w, hi_w))
        per = dy / count
        shell = np.zeros(dy.shape[:2] + (h, w))
        dxp, pad = _pool_padded(shell, attrs, oh, ow, 0.0)
        for i in range(kh):
            for j in range(kw):
                _scatter(dxp, i, j, per, attrs)
        # Positions outside the input (padding) are dropped by the crop.
        return [as_f32(_crop(dxp, pad, (h, w)))]


@register
class GlobalAvgPoolGrad(GradOp):
    """dx[n, c, h, w] = dy[n, c, 0, 0] / (H·W)."""

    name = "global_avgpool_grad"
    operands = ("dy",)
    attrs = (INPUT_HW,)
    traits = (Gradient(),)

    def cost(self, ctx):
        """One multiplication per element of δx."""
        return signal_stream(ctx, ARITH)

    def infer(self, types, attrs):
        dy = types[0]
        expect_signal(dy)
        expect_rank(dy, 4, "signal")
        if tuple(dy.shape[2:]) != (1, 1):
            raise TypeCheck(f"signal {dy} must be [N, C, 1, 1]")
        return [TensorType(DType.f32, (dy.shape[0], dy.shape[1], *attrs["input_hw"]))]

    def evaluate(self, args, attrs):
        h, w = attrs["input_hw"]
        dy = as_f64(args[0])
        return [as_f32(np.broadcast_to(dy / (h * w), dy.shape[:2] + (h, w)))]
