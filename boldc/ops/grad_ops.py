"""Gradient ops: what the backward hooks emit (SPEC §3, docs/training.md).

Every signal is f32 with the shape of the value it is the gradient of, whatever that
value's dtype (the gradient of a b1 activation is a real signal). b1 operands are read
through e(.) = +-1, so the Boolean rules

    input signal   g[k, i] = ± Σ_j z[k, j] · e(W[j, i])
    weight signal  q[j, i] = ± Σ_k z[k, j] · e(x[k, i])

are the same ops as the float gradients dx = dy·W and dW = dyᵀ·x, with ``scale`` = ±1
(negative for xor) times the optional rescaling factor. Sums are accumulated in float64
and rounded once to f32 (the reference value; see docs/training.md on determinism).

This file also holds the helpers the layers' ``backward`` hooks share.
"""

from __future__ import annotations

import math

import numpy as np

from boldc.backend import grad_kernels as GK
from boldc.energymodel import works as E
from boldc.ir.types import DType, TensorType
from boldc.ops import common as C
from boldc.ops.registry import Attr, MustLower, NotDifferentiable, OpDef, TypeCheck, register

SECOND_ORDER = NotDifferentiable("a gradient op; second derivatives are not supported")
SCALE = Attr("scale", "float", 1.0, doc="factor applied to the result (-1 for xor, times the rescaling)")
INPUT_HW = Attr("input_hw", "ints", length=2, doc="[H, W] of the forward input")
THRESHOLD_MODES = ("tanh", "box", "bireal")


def _f64(x: np.ndarray) -> np.ndarray:
    """e(.) for b1, else the values, in float64 (the accumulation type of gradients)."""
    if x.dtype == np.bool_:
        return np.where(x, 1.0, -1.0)
    return x.astype(np.float64)


def _f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def _signal(t: TensorType, what: str = "signal") -> None:
    C.expect_dtype(t, "float", what)


def _same_shape(a: TensorType, b: TensorType, what: str) -> None:
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
    traits = frozenset({"side_effect", "gradient", "gradient_sink"})

    cost = E.nothing("declares the gradient of a param; computes nothing (insert-optimizer replaces it)")

    emit_c = MustLower("param_grad only hands gradients over: run insert-optimizer, which turns it into "
                       "optimizer updates")

    def infer(self, types, attrs):
        p, g = types
        _signal(g, "gradient")
        _same_shape(p, g, "gradient")
        if not (p.dtype.is_float or p.dtype.is_bool):
            raise TypeCheck(f"only f32 and b1 params are trained, got {p}")
        return []

    def evaluate(self, args, attrs):
        return []


# --- linear layers ----------------------------------------------------------------------


@register
class LinearGradX(GradOp):
    """Input gradient of a linear layer: dx[..., i] = scale · Σ_j dy[..., j] · e(W[j, i])
    (W f32, or b1 read as +-1: the input signal g of SPEC §3)."""

    name = "linear_grad_x"
    operands = ("dy", "w")
    attrs = (SCALE,)
    traits = frozenset({"gradient", "linear"})

    def cost(self, ctx):
        return E.grad_input_cost(ctx)

    def emit_c(self, cop):
        return GK.linear_grad_x(cop)

    def infer(self, types, attrs):
        dy, w = types
        _signal(dy)
        C.expect_dtype(w, ("float", "bool"), "weights")
        C.expect_rank(w, 2, "weights")
        if dy.rank < 2 or dy.shape[-1] != w.shape[0]:
            raise TypeCheck(f"signal {dy} does not match weights {w} ([out, in])")
        return [TensorType(DType.f32, tuple(dy.shape[:-1]) + (w.shape[1],))]

    def evaluate(self, args, attrs):
        dy, w = args
        return [_f32(attrs["scale"] * (_f64(dy) @ _f64(w)))]


@register
class LinearGradW(GradOp):
    """Weight gradient of a linear layer: dW[j, i] = scale · Σ_k dy[k, j] · e(x[k, i]), k over
    all leading axes (x b1 read as +-1: the weight signal q of SPEC §3)."""

    name = "linear_grad_w"
    operands = ("dy", "x")
    attrs = (SCALE,)
    traits = frozenset({"gradient", "linear"})

    def cost(self, ctx):
        return E.grad_weight_cost(ctx)

    def emit_c(self, cop):
        return GK.linear_grad_w(cop)

    def infer(self, types, attrs):
        dy, x = types
        _signal(dy)
        C.expect_dtype(x, ("float", "int", "bool"), "input")
        if dy.rank != x.rank or dy.rank < 2 or tuple(dy.shape[:-1]) != tuple(x.shape[:-1]):
            raise TypeCheck(f"signal {dy} and input {x} differ in their leading dimensions")
        return [TensorType(DType.f32, (dy.shape[-1], x.shape[-1]))]

    def evaluate(self, args, attrs):
        dy, x = args
        dy2 = _f64(dy).reshape(-1, dy.shape[-1])
        x2 = _f64(x).reshape(-1, x.shape[-1])
        return [_f32(attrs["scale"] * (dy2.T @ x2))]


