"""Float activations an imported ONNX model may use besides ``relu``, and ``log_softmax``.

Each takes and returns f32 (same shape). The activations carry the trait
``Activation``: lowering to the Boolean domain replaces them by ``threshold`` on their
input (docs/method.md §5), so they remain only where a float region of the network keeps them.
"""

from __future__ import annotations

import numpy as np

from boldc.ir.works import ARITH, per_element
from boldc.ops.common import expect_dtype
from boldc.ops.registry import Attr, OpDef, TypeCheck, register
from boldc.ops.traits import Activation, Epilogue


class _FloatUnary(OpDef):
    """Shared type rule: one f32 operand, result of the same type."""

    operands = ("x",)

    def infer(self, types, attrs):
        expect_dtype(types[0], "float", "input")
        return [types[0]]


@register
class LeakyRelu(_FloatUnary):
    """y = x if x >= 0 else alpha · x."""

    name = "leaky_relu"
    attrs = (Attr("alpha", "float", 0.01, doc="slope for negative inputs"),)
    traits = (Activation(), Epilogue())

    def cost(self, ctx):
        """A comparison and a multiplication per element."""
        return per_element(ctx, ARITH.times(2))

    def backward(self, ctx, op, dys):
        x = op.operands[0]
        return [ctx.op("leaky_relu_grad", [dys[0], x], {"alpha": op.attrs["alpha"]}, grad_of=x)]

    def evaluate(self, args, attrs):
        x = args[0]
        return [np.where(x >= 0, x, x * np.float32(attrs["alpha"])).astype(np.float32)]


@register
class PRelu(OpDef):
    """y = x if x >= 0 else slope · x, with ``slope`` (a param) broadcast to x's shape
    (numpy rules, e.g. [C, 1, 1] for an NCHW map, or [1])."""

    name = "prelu"
    operands = ("x", "slope")
    traits = (Activation(),)

    def cost(self, ctx):
        """A comparison and a multiplication per element."""
        return per_element(ctx, ARITH.times(2))

    def backward(self, ctx, op, dys):
        x, slope = op.operands
        return [ctx.op("prelu_grad_x", [dys[0], x, slope], grad_of=x) if ctx.needs[0] else None,
                ctx.op("prelu_grad_slope", [dys[0], x, slope], grad_of=slope) if ctx.needs[1] else None]

    def infer(self, types, attrs):
        x, slope = types
        expect_dtype(x, "float", "input")
        expect_dtype(slope, "float", "slope")
        if slope.rank > x.rank:
            raise TypeCheck(f"slope {slope} has more dimensions than input {x}")
        for ds, dx in zip(reversed(slope.shape), reversed(x.shape)):
            if ds != 1 and ds != dx:
                raise TypeCheck(f"slope {slope} does not broadcast to input {x}")
        return [x]

    def evaluate(self, args, attrs):
        x, slope = args
        return [np.where(x >= 0, x, x * slope).astype(np.float32)]


@register
class Clip(_FloatUnary):
    """y = min(max(x, min), max) (HardTanh is clip(-1, 1), ReLU6 is clip(0, 6))."""

    name = "clip"
    attrs = (Attr("min", "float", float("-inf")), Attr("max", "float", float("inf")))
    traits = (Activation(), Epilogue())

    def cost(self, ctx):
        """Two comparisons per element."""
        return per_element(ctx, ARITH.times(2))

    def backward(self, ctx, op, dys):
        x = op.operands[0]
        return [ctx.op("clip_grad", [dys[0], x], {"min": op.attrs["min"], "max": op.attrs["max"]}, grad_of=x)]

    def evaluate(self, args, attrs):
        lo, hi = np.float32(attrs["min"]), np.float32(attrs["max"])
        return [np.minimum(np.maximum(args[0], lo), hi)]


@register
class Sigmoid(_FloatUnary):
    """y = 1 / (1 + exp(-x))."""

    name = "sigmoid"
    traits = (Activation(),)

    def cost(self, ctx):
        """exp, addition, division, negation: 4 operations per element."""
        return per_element(ctx, ARITH.times(4))

    def backward(self, ctx, op, dys):
        return [ctx.op("sigmoid_grad", [dys[0], op.result], grad_of=op.operands[0])]

    def evaluate(self, args, attrs):
        x = args[0].astype(np.float64)
        return [(0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)]  # = 1/(1+e^-x), no overflow


@register
class Tanh(_FloatUnary):
    """y = tanh(x)."""

    name = "tanh"
    traits = (Activation(),)

    def cost(self, ctx):
        """5 operations per element (two exps, a subtraction, an addition, a division)."""
        return per_element(ctx, ARITH.times(5))

    def backward(self, ctx, op, dys):
        return [ctx.op("tanh_grad", [dys[0], op.result], grad_of=op.operands[0])]

    def evaluate(self, args, attrs):
        return [np.tanh(args[0].astype(np.float64)).astype(np.float32)]


@register
class LogSoftmax(_FloatUnary):
    """y = x - max - log Σ exp(x - max) along ``axis``."""

    name = "log_softmax"
    attrs = (Attr("axis", "int", -1),)

    def cost(self, ctx):
        """Per element: max comparison, subtraction, exp, sum, log, subtraction (6)."""
        return per_element(ctx, ARITH.times(6))

    def backward(self, ctx, op, dys):
        attrs = {"axis": op.attrs["axis"]}
        return [ctx.op("log_softmax_grad", [dys[0], op.result], attrs, grad_of=op.operands[0])]

    def infer(self, types, attrs):
        x = types[0]
        if not -x.rank <= attrs["axis"] < x.rank:
            raise TypeCheck(f"axis {attrs['axis']} out of range for {x}")
        return super().infer(types, attrs)

    def evaluate(self, args, attrs):
        x = args[0].astype(np.float64)
        z = x - x.max(axis=attrs["axis"], keepdims=True)
        return [(z - np.log(np.exp(z).sum(axis=attrs["axis"], keepdims=True))).astype(np.float32)]
