"""Elementwise arithmetic beyond ``add``: ``mul``, ``sub``, ``div`` (with the gradient ops of
their second operands) and the functions ``exp`` and ``erf``.

The ONNX frontend maps Mul, Sub and Div by constants onto ``mul`` and ``add``
(x - c = x + (-c), x / c = x · (1/c)); ``sub`` and ``div`` are those of two computed
tensors (a transformer's attention and normalizations).
"""

from __future__ import annotations

import math

import numpy as np

from boldc.ir.types import DType, TensorType
from boldc.ir.works import ARITH, BACKWARD, add_op, per_element, pointwise, stream
from boldc.ops.backward_rules import sum_to_operand
from boldc.ops.common import FloatUnary, expect_dtype, signed
from boldc.ops.float_ops import NUMERIC, AddTyped, _broadcast
from boldc.ops.grad_ops import GradOp, as_f64, expect_signal
from boldc.ops.registry import OpDef, TypeCheck, register
from boldc.ops.shape_ops import SumTo
from boldc.ops.traits import Epilogue, Gradient

# erf and erfc have no numpy ufunc: Python's math module's, element by element, in double.
# The C backend calls the C library's, the torch engine torch's: they agree within the last
# bit of a double, far inside one f32 rounding (GELU uses erfc where 1 + erf would cancel).
_ERF = np.vectorize(math.erf, otypes=[np.float64])
_ERFC = np.vectorize(math.erfc, otypes=[np.float64])


def erf64(x: np.ndarray) -> np.ndarray:
    """erf(x) = 2/√π ∫_0^x e^(-t²) dt of float64 ``x``, in float64."""
    x = np.asarray(x, dtype=np.float64)
    return _ERF(x) if x.size else np.zeros(x.shape)


def erfc64(x: np.ndarray) -> np.ndarray:
    """erfc(x) = 1 - erf(x) of float64 ``x``, in float64 (accurate where erf(x) is near 1)."""
    x = np.asarray(x, dtype=np.float64)
    return _ERFC(x) if x.size else np.zeros(x.shape)


class _F32Binary(OpDef):
    """Shared type rule of ``mul`` and ``div``: two numeric operands (f32, integer or b1),
    an f32 result of their numpy broadcast shape."""

    operands = ("a", "b")

    def infer(self, types, attrs):
        a, b = types
        expect_dtype(a, NUMERIC, "a")
        expect_dtype(b, NUMERIC, "b")
        return [TensorType(DType.f32, _broadcast(a, b))]


@register
class Mul(_F32Binary):
    """y = a · b with numpy broadcasting, in f32 (b1 operands read as e(b) = ±1,
    integers as their values)."""

    name = "mul"

    def cost(self, ctx):
        """One multiplication per element."""
        return per_element(ctx, ARITH)

    def backward(self, ctx, op, dys):
        """da = dy · e(b), db = dy · e(a), each summed over the axes it was broadcast along."""
        a, b = op.operands
        return [sum_to_operand(ctx, ctx.op("mul", [dys[0], other], grad_of=operand), operand) if need else None
                for operand, other, need in ((a, b, ctx.needs[0]), (b, a, ctx.needs[1]))]

    def evaluate(self, args, attrs):
        return [(signed(args[0]) * signed(args[1])).astype(np.float32)]


@register
class Exp(FloatUnary):
    """y = e^x (f32)."""

    name = "exp"

    def cost(self, ctx):
        """One exponential per element."""
        return per_element(ctx, ARITH)

    def backward(self, ctx, op, dys):
        """dx = dy · y."""
        return [ctx.op("mul", [dys[0], op.result], grad_of=op.operands[0])]

    def evaluate(self, args, attrs):
        return [np.exp(args[0].astype(np.float64)).astype(np.float32)]