@register
class ChannelSum(GradOp):
    """Bias gradient: y[c] = Σ over every axis but ``axis`` of dy."""

    name = "channel_sum"
    operands = ("dy",)
    attrs = (Attr("axis", "int", 1, doc="the channel axis (negative counts from the end)"),)
    traits = frozenset({"gradient", "reduce"})

    def cost(self, ctx):
        return [E.channel_sum(ctx.operands[0], ctx.results[0])]

    def emit_c(self, cop):
        dy = cop.ins[0]
        axis = cop.attrs["axis"] % dy.rank
        return GK.reduce_into(cop, dy, lambda idx: f"(double){dy.load(idx)}", lambda idx: [idx[axis]])

    def infer(self, types, attrs):
        dy = types[0]
        _signal(dy)
        if not -dy.rank <= attrs["axis"] < dy.rank:
            raise TypeCheck(f"axis {attrs['axis']} out of range for {dy}")
        return [TensorType(DType.f32, (C.expect_static(dy.shape[attrs["axis"]], "channel count"),))]

    def evaluate(self, args, attrs):
        dy = args[0]
        axis = attrs["axis"] % dy.ndim
        others = tuple(a for a in range(dy.ndim) if a != axis)
        return [_f32(_f64(dy).sum(axis=others))]


# --- convolutions -----------------------------------------------------------------------

_CONV_ATTRS = (C.STRIDE, C.PAD, C.DILATION, C.GROUPS, SCALE)


def _conv_geometry(attrs, hw, kernel) -> tuple[int, int]:
    """Forward output (OH, OW) of an [H, W] input."""
    return C.window_out_hw(TensorType(DType.f32, (1, 1, hw[0], hw[1])), kernel, attrs)


@register
class Conv2dGradX(GradOp):
    """Input gradient of a convolution (the transposed convolution):
    dx[n, c, h, w] = scale · Σ dy[n, m, oh, ow] · e(W[m, c', i, j]) over the (m, oh, ow, i, j) with
    h = oh·sh + i·dh - pt and w = ow·sw + j·dw - pl (c' = c within its group); padded positions
    are not inputs and receive nothing."""

    name = "conv2d_grad_x"
    operands = ("dy", "w")
    attrs = _CONV_ATTRS + (INPUT_HW,)
    traits = frozenset({"gradient", "conv"})

    def cost(self, ctx):
        return E.grad_input_cost(ctx)

    def emit_c(self, cop):
        return GK.conv2d_grad_x(cop)

    def infer(self, types, attrs):
        dy, w = types
        _signal(dy)
        C.expect_rank(dy, 4, "signal")
        C.expect_dtype(w, ("float", "bool"), "weights")
        C.expect_rank(w, 4, "weights")
        m, cg, kh, kw = w.shape
        g = attrs["groups"]
        if g < 1 or m % g or dy.shape[1] != m:
            raise TypeCheck(f"signal {dy} does not match weights {w} with groups={g}")
        if (dy.shape[2], dy.shape[3]) != _conv_geometry(attrs, attrs["input_hw"], (kh, kw)):
            raise TypeCheck(f"signal {dy} is not the output size of an input of {attrs['input_hw']}")
        return [TensorType(DType.f32, (dy.shape[0], cg * g, *attrs["input_hw"]))]

    def evaluate(self, args, attrs):
        dy, w = _f64(args[0]), _f64(args[1])
        n, m, oh, ow = dy.shape
        _, cg, kh, kw = w.shape
        g = attrs["groups"]
        pt, pl, pb, pr = attrs["pad"]
        sh, sw = attrs["stride"]
        dh, dw = attrs["dilation"]
        h, wd = attrs["input_hw"]
        dxp = np.zeros((n, cg * g, h + pt + pb, wd + pl + pr))
        mg = m // g
        for gi in range(g):
            dyg = dy[:, gi * mg:(gi + 1) * mg]
            for i in range(kh):
                for j in range(kw):
                    # [n, oh, ow, cg] -> [n, cg, oh, ow], scattered onto the strided positions
                    part = np.tensordot(dyg, w[gi * mg:(gi + 1) * mg, :, i, j], axes=([1], [0]))
                    dxp[:, gi * cg:(gi + 1) * cg, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                        j * dw:j * dw + sw * (ow - 1) + 1:sw] += part.transpose(0, 3, 1, 2)
        return [_f32(attrs["scale"] * dxp[:, :, pt:pt + h, pl:pl + wd])]


