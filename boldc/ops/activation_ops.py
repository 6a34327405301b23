"""Float activations an imported ONNX model may use besides ``relu`` (``gelu`` among them),
and ``log_softmax``.

Each takes and returns f32 (same shape). The activations carry the trait
``Activation``: lowering to the Boolean domain replaces them by ``threshold`` on their
input (docs/method.md §5), so they remain only where a float region of the network keeps them.
"""

from __future__ import annotations

import math

import numpy as np

from boldc.ir.works import ARITH, per_element
from boldc.ops.common import FloatUnary, exp_fixed, expect_dtype
from boldc.ops.elementwise_ops import erfc64
from boldc.ops.registry import Attr, OpDef, TypeCheck, register
from boldc.ops.traits import Activation, Epilogue


@register
class LeakyRelu(FloatUnary):
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
class Clip(FloatUnary):
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
class Sigmoid(FloatUnary):
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
class Tanh(FloatUnary):
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
class LogSoftmax(FloatUnary):
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


# The constants of GELU, as float64 values every implementation writes with the same digits
# (repr): the C backend and the torch engine compute the same double operations in the same
# order as ``gelu_values`` and float_grad_ops.GeluGrad.
SQRT1_2 = math.sqrt(0.5)  # 1/√2: the exact form's x/√2 is x · SQRT1_2
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_CUBIC = 0.044715
GELU_CUBIC3 = 3.0 * GELU_CUBIC  # the derivative's 3·0.044715
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
GELU_FORMS = ("none", "tanh")


def gelu_tanh_argument(x: np.ndarray) -> np.ndarray:
    """u = √(2/π)·(x + 0.044715·(x·x·x)) of the tanh form, float64."""
    return SQRT_2_OVER_PI * (x + GELU_CUBIC * (x * x * x))


def gelu_values(x: np.ndarray, approximate: str) -> np.ndarray:
    """GELU of float64 x in float64, written without the cancellation of 1 + erf or 1 + tanh
    near -1 (for x far below 0, where the result is tiny but its relative error would be
    large): 0.5·x·erfc(-(x·SQRT1_2)) ("none"; 1 + erf(z) = erfc(-z)), or
    x / (1 + e^(-2u)) ("tanh"; 1 + tanh(u) = 2 / (1 + e^(-2u)), ``exp_fixed``)."""
    if approximate == "tanh":
        return x / (1.0 + exp_fixed(-2.0 * gelu_tanh_argument(x)))
    return 0.5 * x * erfc64(-(x * SQRT1_2))


@register
class Gelu(FloatUnary):
    """y = 0.5·x·(1 + erf(x/√2)) (``approximate`` = "none"), or the tanh form
    0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) ("tanh"); in double as ``gelu_values`` writes
    them (the same functions without a cancellation), rounded once."""

    name = "gelu"
    attrs = (Attr("approximate", "str", "none", choices=GELU_FORMS, doc="the exact form or the tanh form"),)
    traits = (Activation(),)

    def cost(self, ctx):
        """Exact form: a scaling, a negation, erfc and two multiplications (5 per element);
        tanh form: x³ (2), a multiply-add (2), two scalings, exp, an addition and a division
        (9 per element)."""
        return per_element(ctx, ARITH.times(9 if ctx.attrs["approximate"] == "tanh" else 5))

    def backward(self, ctx, op, dys):
        x = op.operands[0]
        return [ctx.op("gelu_grad", [dys[0], x], {"approximate": op.attrs["approximate"]}, grad_of=x)]

    def evaluate(self, args, attrs):
        return [gelu_values(args[0].astype(np.float64), attrs["approximate"]).astype(np.float32)]
