"""Gradient ops of the float ops: activations, pooling and BatchNorm
(docs/training.md, "Float ops"), with the conventions of grad_ops.py: every signal is
f32 shaped like the value it is the gradient of, sums are accumulated in float64 and
rounded once to f32 (the reference value), b1 operands are read as +-1.
"""

from __future__ import annotations

import numpy as np

from boldc.backend import grad_kernels as GK
from boldc.energymodel import works as E
from boldc.ir.types import DType, TensorType
from boldc.ops import common as C
from boldc.ops.grad_ops import INPUT_HW, GradOp, SumTo, as_f32, as_f64, expect_same_shape, expect_signal
from boldc.ops.registry import Attr, TypeCheck, register


class _SameShapeGrad(GradOp):
    """Operands (dy, x or y, ...) with x or y shaped like dy; the result is shaped like dy."""

    operands = ("dy", "x")
    traits = frozenset({"gradient", "elementwise"})

    def infer(self, types, attrs):
        expect_signal(types[0])
        expect_same_shape(types[0], types[1], "signal and value")
        return [types[0]]


class _UnaryGrad(_SameShapeGrad):
    """dx = dy · f'(x or y) elementwise."""

    def evaluate(self, args, attrs):
        return [as_f32(as_f64(args[0]) * self.derivative(as_f64(args[1]), attrs))]


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
        dy, y = as_f64(args[0]), as_f64(args[1])
        return [as_f32(y * (dy - (dy * y).sum(axis=attrs["axis"], keepdims=True)))]


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
        dy, x, slope = (as_f64(a) for a in args)
        return [as_f32(dy * np.where(x >= 0, 1.0, slope))]


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
        dy, x = as_f64(args[0]), as_f64(args[1])
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
        dy, y = as_f64(args[0]), as_f64(args[1])
        return [as_f32(dy - np.exp(y) * dy.sum(axis=attrs["axis"], keepdims=True))]


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
        expect_signal(dy)
        C.expect_rank(x, 4, "input")
        want = (x.shape[0], x.shape[1], *C.window_out_hw(x, attrs["kernel"], attrs, attrs["ceil_mode"]))
        if tuple(dy.shape) != want:
            raise TypeCheck(f"signal {dy} is not the pooled shape of {x}")
        return [TensorType(DType.f32, x.shape)]

    def evaluate(self, args, attrs):
        dy, x = as_f64(args[0]), as_f64(args[1])
        kh, kw = attrs["kernel"]
        oh, ow = dy.shape[2:]
        xp, pad = _pool_padded(x, attrs, oh, ow, -np.inf)
        win = C.windows(xp, (kh, kw), attrs["stride"], attrs["dilation"], (oh, ow))
        first = win.reshape(*win.shape[:4], kh * kw).argmax(axis=-1)  # argmax takes the first maximum
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
    attrs = (C.KERNEL, C.STRIDE, C.PAD, C.CEIL_MODE, Attr("count_include_pad", "bool", False), INPUT_HW)
    traits = frozenset({"gradient", "pool"})

    def cost(self, ctx):
        return [E.avgpool_grad(ctx.operands[0], ctx.results[0], ctx.attrs["kernel"][0] * ctx.attrs["kernel"][1])]

    def emit_c(self, cop):
        return GK.avgpool2d_grad(cop)

    def infer(self, types, attrs):
        dy = types[0]
        expect_signal(dy)
        C.expect_rank(dy, 4, "signal")
        x = TensorType(DType.f32, (dy.shape[0], dy.shape[1], *attrs["input_hw"]))
        if tuple(dy.shape[2:]) != C.window_out_hw(x, attrs["kernel"], attrs, attrs["ceil_mode"]):
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
        count = np.outer(C._count_inside(oh, kh, sh, 1, -pt, lo_h, hi_h),
                         C._count_inside(ow, kw, sw, 1, -pl, lo_w, hi_w))
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
    traits = frozenset({"gradient", "pool"})

    def cost(self, ctx):
        return [E.global_avgpool_grad(ctx.operands[0], ctx.results[0])]

    def emit_c(self, cop):
        return GK.global_avgpool_grad(cop)

    def infer(self, types, attrs):
        dy = types[0]
        expect_signal(dy)
        C.expect_rank(dy, 4, "signal")
        if tuple(dy.shape[2:]) != (1, 1):
            raise TypeCheck(f"signal {dy} must be [N, C, 1, 1]")
        return [TensorType(DType.f32, (dy.shape[0], dy.shape[1], *attrs["input_hw"]))]

    def evaluate(self, args, attrs):
        h, w = attrs["input_hw"]
        dy = as_f64(args[0])
        return [as_f32(np.broadcast_to(dy / (h * w), dy.shape[:2] + (h, w)))]


# --- normalisation ---------------------------------------------------------------------------


def _bn_factor(scale, var, eps, ndim) -> np.ndarray:
    shape = (1, -1) + (1,) * (ndim - 2)
    return (as_f64(scale) / np.sqrt(as_f64(var) + eps)).reshape(shape)


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
        expect_signal(dy)
        for name, t in zip(("scale", "var"), types[1:]):
            C.channel_vector(t, dy.shape[1], name)
        return [dy]

    def evaluate(self, args, attrs):
        dy, scale, var = args
        return [as_f32(as_f64(dy) * _bn_factor(scale, var, attrs["epsilon"], dy.ndim))]


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
        expect_signal(dy)
        expect_same_shape(dy, x, "signal and input")
        for name, t in zip(("mean", "var"), types[2:]):
            C.channel_vector(t, dy.shape[1], name)
        return [TensorType(DType.f32, (dy.shape[1],))]

    def evaluate(self, args, attrs):
        dy, x, mean, var = (as_f64(a) for a in args)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        xhat = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + attrs["epsilon"])
        others = tuple(a for a in range(x.ndim) if a != 1)
        return [as_f32((dy * xhat).sum(axis=others))]
