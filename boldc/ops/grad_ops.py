"""Gradient ops: what the backward hooks emit (docs/method.md §3, docs/training.md).

Every signal is f32 with the shape of the value it is the gradient of, whatever that
value's dtype (the gradient of a b1 activation is a real signal). b1 operands are read
through e(.) = +-1, so the Boolean rules

    input signal   g[k, i] = ± Σ_j z[k, j] · e(W[j, i])
    weight signal  q[j, i] = ± Σ_k z[k, j] · e(x[k, i])

are the same ops as the float gradients dx = dy·W and dW = dyᵀ·x, with ``scale`` = ±1
(negative for xor) times the optional rescaling factor. Sums are accumulated in float64
and rounded once to f32 (the reference value; see docs/training.md on determinism).

Integer signals (docs/training.md, "Integer signals"): the layer gradients also take an
integer signal dy (i8 or i16, from ``quantize_signal``) with its power-of-two scale as the
operand ``dy_scale``, against b1 weights or inputs. Their sums are then integers, exact
(float64 holds every such sum: |Σ| < 2^15 · K, far below 2^53; the C accumulates in int32
when 2^15 · K < 2^31, else int64), and the result is f32(scale · (dy_scale · Σ)): one
exact scaling by a power of two, one rounding in double, one to f32. The same on every
machine.

This file holds the gradients of the layers (linear, convolution, their bias) and of the
threshold, the base class and helpers of every gradient op, and the helpers the layers'
``backward`` hooks share; float_grad_ops.py holds the gradients of the other float ops.
"""

from __future__ import annotations

import numpy as np

from boldc.ir.types import DType, TensorType
from boldc.ir.works import (
    ARITH,
    BACKWARD,
    INT,
    CostContext,
    Nothing,
    TensorInfo,
    Work,
    add_op,
    input_signal,
    layer_geometry,
    stream,
    weight_signal,
)
from boldc.ops.common import (
    DILATION,
    GROUPS,
    KERNEL,
    PAD,
    STRIDE,
    channel_vector,
    expect_dtype,
    expect_rank,
    expect_static,
    matmul_in_order,
    pad_nchw,
    tanh_derivative,
    transposed_conv_nchw,
    window_out_hw,
    windows,
)
from boldc.ops.registry import Attr, NotDifferentiable, OpDef, TypeCheck, register
from boldc.ops.traits import Epilogue, FusionHead, Gradient, GradientSink, SideEffect

SECOND_ORDER = NotDifferentiable("a gradient op; second derivatives are not supported")
SCALE = Attr("scale", "float", 1.0, doc="factor applied to the result (-1 for xor, times the rescaling)")
INPUT_HW = Attr("input_hw", "ints", length=2, doc="[H, W] of the forward input")
THRESHOLD_MODES = ("tanh", "box", "bireal")


def as_f64(x: np.ndarray) -> np.ndarray:
    """e(.) for b1, else the values, in float64 (the accumulation type of gradients)."""
    if x.dtype == np.bool_:
        return np.where(x, 1.0, -1.0)
    return x.astype(np.float64)


def as_f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def expect_signal(t: TensorType, what: str = "signal") -> None:
    expect_dtype(t, "float", what)


def expect_signal_pair(types: list[TensorType], other: str) -> TensorType:
    """The signal dy (operand 0) of a layer gradient with its optional ``dy_scale``
    (operand 2): f32 without a scale, or an integer signal with its f32[] scale against b1
    ``other`` (operand 1, the weights or the input). Returns dy."""
    dy = types[0]
    if dy.dtype.is_float:
        if len(types) > 2:
            raise TypeCheck("an f32 signal takes no dy_scale")
        return dy
    if dy.dtype not in (DType.i8, DType.i16):
        raise TypeCheck(f"signal must be f32, i8 or i16, got {dy}")
    if len(types) < 3 or types[2] != TensorType(DType.f32, ()):
        got = types[2] if len(types) > 2 else "none"
        raise TypeCheck(f"an integer signal needs its scale dy_scale (f32[]), got {got}")
    if not types[1].dtype.is_bool:
        raise TypeCheck(f"an integer signal is summed against b1 {other} (exact sums), got {types[1]}")
    return dy


def signal_result(total: np.ndarray, args: list[np.ndarray], attrs) -> np.ndarray:
    """f32(scale · total), an integer signal's power-of-two ``dy_scale`` (operand 2) applied
    to the exact sum first."""
    if len(args) > 2:
        total = total * np.float64(args[2])
    return as_f32(attrs["scale"] * total)


def expect_same_shape(a: TensorType, b: TensorType, what: str) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise TypeCheck(f"{what}: shapes {a} and {b} differ")


class GradOp(OpDef):
    """Base of the ops in this file: no second derivatives."""

    backward = SECOND_ORDER


