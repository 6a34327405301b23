"""Elementwise float arithmetic beyond ``add``: ``mul``.

The ONNX frontend maps Mul, Sub and Div by constants onto ``mul`` and ``add``
(x - c = x + (-c), x / c = x · (1/c)), so one extra op covers them.
"""

from __future__ import annotations

import numpy as np

from boldc.ir.types import DType, TensorType
from boldc.ir.works import ARITH, per_element
from boldc.ops.backward_rules import sum_to_operand
from boldc.ops.common import expect_dtype, signed
from boldc.ops.float_ops import NUMERIC, _broadcast
from boldc.ops.registry import OpDef, register


@register
class Mul(OpDef):
    """y = a · b with numpy broadcasting, in f32 (b1 operands read as e(b) = ±1,
    integers as their values)."""

    name = "mul"
    operands = ("a", "b")

    def cost(self, ctx):
        """One multiplication per element."""
        return per_element(ctx, ARITH)

    def backward(self, ctx, op, dys):
        """da = dy · e(b), db = dy · e(a), each summed over the axes it was broadcast along."""
        a, b = op.operands
        return [sum_to_operand(ctx, ctx.op("mul", [dys[0], other], grad_of=operand), operand) if need else None
                for operand, other, need in ((a, b, ctx.needs[0]), (b, a, ctx.needs[1]))]

    def infer(self, types, attrs):
        a, b = types
        expect_dtype(a, NUMERIC, "a")
        expect_dtype(b, NUMERIC, "b")
        return [TensorType(DType.f32, _broadcast(a, b))]

    def evaluate(self, args, attrs):
        return [(signed(args[0]) * signed(args[1])).astype(np.float32)]


@register
class Exp(OpDef):
    """y = e^x (f32)."""

    name = "exp"
    operands = ("x",)

    def cost(self, ctx):
        """One exponential per element."""
        return per_element(ctx, ARITH)

    def backward(self, ctx, op, dys):
        """dx = dy · y."""
        return [ctx.op("mul", [dys[0], op.result], grad_of=op.operands[0])]

    def infer(self, types, attrs):
        expect_dtype(types[0], "float", "input")
        return [types[0]]

    def evaluate(self, args, attrs):
        return [np.exp(args[0].astype(np.float64)).astype(np.float32)]
