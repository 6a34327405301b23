"""Elementwise float arithmetic beyond ``add``: ``mul``.

The ONNX frontend maps Mul, Sub and Div by constants onto ``mul`` and ``add``
(x - c = x + (-c), x / c = x · (1/c)), so one extra op covers them.
"""

from __future__ import annotations

import numpy as np

from boldc.backend import kernels as K
from boldc.energymodel import works as E
from boldc.ir.types import DType, TensorType
from boldc.ops import common as C
from boldc.ops import grad_ops as G
from boldc.ops.float_ops import NUMERIC, _broadcast
from boldc.ops.registry import OpDef, register


@register
class Mul(OpDef):
    """y = a · b with numpy broadcasting, in f32 (b1 operands read as e(b) = ±1,
    integers as their values)."""

    name = "mul"
    operands = ("a", "b")
    traits = frozenset({"elementwise"})

    def cost(self, ctx):
        """One multiplication per element; backward: mul of the signal by the other
        operand (summed with sum_to for a broadcast operand)."""
        y = ctx.results[0]
        works = [E.pointwise(ctx, E.ARITH)]
        dy = ctx.signal_like(y)
        for i, other in ((0, 1), (1, 0)):
            if ctx.need(i):
                works.append(E.stream("signal", E.BACKWARD, (dy, ctx.operands[other]), (dy,), E.ARITH.times(y.numel)))
                if ctx.operands[i].shape != y.shape:
                    works.append(E.sum_to(dy, ctx.signal_like(ctx.operands[i])))
        return works

    def backward(self, ctx, op, dys):
        """da = dy · e(b), db = dy · e(a), each summed over the axes it was broadcast along."""
        a, b = op.operands
        return [G.sum_to_operand(ctx, ctx.op("mul", [dys[0], other], grad_of=operand), operand) if need else None
                for operand, other, need in ((a, b, ctx.needs[0]), (b, a, ctx.needs[1]))]

    def infer(self, types, attrs):
        a, b = types
        C.expect_dtype(a, NUMERIC, "a")
        C.expect_dtype(b, NUMERIC, "b")
        return [TensorType(DType.f32, _broadcast(a, b))]

    def emit_c(self, cop):
        return K.elementwise(cop, lambda a, b: f"((float){a} * (float){b})")  # f32 product, as numpy

    def evaluate(self, args, attrs):
        return [(C.signed(args[0]) * C.signed(args[1])).astype(np.float32)]