@register
class ParamGrad(GradOp):
    """Declares ``g`` as δLoss/δp for the param ``p``; computes nothing. autodiff ends
    @train_step with one per trained param; insert-optimizer replaces them by updates."""

    name = "param_grad"
    operands = ("p", "g")
    traits = (SideEffect(), Gradient(), GradientSink())

    cost = Nothing("declares the gradient of a param; computes nothing (insert-optimizer replaces it)")

    def infer(self, types, attrs):
        p, g = types
        expect_signal(g, "gradient")
        expect_same_shape(p, g, "gradient")
        if not (p.dtype.is_float or p.dtype.is_bool):
            raise TypeCheck(f"only f32 and b1 params are trained, got {p}")
        return []

    def evaluate(self, args, attrs):
        return []


# --- linear layers ----------------------------------------------------------------------


@register
class LinearGradX(GradOp):
    """Input gradient of a linear layer: dx[..., i] = scale · Σ_j dy[..., j] · e(W[j, i])
    (W f32, or b1 read as +-1: the input signal g of docs/method.md §3). An f32 signal is
    summed in double in j order (``common.matmul_in_order``), an integer one exactly."""

    name = "linear_grad_x"
    operands = ("dy", "w", "dy_scale?")
    attrs = (SCALE,)
    traits = (Gradient(), FusionHead())

    def cost(self, ctx):
        return grad_input_cost(ctx)

    def infer(self, types, attrs):
        dy, w = expect_signal_pair(types, "weights"), types[1]
        expect_dtype(w, ("float", "bool"), "weights")
        expect_rank(w, 2, "weights")
        if dy.rank < 2 or dy.shape[-1] != w.shape[0]:
            raise TypeCheck(f"signal {dy} does not match weights {w} ([out, in])")
        return [TensorType(DType.f32, tuple(dy.shape[:-1]) + (w.shape[1],))]

    def evaluate(self, args, attrs):
        dy, w = args[0], args[1]
        lead = dy.shape[:-1]
        dy2 = dy.reshape(-1, dy.shape[-1])
        total = as_f64(dy2) @ as_f64(w) if len(args) > 2 else matmul_in_order(as_f64(dy2), as_f64(w))
        return [signal_result(total, args, attrs).reshape(lead + (w.shape[1],))]


@register
class LinearGradW(GradOp):
    """Weight gradient of a linear layer: dW[j, i] = scale · Σ_k dy[k, j] · e(x[k, i]), k over
    all leading axes (x b1 read as +-1: the weight signal q of docs/method.md §3). An f32
    signal is summed in double in k order (``common.matmul_in_order``), an integer one exactly."""

    name = "linear_grad_w"
    operands = ("dy", "x", "dy_scale?")
    attrs = (SCALE,)
    traits = (Gradient(), FusionHead())

    def cost(self, ctx):
        return grad_weight_cost(ctx)

    def infer(self, types, attrs):
        dy, x = expect_signal_pair(types, "input"), types[1]
        expect_dtype(x, ("float", "int", "bool"), "input")
        if dy.rank != x.rank or dy.rank < 2 or tuple(dy.shape[:-1]) != tuple(x.shape[:-1]):
            raise TypeCheck(f"signal {dy} and input {x} differ in their leading dimensions")
        return [TensorType(DType.f32, (dy.shape[-1], x.shape[-1]))]

    def evaluate(self, args, attrs):
        dy, x = args[0], args[1]
        dy2 = as_f64(dy).reshape(-1, dy.shape[-1])
        x2 = as_f64(x).reshape(-1, x.shape[-1])
        total = dy2.T @ x2 if len(args) > 2 else matmul_in_order(dy2.T, x2)
        return [signal_result(total, args, attrs)]


@register
class ChannelSum(GradOp):
    """Bias gradient: y[c] = Σ over every axis but ``axis`` of dy (an integer signal: times
    its power-of-two ``dy_scale``, the sum exact)."""

    name = "channel_sum"
    operands = ("dy", "dy_scale?")
    attrs = (Attr("axis", "int", 1, doc="the channel axis (negative counts from the end)"),)
    traits = (Gradient(),)

    def cost(self, ctx):
        """numel(dy) - C additions (the bias signal q0 = Σ_k z), at the accumulator's width."""
        dy, out = ctx.operands[0], ctx.results[0]
        adds = add_op(_accumulator(dy, out)).times(dy.numel - out.numel)
        return [stream("bias signal", BACKWARD, ctx.operands, (out,), adds)]

    def infer(self, types, attrs):
        dy = types[0]
        if dy.dtype.is_float and len(types) > 1:
            raise TypeCheck("an f32 signal takes no dy_scale")
        if not dy.dtype.is_float and (dy.dtype not in (DType.i8, DType.i16) or len(types) < 2
                                      or types[1] != TensorType(DType.f32, ())):
            raise TypeCheck(f"the signal must be f32, or i8/i16 with its scale dy_scale (f32[]), got {dy}")
        if not -dy.rank <= attrs["axis"] < dy.rank:
            raise TypeCheck(f"axis {attrs['axis']} out of range for {dy}")
        return [TensorType(DType.f32, (expect_static(dy.shape[attrs["axis"]], "channel count"),))]

    def evaluate(self, args, attrs):
        dy = args[0]
        axis = attrs["axis"] % dy.ndim
        others = tuple(a for a in range(dy.ndim) if a != axis)
        total = as_f64(dy).sum(axis=others)
        return [as_f32(total * np.float64(args[1]) if len(args) > 1 else total)]