@register
class Sub(AddTyped):
    """y = a - b with numpy broadcasting; the element types of ``add``: f32 if either is f32
    (the difference in double, rounded once), else an exact integer difference one integer
    step wider, b1 operands entering as e(b) = ±1 (``float_ops.add_dtype``)."""

    name = "sub"
    combine = staticmethod(np.subtract)
    traits = (Epilogue(chain=("a", "b")),)  # as add: a layer's output fused on either side

    def cost(self, ctx):
        """One subtraction per element."""
        return [pointwise(ctx, add_op(ctx.results[0]))]

    def backward(self, ctx, op, dys):
        """da = dy, db = -dy, each summed over the axes it was broadcast along."""
        a, b = op.operands
        return [sum_to_operand(ctx, dys[0], a) if ctx.needs[0] else None,
                ctx.op("sub_grad_b", [dys[0]], {"shape": list(b.type.shape)}, grad_of=b) if ctx.needs[1] else None]


@register
class Div(_F32Binary):
    """y = a / b with numpy broadcasting, in f32 (b1 operands read as e(b) = ±1, integers as
    their values); a zero divisor gives ±inf or NaN, as IEEE division."""

    name = "div"

    def cost(self, ctx):
        """One division per element."""
        return per_element(ctx, ARITH)

    def backward(self, ctx, op, dys):
        """da = dy / b, db = -dy · a / b², each summed over the axes it was broadcast along."""
        a, b = op.operands
        da = db = None
        if ctx.needs[0]:
            da = sum_to_operand(ctx, ctx.op("div", [dys[0], b], grad_of=a), a)
        if ctx.needs[1]:
            db = ctx.op("div_grad_b", [dys[0], a, b], grad_of=b)
        return [da, db]

    def evaluate(self, args, attrs):
        with np.errstate(divide="ignore", invalid="ignore"):  # IEEE: ±inf, NaN
            return [(signed(args[0]) / signed(args[1])).astype(np.float32)]


@register
class Erf(FloatUnary):
    """y = erf(x) = 2/√π ∫_0^x e^(-t²) dt (f32; in double, rounded once)."""

    name = "erf"

    def cost(self, ctx):
        """One erf per element, counted as one operation (as exp)."""
        return per_element(ctx, ARITH)

    def backward(self, ctx, op, dys):
        """dx = dy · 2/√π · e^(-x²) (``erf_grad``)."""
        x = op.operands[0]
        return [ctx.op("erf_grad", [dys[0], x], grad_of=x)]

    def evaluate(self, args, attrs):
        return [erf64(args[0]).astype(np.float32)]


# --- the second operand of sub and div ------------------------------------------------------------


@register
class SubGradB(SumTo):
    """db = -(dy summed over the axes along which b, of ``shape``, was broadcast): the
    signal of the subtrahend of ``sub``."""

    name = "sub_grad_b"

    def cost(self, ctx):
        """numel(dy) - numel(db) additions and a negation per element of db: numel(dy)
        operations in all, counted as additions."""
        dy, out = ctx.operands[0], ctx.results[0]
        return [stream("signal", BACKWARD, (dy,), (out,), add_op(out).times(dy.numel))]

    def evaluate(self, args, attrs):
        return [-super().evaluate(args, attrs)[0]]  # negating the rounded sum is exact


@register
class DivGradB(GradOp):
    """db = Σ over the axes along which b was broadcast of -(dy · a) / (b · b), in double,
    rounded once (a and b read as ``div`` reads them): the signal of the divisor of ``div``."""

    name = "div_grad_b"
    operands = ("dy", "a", "b")
    traits = (Gradient(),)

    def cost(self, ctx):
        """Per element of dy: two multiplications, a division and an accumulation."""
        dy, out = ctx.operands[0], ctx.results[0]
        return [stream("signal", BACKWARD, ctx.operands, ctx.results, (ARITH.times(3) + add_op(out)).times(dy.numel))]

    def infer(self, types, attrs):
        dy, a, b = types
        expect_signal(dy)
        expect_dtype(a, NUMERIC, "a")
        expect_dtype(b, NUMERIC, "b")
        if tuple(_broadcast(a, b)) != tuple(dy.shape):
            raise TypeCheck(f"signal {dy} is not the broadcast shape of {a} and {b}")
        return [TensorType(DType.f32, b.shape)]

    def evaluate(self, args, attrs):
        dy, a, b = (as_f64(v) for v in args)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            terms = -(dy * a) / (b * b)
        return SumTo().evaluate([terms], {"shape": list(args[2].shape)})
