"""Gradient ops: what the backward hooks emit (SPEC §3, docs/training.md).

Every signal is f32 with the shape of the value it is the gradient of, whatever that
value's dtype (the gradient of a b1 activation is a real signal). b1 operands are read
through e(.) = +-1, so the Boolean rules

    input signal   g[k, i] = ± Σ_j z[k, j] · e(W[j, i])
    weight signal  q[j, i] = ± Σ_k z[k, j] · e(x[k, i])

are the same ops as the float gradients dx = dy·W and dW = dyᵀ·x, with ``scale`` = ±1
(negative for xor) times the optional rescaling factor. Sums are accumulated in float64
and rounded once to f32 (the reference value; see docs/training.md on determinism).

This file holds the gradients of the layers (linear, convolution, their bias) and of the
threshold, the base class and helpers of every gradient op, and the helpers the layers'
``backward`` hooks share; float_grad_ops.py holds the gradients of the other float ops.
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


def as_f64(x: np.ndarray) -> np.ndarray:
    """e(.) for b1, else the values, in float64 (the accumulation type of gradients)."""
    if x.dtype == np.bool_:
        return np.where(x, 1.0, -1.0)
    return x.astype(np.float64)


def as_f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def expect_signal(t: TensorType, what: str = "signal") -> None:
    C.expect_dtype(t, "float", what)


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
    traits = frozenset({"side_effect", "gradient", "gradient_sink"})

    cost = E.nothing("declares the gradient of a param; computes nothing (insert-optimizer replaces it)")

    emit_c = MustLower("param_grad only hands gradients over: run insert-optimizer, which turns it into "
                       "optimizer updates")

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
        expect_signal(dy)
        C.expect_dtype(w, ("float", "bool"), "weights")
        C.expect_rank(w, 2, "weights")
        if dy.rank < 2 or dy.shape[-1] != w.shape[0]:
            raise TypeCheck(f"signal {dy} does not match weights {w} ([out, in])")
        return [TensorType(DType.f32, tuple(dy.shape[:-1]) + (w.shape[1],))]

    def evaluate(self, args, attrs):
        dy, w = args
        return [as_f32(attrs["scale"] * (as_f64(dy) @ as_f64(w)))]


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
        expect_signal(dy)
        C.expect_dtype(x, ("float", "int", "bool"), "input")
        if dy.rank != x.rank or dy.rank < 2 or tuple(dy.shape[:-1]) != tuple(x.shape[:-1]):
            raise TypeCheck(f"signal {dy} and input {x} differ in their leading dimensions")
        return [TensorType(DType.f32, (dy.shape[-1], x.shape[-1]))]

    def evaluate(self, args, attrs):
        dy, x = args
        dy2 = as_f64(dy).reshape(-1, dy.shape[-1])
        x2 = as_f64(x).reshape(-1, x.shape[-1])
        return [as_f32(attrs["scale"] * (dy2.T @ x2))]


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
        expect_signal(dy)
        if not -dy.rank <= attrs["axis"] < dy.rank:
            raise TypeCheck(f"axis {attrs['axis']} out of range for {dy}")
        return [TensorType(DType.f32, (C.expect_static(dy.shape[attrs["axis"]], "channel count"),))]

    def evaluate(self, args, attrs):
        dy = args[0]
        axis = attrs["axis"] % dy.ndim
        others = tuple(a for a in range(dy.ndim) if a != axis)
        return [as_f32(as_f64(dy).sum(axis=others))]


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
        expect_signal(dy)
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
        dy, w = as_f64(args[0]), as_f64(args[1])
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
        return [as_f32(attrs["scale"] * dxp[:, :, pt:pt + h, pl:pl + wd])]


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
        expect_signal(dy)
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
        dy, x = as_f64(args[0]), as_f64(args[1])
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
        return [as_f32(attrs["scale"] * out)]


# --- threshold ------------------------------------------------------------------------------


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
        expect_signal(dy)
        C.expect_dtype(x, ("float", "int"), "pre-activation")
        expect_same_shape(dy, x, "signal and pre-activation")
        if len(types) > 2:
            C.channel_vector(types[2], x.shape[1], "tau", ("float", "int"))
        if len(types) > 3:
            C.channel_vector(types[3], x.shape[1], "ge", "bool")
        return [dy]

    def evaluate(self, args, attrs):
        dy, x = as_f64(args[0]), as_f64(args[1])
        shape = (1, -1) + (1,) * (x.ndim - 2)
        tau = as_f64(args[2]).reshape(shape) if len(args) > 2 else float(attrs["tau"])
        u = attrs["alpha"] * (x - tau)
        if attrs["mode"] == "tanh":
            d = 1.0 - np.tanh(u) ** 2
        elif attrs["mode"] == "box":
            d = (np.abs(u) <= 1.0).astype(np.float64)
        else:
            d = np.maximum(0.0, 2.0 - 2.0 * np.abs(u))
        if len(args) > 3:
            d = d * np.where(args[3], 1.0, -1.0).reshape(shape)
        return [as_f32(dy * d)]


# --- shapes: broadcasts and slices (the gradients of broadcasting, concat and pad) -------


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
        expect_signal(dy)
        target = tuple(attrs["shape"])
        if len(target) > dy.rank:
            raise TypeCheck(f"cannot sum {dy} to a shape of higher rank {list(target)}")
        for d, t in zip(dy.shape[dy.rank - len(target):], target):
            if t != 1 and t != d:
                raise TypeCheck(f"{dy} was not broadcast from {list(target)}")
        return [TensorType(DType.f32, target)]

    def evaluate(self, args, attrs):
        dy = as_f64(args[0])
        target = tuple(attrs["shape"])
        lead = dy.ndim - len(target)
        axes = tuple(range(lead)) + tuple(lead + i for i, t in enumerate(target) if t == 1 and dy.shape[lead + i] != 1)
        return [as_f32(dy.sum(axis=axes).reshape(target))]


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