# --- convolutions -----------------------------------------------------------------------

_CONV_ATTRS = (STRIDE, PAD, DILATION, GROUPS, SCALE)


def _conv_geometry(attrs, hw, kernel) -> tuple[int, int]:
    """Forward output (OH, OW) of an [H, W] input."""
    return window_out_hw(TensorType(DType.f32, (1, 1, hw[0], hw[1])), kernel, attrs)


@register
class Conv2dGradX(GradOp):
    """Input gradient of a convolution (the transposed convolution):
    dx[n, c, h, w] = scale · Σ dy[n, m, oh, ow] · e(W[m, c', i, j]) over the (m, oh, ow, i, j) with
    h = oh·sh + i·dh - pt and w = ow·sw + j·dw - pl (c' = c within its group); padded positions
    are not inputs and receive nothing."""

    name = "conv2d_grad_x"
    operands = ("dy", "w", "dy_scale?")
    attrs = _CONV_ATTRS + (INPUT_HW,)
    traits = (Gradient(), FusionHead())

    def cost(self, ctx):
        return grad_input_cost(ctx)

    def infer(self, types, attrs):
        dy, w = expect_signal_pair(types, "weights"), types[1]
        expect_rank(dy, 4, "signal")
        expect_dtype(w, ("float", "bool"), "weights")
        expect_rank(w, 4, "weights")
        m, cg, kh, kw = w.shape
        g = attrs["groups"]
        if g < 1 or m % g or dy.shape[1] != m:
            raise TypeCheck(f"signal {dy} does not match weights {w} with groups={g}")
        if (dy.shape[2], dy.shape[3]) != _conv_geometry(attrs, attrs["input_hw"], (kh, kw)):
            raise TypeCheck(f"signal {dy} is not the output size of an input of {attrs['input_hw']}")
        return [TensorType(DType.f32, (dy.shape[0], cg * g, *attrs["input_hw"]))]

    def evaluate(self, args, attrs):
        total = transposed_conv_nchw(as_f64(args[0]), as_f64(args[1]), attrs, attrs["input_hw"])
        return [signal_result(total, args, attrs)]


