"""Float activations an imported ONNX model may use besides ``relu``, and ``log_softmax``.

Each takes and returns f32 (same shape). The activations carry the trait
"activation": lowering to the Boolean domain replaces them by ``threshold`` on their
input (SPEC §5), so they remain only where a float region of the network keeps them.
"""

from __future__ import annotations

import numpy as np

from boldc.backend import kernels as K
from boldc.energymodel import works as E
from boldc.ops import common as C
from boldc.ops.registry import Attr, OpDef, TypeCheck, register

_ACTIVATION = frozenset({"activation", "elementwise"})


class _FloatUnary(OpDef):
    """Shared type rule: one f32 operand, result of the same type."""

    operands = ("x",)

    def infer(self, types, attrs):
        C.expect_dtype(types[0], "float", "input")
        return [types[0]]


@register
class LeakyRelu(_FloatUnary):
    """y = x if x >= 0 else alpha · x."""

    name = "leaky_relu"
    attrs = (Attr("alpha", "float", 0.01, doc="slope for negative inputs"),)
    traits = _ACTIVATION

    def cost(self, ctx):
        """A comparison and a multiplication per element; backward: leaky_relu_grad."""
        return E.unary(ctx, E.ARITH.times(2), "x", E.ARITH.times(2))

    def backward(self, ctx, op, dys):
        x = op.operands[0]
        return [ctx.op("leaky_relu_grad", [dys[0], x], {"alpha": op.attrs["alpha"]}, grad_of=x)]

    def emit_c(self, cop):
        alpha = K.scalar_literal(cop.attrs["alpha"], "float")  # numpy multiplies by float32(alpha)
        return K.elementwise(cop, lambda x: f"({x} >= 0.0f ? {x} : {x} * {alpha})")

    def evaluate(self, args, attrs):
        x = args[0]
        return [np.where(x >= 0, x, x * np.float32(attrs["alpha"])).astype(np.float32)]


@register
class PRelu(OpDef):
    """y = x if x >= 0 else slope · x, with ``slope`` (a param) broadcast to x's shape
    (numpy rules, e.g. [C, 1, 1] for an NCHW map, or [1])."""

    name = "prelu"
    operands = ("x", "slope")
    traits = _ACTIVATION

    def cost(self, ctx):
        """A comparison and a multiplication per element; backward: prelu_grad_x, prelu_grad_slope."""
        x, slope = ctx.operands
        dy = ctx.signal_like(ctx.results[0])
        works = [E.pointwise(ctx, E.ARITH.times(2))]
        if ctx.need(0):
            works.append(E.stream("signal", E.BACKWARD, (dy, x, slope), (ctx.signal_like(x),),
                                  E.ARITH.times(2 * x.numel)))
        if ctx.need(1):
            works.append(E.prelu_slope_grad(dy, x, slope, ctx.signal_like(slope)))
        return works

    def backward(self, ctx, op, dys):
        x, slope = op.operands
        return [ctx.op("prelu_grad_x", [dys[0], x, slope], grad_of=x) if ctx.needs[0] else None,
                ctx.op("prelu_grad_slope", [dys[0], x, slope], grad_of=slope) if ctx.needs[1] else None]

    def infer(self, types, attrs):
        x, slope = types
        C.expect_dtype(x, "float", "input")
        C.expect_dtype(slope, "float", "slope")
        if slope.rank > x.rank:
            raise TypeCheck(f"slope {slope} has more dimensions than input {x}")
        for ds, dx in zip(reversed(slope.shape), reversed(x.shape)):
            if ds != 1 and ds != dx:
                raise TypeCheck(f"slope {slope} does not broadcast to input {x}")
        return [x]

    def emit_c(self, cop):
        return K.elementwise(cop, lambda x, slope: f"({x} >= 0.0f ? {x} : {x} * {slope})")

    def evaluate(self, args, attrs):
        x, slope = args
        return [np.where(x >= 0, x, x * slope).astype(np.float32)]