@register
class Conv2dGradW(GradOp):
    """Weight gradient of a convolution (correlation of input with signal):
    dW[m, c', i, j] = scale · Σ_{n, oh, ow} dy[n, m, oh, ow] · e(xp[n, c, oh·sh + i·dh, ow·sw + j·dw])
    where xp is x padded with ``pad_value`` (0, or -1 for the F bits of pad_mode "false")."""

    name = "conv2d_grad_w"
    operands = ("dy", "x")
    attrs = _CONV_ATTRS + (C.KERNEL, Attr("pad_value", "float", 0.0, doc="e(x) at padded positions"))
    traits = frozenset({"gradient", "conv"})

    def cost(self, ctx):
        return E.grad_weight_cost(ctx)

    def emit_c(self, cop):
        return GK.conv2d_grad_w(cop)

    def infer(self, types, attrs):
        dy, x = types
        _signal(dy)
        C.expect_rank(dy, 4, "signal")
        C.expect_dtype(x, ("float", "int", "bool"), "input")
        C.expect_rank(x, 4, "input")
        g = attrs["groups"]
        c = C.expect_static(x.shape[1], "input channels")
        m = C.expect_static(dy.shape[1], "signal channels")
        if g < 1 or c % g or m % g:
            raise TypeCheck(f"groups={g} must divide input channels {c} and output channels {m}")
        if dy.shape[0] != x.shape[0] or (dy.shape[2], dy.shape[3]) != C.window_out_hw(x, attrs["kernel"], attrs):
            raise TypeCheck(f"signal {dy} is not the output of a convolution of {x}")
        return [TensorType(DType.f32, (m, c // g, *attrs["kernel"]))]

    def evaluate(self, args, attrs):
        dy, x = _f64(args[0]), _f64(args[1])
        m = dy.shape[1]
        c = x.shape[1]
        g = attrs["groups"]
        kh, kw = attrs["kernel"]
        xp = C.pad_nchw(x, attrs["pad"], attrs["pad_value"])
        win = C.windows(xp, (kh, kw), attrs["stride"], attrs["dilation"], dy.shape[2:])
        mg, cg = m // g, c // g
        out = np.empty((m, cg, kh, kw))
        for gi in range(g):
            out[gi * mg:(gi + 1) * mg] = np.tensordot(dy[:, gi * mg:(gi + 1) * mg], win[:, gi * cg:(gi + 1) * cg],
                                                      axes=([0, 2, 3], [0, 2, 3]))
        return [_f32(attrs["scale"] * out)]


# --- activations --------------------------------------------------------------------------


@register
class ThresholdGrad(GradOp):
    """Backward of the threshold activation (SPEC §3), u = alpha · (x - τ):

    - ``tanh`` (default): dx = dy · (1 - tanh²(u));
    - ``box`` (straight-through): dx = dy · 1{|u| <= 1};
    - ``bireal`` (derivative of Bi-Real's ApproxSign): dx = dy · max(0, 2 - 2|u|).

    τ is the attribute ``tau`` or the per-channel operand; where the per-channel b1 ``ge``
    is F (the comparison is x <= τ) the derivative changes sign."""

    name = "threshold_grad"
    operands = ("dy", "x", "tau?", "ge?")
    attrs = (Attr("mode", "str", "tanh", choices=THRESHOLD_MODES),
             Attr("alpha", "float", doc="scale of the surrogate derivative, π/(2√(3m)) by default"),
             Attr("tau", "number", 0, doc="scalar threshold when no tau operand is given"))
    traits = frozenset({"gradient", "elementwise"})

    def cost(self, ctx):
        dy, x, *extras = ctx.operands
        return [E.threshold_grad(dy, x, extras, ctx.results[0])]

    def emit_c(self, cop):
        return GK.threshold_grad(cop)

    def infer(self, types, attrs):
        dy, x = types[0], types[1]
        _signal(dy)
        C.expect_dtype(x, ("float", "int"), "pre-activation")
        _same_shape(dy, x, "signal and pre-activation")
        if len(types) > 2:
            C.channel_vector(types[2], x.shape[1], "tau", ("float", "int"))
        if len(types) > 3:
            C.channel_vector(types[3], x.shape[1], "ge", "bool")
        return [dy]

    def evaluate(self, args, attrs):
        dy, x = _f64(args[0]), _f64(args[1])
        shape = (1, -1) + (1,) * (x.ndim - 2)
        tau = _f64(args[2]).reshape(shape) if len(args) > 2 else float(attrs["tau"])
        u = attrs["alpha"] * (x - tau)
        if attrs["mode"] == "tanh":
            d = 1.0 - np.tanh(u) ** 2
        elif attrs["mode"] == "box":
            d = (np.abs(u) <= 1.0).astype(np.float64)
        else:
            d = np.maximum(0.0, 2.0 - 2.0 * np.abs(u))
        if len(args) > 3:
            d = d * np.where(args[3], 1.0, -1.0).reshape(shape)
        return [_f32(dy * d)]


class _SameShapeGrad(GradOp):
    """Operands (dy, x or y, ...) with x or y shaped like dy; the result is shaped like dy."""

    operands = ("dy", "x")
    traits = frozenset({"gradient", "elementwise"})

    def infer(self, types, attrs):
        _signal(types[0])
        _same_shape(types[0], types[1], "signal and value")
        return [types[0]]


class _UnaryGrad(_SameShapeGrad):
    """dx = dy · f'(x or y) elementwise."""

    def evaluate(self, args, attrs):
        return [_f32(_f64(args[0]) * self.derivative(_f64(args[1]), attrs))]


@register
class ReluGrad(_UnaryGrad):
    """dx = dy · 1{x > 0}."""

    name = "relu_grad"

    def cost(self, ctx):
        return [E.relu_grad(ctx.operands[0], ctx.operands[1], ctx.results[0])]

    def emit_c(self, cop):
        return GK.unary_grad(cop, lambda x: f"({x} > 0.0 ? 1.0 : 0.0)")

    def derivative(self, x, attrs):
        return (x > 0).astype(np.float64)


@register
class SoftmaxGrad(_SameShapeGrad):
    """dx = y · (dy - Σ_axis dy·y), y the softmax output."""

    name = "softmax_grad"
    operands = ("dy", "y")
    attrs = (Attr("axis", "int", -1),)
    traits = frozenset({"gradient"})

    def cost(self, ctx):
        return [E.softmax_grad(ctx.operands[0], ctx.operands[1], ctx.results[0])]

    def emit_c(self, cop):
        return GK.softmax_grad(cop, log=False)

    def evaluate(self, args, attrs):
        dy, y = _f64(args[0]), _f64(args[1])
        return [_f32(y * (dy - (dy * y).sum(axis=attrs["axis"], keepdims=True)))]


@register
class LeakyReluGrad(_UnaryGrad):
    """dx = dy · (1 if x >= 0 else alpha)."""

    name = "leaky_relu_grad"
    attrs = (Attr("alpha", "float", 0.01),)

    def cost(self, ctx):
        return [E.unary_grad(ctx, E.ARITH.times(2))]

    def emit_c(self, cop):
        alpha = GK.scalar_literal(float(cop.attrs["alpha"]), "double")
        return GK.unary_grad(cop, lambda x: f"({x} >= 0.0 ? 1.0 : {alpha})")

    def derivative(self, x, attrs):
        return np.where(x >= 0, 1.0, attrs["alpha"])


@register
class ClipGrad(_UnaryGrad):
    """dx = dy · 1{min <= x <= max}."""

    name = "clip_grad"
    attrs = (Attr("min", "float", float("-inf")), Attr("max", "float", float("inf")))

    def cost(self, ctx):
        return [E.unary_grad(ctx, E.ARITH.times(2))]

    def emit_c(self, cop):
        lo, hi = (GK.scalar_literal(float(cop.attrs[k]), "double") for k in ("min", "max"))
        return GK.unary_grad(cop, lambda x: f"({x} >= {lo} && {x} <= {hi} ? 1.0 : 0.0)")

    def derivative(self, x, attrs):
        return ((x >= attrs["min"]) & (x <= attrs["max"])).astype(np.float64)


@register
class SigmoidGrad(_UnaryGrad):
    """dx = dy · y (1 - y), y the sigmoid output."""

    name = "sigmoid_grad"
    operands = ("dy", "y")

    def cost(self, ctx):
        return [E.unary_grad(ctx, E.ARITH.times(3))]

    def emit_c(self, cop):
        return GK.unary_grad(cop, lambda y: f"{y} * (1.0 - {y})")

    def derivative(self, y, attrs):
        return y * (1.0 - y)


@register
class TanhGrad(_UnaryGrad):
    """dx = dy · (1 - y²), y the tanh output."""

    name = "tanh_grad"
    operands = ("dy", "y")

    def cost(self, ctx):
        return [E.unary_grad(ctx, E.ARITH.times(3))]

    def emit_c(self, cop):
        return GK.unary_grad(cop, lambda y: f"1.0 - {y} * {y}")

    def derivative(self, y, attrs):
        return 1.0 - y * y


@register
class PReluGradX(_SameShapeGrad):
    """dx = dy · (1 if x >= 0 else slope), slope broadcast to x."""

    name = "prelu_grad_x"
    operands = ("dy", "x", "slope")

    def cost(self, ctx):
        return [E.unary_grad(ctx, E.ARITH.times(2))]

    def emit_c(self, cop):
        return GK.unary_grad(cop, lambda x, slope: f"({x} >= 0.0 ? 1.0 : (double){slope})")

    def evaluate(self, args, attrs):
        dy, x, slope = (_f64(a) for a in args)
        return [_f32(dy * np.where(x >= 0, 1.0, slope))]


@register
class PReluGradSlope(_SameShapeGrad):
    """dslope = Σ over the broadcast axes of dy · x · 1{x < 0}, shaped like the slope."""

    name = "prelu_grad_slope"
    operands = ("dy", "x", "slope")
    traits = frozenset({"gradient", "reduce"})

    def cost(self, ctx):
        dy, x, slope = ctx.operands
        return [E.prelu_slope_grad(dy, x, slope, ctx.results[0])]

    def emit_c(self, cop):
        dy, x, slope = cop.ins

        def value(idx):
            v = f"(double){x.load(idx)}"
            return f"((double){dy.load(idx)} * ({v} < 0.0 ? {v} : 0.0))"

        return GK.reduce_into(cop, dy, value, GK.broadcast_index(dy, slope.shape))

    def infer(self, types, attrs):
        super().infer(types, attrs)
        return [types[2]]

    def evaluate(self, args, attrs):
        dy, x = _f64(args[0]), _f64(args[1])
        return SumTo().evaluate([dy * np.where(x < 0, x, 0.0)], {"shape": list(args[2].shape)})


@register
class LogSoftmaxGrad(_SameShapeGrad):
    """dx = dy - exp(y) · Σ_axis dy, y the log-softmax output."""

    name = "log_softmax_grad"
    operands = ("dy", "y")
    attrs = (Attr("axis", "int", -1),)
    traits = frozenset({"gradient"})

    def cost(self, ctx):
        return [E.unary_grad(ctx, E.ARITH.times(4))]

    def emit_c(self, cop):
        return GK.softmax_grad(cop, log=True)

    def evaluate(self, args, attrs):
        dy, y = _f64(args[0]), _f64(args[1])
        return [_f32(dy - np.exp(y) * dy.sum(axis=attrs["axis"], keepdims=True))]


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
    return C.pad_nchw(x, pad, fill), pad


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
    attrs = (C.KERNEL, C.STRIDE, C.PAD, C.DILATION, C.CEIL_MODE)
    traits = frozenset({"gradient", "pool"})

    def cost(self, ctx):
        dy, x = ctx.operands
        return [E.maxpool_grad(dy, x, ctx.results[0], ctx.attrs["kernel"][0] * ctx.attrs["kernel"][1])]

    def emit_c(self, cop):
        return GK.maxpool2d_grad(cop)

    def infer(self, types, attrs):
        dy, x = types
        _signal(dy)
        C.expect_rank(x, 4, "input")
        want = (x.shape[0], x.shape[1], *C.window_out_hw(x, attrs["kernel"], attrs, attrs["ceil_mode"]))
        if tuple(dy.shape) != want:
            raise TypeCheck(f"signal {dy} is not the pooled shape of {x}")
        return [TensorType(DType.f32, x.shape)]

    def evaluate(self, args, attrs):
        dy, x = _f64(args[0]), _f64(args[1])
        kh, kw = attrs["kernel"]
        oh, ow = dy.shape[2:]
        xp, pad = _pool_padded(x, attrs, oh, ow, -np.inf)
        win = C.windows(xp, (kh, kw), attrs["stride"], attrs["dilation"], (oh, ow))
        first = win.reshape(*win.shape[:4], kh * kw).argmax(axis=-1)  # argmax takes the first maximum
        dxp = np.zeros(xp.shape)
        for i in range(kh):
            for j in range(kw):
                _scatter(dxp, i, j, np.where(first == i * kw + j, dy, 0.0), attrs)
        return [_f32(_crop(dxp, pad, x.shape[2:]))]


@register
class AvgPool2dGrad(GradOp):
    """Average-pool backward: each dy[n,c,oh,ow] / count is added to the counted positions
    of its window (count as in the forward: inside the input, or the padded input with
    count_include_pad)."""

    name = "avgpool2d_grad"
    operands = ("dy",)
    attrs = (C.KERNEL, C.STRIDE, C.PAD, C.CEIL_MODE, Attr("count_include_pad", "bool", False), INPUT_HW)
    traits = frozenset({"gradient", "pool"})

    def cost(self, ctx):
        return [E.avgpool_grad(ctx.operands[0], ctx.results[0], ctx.attrs["kernel"][0] * ctx.attrs["kernel"][1])]

    def emit_c(self, cop):
        return GK.avgpool2d_grad(cop)

    def infer(self, types, attrs):
        dy = types[0]
        _signal(dy)
        C.expect_rank(dy, 4, "signal")
        x = TensorType(DType.f32, (dy.shape[0], dy.shape[1], *attrs["input_hw"]))
        if tuple(dy.shape[2:]) != C.window_out_hw(x, attrs["kernel"], attrs, attrs["ceil_mode"]):
            raise TypeCheck(f"signal {dy} is not the pooled shape of an input of {attrs['input_hw']}")
        return [x]

    def evaluate(self, args, attrs):
        dy = _f64(args[0])
        kh, kw = attrs["kernel"]
        h, w = attrs["input_hw"]
        oh, ow = dy.shape[2:]
        pt, pl, pb, pr = attrs["pad"]
        sh, sw = attrs["stride"]
        lo_h, hi_h = (-pt, h + pb) if attrs["count_include_pad"] else (0, h)
        lo_w, hi_w = (-pl, w + pr) if attrs["count_include_pad"] else (0, w)
        count = np.outer(C._count_inside(oh, kh, sh, 1, -pt, lo_h, hi_h),
                         C._count_inside(ow, kw, sw, 1, -pl, lo_w, hi_w))
        per = dy / count
        shell = np.zeros(dy.shape[:2] + (h, w))
        dxp, pad = _pool_padded(shell, attrs, oh, ow, 0.0)
        for i in range(kh):
            for j in range(kw):
                _scatter(dxp, i, j, per, attrs)
        # Positions outside the input (padding) are dropped by the crop.
        return [_f32(_crop(dxp, pad, (h, w)))]


@register
class GlobalAvgPoolGrad(GradOp):
    """dx[n, c, h, w] = dy[n, c, 0, 0] / (H·W)."""

    name = "global_avgpool_grad"
    operands = ("dy",)
    attrs = (INPUT_HW,)
    traits = frozenset({"gradient", "pool"})

    def cost(self, ctx):
        return [E.global_avgpool_grad(ctx.operands[0], ctx.results[0])]

    def emit_c(self, cop):
        return GK.global_avgpool_grad(cop)

    def infer(self, types, attrs):
        dy = types[0]
        _signal(dy)
        C.expect_rank(dy, 4, "signal")
        if tuple(dy.shape[2:]) != (1, 1):
            raise TypeCheck(f"signal {dy} must be [N, C, 1, 1]")
        return [TensorType(DType.f32, (dy.shape[0], dy.shape[1], *attrs["input_hw"]))]

    def evaluate(self, args, attrs):
        h, w = attrs["input_hw"]
        dy = _f64(args[0])
        return [_f32(np.broadcast_to(dy / (h * w), dy.shape[:2] + (h, w)))]


# --- normalisation, shapes ------------------------------------------------------------------


def _bn_factor(scale, var, eps, ndim) -> np.ndarray:
    shape = (1, -1) + (1,) * (ndim - 2)
    return (_f64(scale) / np.sqrt(_f64(var) + eps)).reshape(shape)


@register
class BatchNormGradX(GradOp):
    """Inference BatchNorm backward (statistics are constants): dx = dy · scale / sqrt(var + ε)."""

    name = "batchnorm_grad_x"
    operands = ("dy", "scale", "var")
    attrs = (Attr("epsilon", "float", 1e-5),)
    traits = frozenset({"gradient", "normalization"})

    def cost(self, ctx):
        dy, scale, var = ctx.operands
        return [E.batchnorm_grad_x(dy, scale, var, ctx.results[0])]

    def emit_c(self, cop):
        _, scale, var = cop.ins
        eps = GK.scalar_literal(float(cop.attrs["epsilon"]), "double")
        return GK.channel_scale(cop, lambda c: f"((double){scale.load(c)} / sqrt((double){var.load(c)} + {eps}))")

    def infer(self, types, attrs):
        dy = types[0]
        _signal(dy)
        for name, t in zip(("scale", "var"), types[1:]):
            C.channel_vector(t, dy.shape[1], name)
        return [dy]

    def evaluate(self, args, attrs):
        dy, scale, var = args
        return [_f32(_f64(dy) * _bn_factor(scale, var, attrs["epsilon"], dy.ndim))]


@register
class BatchNormGradScale(GradOp):
    """dscale[c] = Σ over all axes but 1 of dy · (x - mean[c]) / sqrt(var[c] + ε)."""

    name = "batchnorm_grad_scale"
    operands = ("dy", "x", "mean", "var")
    attrs = (Attr("epsilon", "float", 1e-5),)
    traits = frozenset({"gradient", "normalization"})

    def cost(self, ctx):
        dy, x, mean, var = ctx.operands
        return [E.batchnorm_grad_scale(dy, x, mean, var, ctx.results[0])]

    def emit_c(self, cop):
        dy, x, mean, var = cop.ins
        eps = GK.scalar_literal(float(cop.attrs["epsilon"]), "double")

        def value(idx):
            c = [idx[1]]
            xhat = f"(((double){x.load(idx)} - (double){mean.load(c)}) / sqrt((double){var.load(c)} + {eps}))"
            return f"((double){dy.load(idx)} * {xhat})"

        return GK.reduce_into(cop, dy, value, lambda idx: [idx[1]])

    def infer(self, types, attrs):
        dy, x = types[0], types[1]
        _signal(dy)
        _same_shape(dy, x, "signal and input")
        for name, t in zip(("mean", "var"), types[2:]):
            C.channel_vector(t, dy.shape[1], name)
        return [TensorType(DType.f32, (dy.shape[1],))]

    def evaluate(self, args, attrs):
        dy, x, mean, var = (_f64(a) for a in args)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        xhat = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + attrs["epsilon"])
        others = tuple(a for a in range(x.ndim) if a != 1)
        return [_f32((dy * xhat).sum(axis=others))]


@register
class SumTo(GradOp):
    """Gradient of a broadcast: dy summed over the axes along which an operand of ``shape``
    was broadcast (numpy rules), giving that shape."""

    name = "sum_to"
    operands = ("dy",)
    attrs = (Attr("shape", "shape"),)
    traits = frozenset({"gradient", "reduce"})

    def cost(self, ctx):
        return [E.sum_to(ctx.operands[0], ctx.results[0])]

    def emit_c(self, cop):
        dy = cop.ins[0]
        return GK.reduce_into(cop, dy, lambda idx: f"(double){dy.load(idx)}", GK.broadcast_index(dy, cop.out.shape))

    def infer(self, types, attrs):
        dy = types[0]
        _signal(dy)
        target = tuple(attrs["shape"])
        if len(target) > dy.rank:
            raise TypeCheck(f"cannot sum {dy} to a shape of higher rank {list(target)}")
        for d, t in zip(dy.shape[dy.rank - len(target):], target):
            if t != 1 and t != d:
                raise TypeCheck(f"{dy} was not broadcast from {list(target)}")
        return [TensorType(DType.f32, target)]

    def evaluate(self, args, attrs):
        dy = _f64(args[0])
        target = tuple(attrs["shape"])
        lead = dy.ndim - len(target)
        axes = tuple(range(lead)) + tuple(lead + i for i, t in enumerate(target) if t == 1 and dy.shape[lead + i] != 1)
        return [_f32(dy.sum(axis=axes).reshape(target))]


@register
class SliceAxis(GradOp):
    """y = x[..., start:stop, ...] along ``axis`` (the gradient of concat for one input)."""

    name = "slice_axis"
    operands = ("x",)
    attrs = (Attr("axis", "int"), Attr("start", "int"), Attr("stop", "int"))
    traits = frozenset({"gradient", "shape"})

    def cost(self, ctx):
        """A copy of the kept elements."""
        x, y = ctx.operands[0], ctx.results[0]
        return [E.copy(x.with_shape(y.shape), y, "signal", E.BACKWARD)]

    def emit_c(self, cop):
        return GK.slice_axis(cop)

    def infer(self, types, attrs):
        x = types[0]
        axis = attrs["axis"] % x.rank if -x.rank <= attrs["axis"] < x.rank else None
        if axis is None:
            raise TypeCheck(f"axis {attrs['axis']} out of range for {x}")
        size = C.expect_static(x.shape[axis], "sliced dimension")
        if not 0 <= attrs["start"] < attrs["stop"] <= size:
            raise TypeCheck(f"slice [{attrs['start']}, {attrs['stop']}) out of range for size {size}")
        shape = list(x.shape)
        shape[axis] = attrs["stop"] - attrs["start"]
        return [x.with_shape(shape)]

    def evaluate(self, args, attrs):
        x = args[0]
        index = [slice(None)] * x.ndim
        index[attrs["axis"]] = slice(attrs["start"], attrs["stop"])
        return [np.ascontiguousarray(x[tuple(index)])]


# --- helpers for the backward hooks of the layers ------------------------------------------


def layer_backward(ctx, op, dy, sign: float = 1.0, rescale: float = 1.0, pad_value: float = 0.0) -> list:
    """Gradients of a linear or convolution layer ``y = layer(x, w, bias?)`` with the signal
    ``dy``: input signal (scaled by ``sign·rescale``), weight signal (scaled by ``sign``) and
    bias signal (channel sums, unscaled: the bias enters as e(w0) or b)."""
    x, w = op.operands[0], op.operands[1]
    conv = w.type.rank == 4
    geometry = {k: op.attrs[k] for k in ("stride", "pad", "dilation", "groups")} if conv else {}
    grads = [None] * len(op.operands)
    if ctx.needs[0]:
        attrs = {**geometry, "scale": sign * rescale}
        if conv:
            attrs["input_hw"] = [C.expect_static(d, "input size") for d in x.type.shape[2:]]
        grads[0] = ctx.op("conv2d_grad_x" if conv else "linear_grad_x", [dy, w], attrs, grad_of=x)
    if ctx.needs[1]:
        attrs = {**geometry, "scale": sign}
        if conv:
            attrs.update(kernel=list(w.type.shape[2:]), pad_value=pad_value)
        grads[1] = ctx.op("conv2d_grad_w" if conv else "linear_grad_w", [dy, x], attrs, grad_of=w)
    if len(op.operands) > 2 and ctx.needs[2]:
        grads[2] = ctx.op("channel_sum", [dy], {"axis": 1 if conv else -1}, grad_of=op.operands[2])
    return grads


def layer_fan_in(op) -> int:
    """m of SPEC §3 for a linear ([out, in]) or convolution ([M, C/g, kh, kw]) layer."""
    return math.prod(op.operands[1].type.shape[1:])


def rescale_factor(op) -> float:
    """SPEC §3's optional input-signal rescaling: √(2/m_out) for a linear layer,
    √(2·s/(c_out·kh·kw)) for a convolution (s = √(sh·sw), the stride of a square kernel)."""
    w = op.operands[1].type.shape
    if len(w) == 2:
        return math.sqrt(2.0 / w[0])
    s = math.sqrt(op.attrs["stride"][0] * op.attrs["stride"][1])
    return math.sqrt(2.0 * s / (w[0] * w[2] * w[3]))


def threshold_backward(ctx, op, dy, extra_operands, tau) -> object:
    """The threshold rule (SPEC §3) for the pre-activation ``op.operands[0]``."""
    s = op.operands[0]
    alpha = ctx.options["alpha"]
    if not alpha:
        m = ctx.fan_in(s)
        if m is None:
            raise ctx.error(op, f"cannot find the fan-in of %{s.name} (no layer produces it); "
                                "give autodiff the option alpha")
        alpha = math.pi / (2.0 * math.sqrt(3.0 * m))
    attrs = {"mode": ctx.options["threshold-grad"], "alpha": float(alpha), "tau": tau}
    return ctx.op("threshold_grad", [dy, s, *extra_operands], attrs, grad_of=s)


def spatial(x) -> list[int]:
    """[H, W] of an NCHW value (static)."""
    return [C.expect_static(d, "spatial size") for d in x.type.shape[2:]]


def maxpool_backward(ctx, op, dy):
    x = op.operands[0]
    attrs = {k: op.attrs[k] for k in ("kernel", "stride", "pad", "dilation", "ceil_mode")}
    return ctx.op("maxpool2d_grad", [dy, x], attrs, grad_of=x)


def sum_to_operand(ctx, dy, operand):
    """dy itself, or dy summed to the shape of an operand that was broadcast."""
    if tuple(operand.type.shape) == tuple(dy.type.shape):
        return dy
    return ctx.op("sum_to", [dy], {"shape": list(operand.type.shape)}, grad_of=operand)