@register
class Conv2dGradW(GradOp):
    """Weight gradient of a convolution (correlation of input with signal):
    dW[m, c', i, j] = scale · Σ_{n, oh, ow} dy[n, m, oh, ow] · e(xp[n, c, oh·sh + i·dh, ow·sw + j·dw])
    where xp is x padded with ``pad_value`` (0, or -1 for the F bits of pad_mode "false")."""

    name = "conv2d_grad_w"
    operands = ("dy", "x", "dy_scale?")
    attrs = _CONV_ATTRS + (KERNEL, Attr("pad_value", "float", 0.0, doc="e(x) at padded positions"))
    traits = (Gradient(), FusionHead())

    def cost(self, ctx):
        return grad_weight_cost(ctx)

    def infer(self, types, attrs):
        dy, x = expect_signal_pair(types, "input"), types[1]
        expect_rank(dy, 4, "signal")
        expect_dtype(x, ("float", "int", "bool"), "input")
        expect_rank(x, 4, "input")
        g = attrs["groups"]
        c = expect_static(x.shape[1], "input channels")
        m = expect_static(dy.shape[1], "signal channels")
        if g < 1 or c % g or m % g:
            raise TypeCheck(f"groups={g} must divide input channels {c} and output channels {m}")
        if dy.shape[0] != x.shape[0] or (dy.shape[2], dy.shape[3]) != window_out_hw(x, attrs["kernel"], attrs):
            raise TypeCheck(f"signal {dy} is not the output of a convolution of {x}")
        return [TensorType(DType.f32, (m, c // g, *attrs["kernel"]))]

    def evaluate(self, args, attrs):
        dy, x = as_f64(args[0]), as_f64(args[1])
        m = dy.shape[1]
        c = x.shape[1]
        g = attrs["groups"]
        kh, kw = attrs["kernel"]
        xp = pad_nchw(x, attrs["pad"], attrs["pad_value"])
        win = windows(xp, (kh, kw), attrs["stride"], attrs["dilation"], dy.shape[2:])
        mg, cg = m // g, c // g
        out = np.empty((m, cg, kh, kw))
        for gi in range(g):
            out[gi * mg:(gi + 1) * mg] = np.tensordot(dy[:, gi * mg:(gi + 1) * mg], win[:, gi * cg:(gi + 1) * cg],
                                                      axes=([0, 2, 3], [0, 2, 3]))
        return [signal_result(out, args, attrs)]


# --- threshold ------------------------------------------------------------------------------


@register
class ThresholdGrad(GradOp):
    """Backward of the threshold activation (docs/method.md §3), u = alpha · (x - τ):

    - ``tanh`` (default): dx = dy · (1 - tanh²(u)), computed as 4t/(1+t)², t = e^(-2|u|)
      with ``common.exp_fixed`` (the same bits in the C);
    - ``box`` (straight-through): dx = dy · 1{|u| <= 1};
    - ``bireal`` (derivative of Bi-Real's ApproxSign): dx = dy · max(0, 2 - 2|u|).

    τ is the attribute ``tau`` or the per-channel operand; where the per-channel b1 ``ge``
    is F (the comparison is x <= τ) the derivative changes sign."""

    name = "threshold_grad"
    operands = ("dy", "x", "tau?", "ge?")
    attrs = (Attr("mode", "str", "tanh", choices=THRESHOLD_MODES),
             Attr("alpha", "float", doc="scale of the surrogate derivative, π/(2√(3m)) by default"),
             Attr("tau", "number", 0, doc="scalar threshold when no tau operand is given"))
    traits = (Gradient(), Epilogue(chain=("dy",)))

    def cost(self, ctx):
        """Per element one subtraction x - τ at x's kind, the derivative by table lookup on
        the integer difference (not charged), and one multiplication by δy; reads δy, x
        and the per-channel τ / ge."""
        dy, x, *extras = ctx.operands
        dx = ctx.results[0]
        return [stream("signal", BACKWARD, (dy, x, *extras), (dx,), (add_op(x) + ARITH).times(dx.numel))]

    def infer(self, types, attrs):
        dy, x = types[0], types[1]
        expect_signal(dy)
        expect_dtype(x, ("float", "int"), "pre-activation")
        expect_same_shape(dy, x, "signal and pre-activation")
        if len(types) > 2:
            channel_vector(types[2], x.shape[1], "tau", ("float", "int"))
        if len(types) > 3:
            channel_vector(types[3], x.shape[1], "ge", "bool")
        return [dy]

    def evaluate(self, args, attrs):
        dy, x = as_f64(args[0]), as_f64(args[1])
        shape = (1, -1) + (1,) * (x.ndim - 2)
        tau = as_f64(args[2]).reshape(shape) if len(args) > 2 else float(attrs["tau"])
        u = attrs["alpha"] * (x - tau)
        if attrs["mode"] == "tanh":
            d = tanh_derivative(u)
        elif attrs["mode"] == "box":
            d = (np.abs(u) <= 1.0).astype(np.float64)
        else:
            d = np.maximum(0.0, 2.0 - 2.0 * np.abs(u))
        if len(args) > 3:
            d = d * np.where(args[3], 1.0, -1.0).reshape(shape)
        return [as_f32(dy * d)]


# --- helpers for the cost and backward hooks of the layers ------------------------------------


INTEGER_ACCUMULATOR_BITS = 32  # the exact sums of an integer signal, as the energy model charges them


def _accumulator(dy: TensorInfo, out: TensorInfo) -> TensorInfo:
    """Where a layer gradient's products add up: an integer signal's in 32-bit integers
    (exact; the C uses 64 bits where the bound needs it), an f32 signal's in the result."""
    return TensorInfo(out.shape, INTEGER_ACCUMULATOR_BITS, INT) if dy.kind == INT else out


def grad_input_cost(ctx: CostContext) -> list[Work]:
    """The input signal dx of a layer (operands dy, W, dy_scale?; result dx): a convolution
    whose additions need no multiplication when W is b1 (g = Σ_j z·e(W)); the scale of an
    integer signal is read once."""
    dy, w, *extra = ctx.operands
    dx = ctx.results[0]
    return [input_signal(layer_geometry(dx, w, dy, ctx.attrs), dy, w, dx, _accumulator(dy, dx), tuple(extra))]


def grad_weight_cost(ctx: CostContext) -> list[Work]:
    """The weight signal dW of a layer (operands dy, x, dy_scale?; result dW): a convolution
    of x with dy (q = Σ_k z·e(x)); the scale of an integer signal is read once."""
    dy, x, *extra = ctx.operands
    dw = ctx.results[0]
    return [weight_signal(layer_geometry(x, dw, dy, ctx.attrs), dy, x, dw, _accumulator(dy, dw), tuple(extra))]