@register
class Clip(_FloatUnary):
    """y = min(max(x, min), max) (HardTanh is clip(-1, 1), ReLU6 is clip(0, 6))."""

    name = "clip"
    attrs = (Attr("min", "float", float("-inf")), Attr("max", "float", float("inf")))
    traits = _ACTIVATION

    def cost(self, ctx):
        """Two comparisons per element; backward: clip_grad."""
        return E.unary(ctx, E.ARITH.times(2), "x", E.ARITH.times(2))

    def backward(self, ctx, op, dys):
        x = op.operands[0]
        return [ctx.op("clip_grad", [dys[0], x], {"min": op.attrs["min"], "max": op.attrs["max"]}, grad_of=x)]

    def emit_c(self, cop):
        lo, hi = (K.scalar_literal(cop.attrs[k], "float") for k in ("min", "max"))
        return K.elementwise(cop, lambda x: f"(({x} < {lo} ? {lo} : {x}) > {hi} ? {hi} : ({x} < {lo} ? {lo} : {x}))")

    def evaluate(self, args, attrs):
        lo, hi = np.float32(attrs["min"]), np.float32(attrs["max"])
        return [np.minimum(np.maximum(args[0], lo), hi)]


@register
class Sigmoid(_FloatUnary):
    """y = 1 / (1 + exp(-x))."""

    name = "sigmoid"
    traits = _ACTIVATION

    def cost(self, ctx):
        """exp, addition, division, negation: 4 operations per element; backward: sigmoid_grad."""
        return E.unary(ctx, E.ARITH.times(4), "y", E.ARITH.times(3))

    def backward(self, ctx, op, dys):
        return [ctx.op("sigmoid_grad", [dys[0], op.result], grad_of=op.operands[0])]

    def emit_c(self, cop):
        return K.elementwise(cop, lambda x: f"(0.5 * (1.0 + tanh(0.5 * (double){x})))")

    def evaluate(self, args, attrs):
        x = args[0].astype(np.float64)
        return [(0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)]  # = 1/(1+e^-x), no overflow


@register
class Tanh(_FloatUnary):
    """y = tanh(x)."""

    name = "tanh"
    traits = _ACTIVATION

    def cost(self, ctx):
        """5 operations per element (two exps, a subtraction, an addition, a division);
        backward: tanh_grad."""
        return E.unary(ctx, E.ARITH.times(5), "y", E.ARITH.times(3))

    def backward(self, ctx, op, dys):
        return [ctx.op("tanh_grad", [dys[0], op.result], grad_of=op.operands[0])]

    def emit_c(self, cop):
        return K.elementwise(cop, lambda x: f"tanh((double){x})")

    def evaluate(self, args, attrs):
        return [np.tanh(args[0].astype(np.float64)).astype(np.float32)]


@register
class LogSoftmax(_FloatUnary):
    """y = x - max - log Σ exp(x - max) along ``axis``."""

    name = "log_softmax"
    attrs = (Attr("axis", "int", -1),)
    traits = frozenset({"elementwise"})

    def cost(self, ctx):
        """Per element: max comparison, subtraction, exp, sum, log, subtraction (6);
        backward: log_softmax_grad."""
        return E.unary(ctx, E.ARITH.times(6), "y", E.ARITH.times(4))

    def backward(self, ctx, op, dys):
        attrs = {"axis": op.attrs["axis"]}
        return [ctx.op("log_softmax_grad", [dys[0], op.result], attrs, grad_of=op.operands[0])]

    def infer(self, types, attrs):
        x = types[0]
        if not -x.rank <= attrs["axis"] < x.rank:
            raise TypeCheck(f"axis {attrs['axis']} out of range for {x}")
        return super().infer(types, attrs)

    def emit_c(self, cop):
        return K.softmax(cop, cop.attrs["axis"], log=True)

    def evaluate(self, args, attrs):
        x = args[0].astype(np.float64)
        z = x - x.max(axis=attrs["axis"], keepdims=True)
        return [(z - np.log(np.exp(z).sum(axis=attrs["axis"], keepdims=True))).astype(np.float32)]
