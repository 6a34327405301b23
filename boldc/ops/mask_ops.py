"""Attention masks: ``equal`` (a comparison to b1), ``not`` (b1 negation),
``where`` (a selection by a b1 condition) and ``where_grad``, the signal of one branch of
a ``where``. All broadcast as numpy does."""

from __future__ import annotations

import numpy as np

from boldc.ir.types import DType, TensorType
from boldc.ir.works import LOGIC, NO_OPS, add_op, per_element, pointwise
from boldc.ops.backward_rules import sum_to_operand
from boldc.ops.common import expect_dtype
from boldc.ops.float_ops import _broadcast
from boldc.ops.grad_ops import GradOp, as_f32, expect_signal
from boldc.ops.registry import Attr, NotDifferentiable, OpDef, TypeCheck, register
from boldc.ops.traits import Gradient

COMPARISON = NotDifferentiable("a comparison: its b1 result is piecewise constant in its operands")


def broadcast_all(*types: TensorType) -> tuple:
    """The numpy broadcast of the shapes of ``types`` (symbols broadcast with themselves or 1)."""
    shape = types[0]
    for t in types[1:]:
        shape = TensorType(DType.f32, _broadcast(shape, t))
    return tuple(shape.shape)


@register
class Equal(OpDef):
    """y = (a == b) with numpy broadcasting, b1 (T where equal); a and b of one numeric element
    type (an integer type, or f32: NaN equals nothing)."""

    name = "equal"
    operands = ("a", "b")
    nondiff_operands = ("a", "b")  # the derivative of a comparison is 0 almost everywhere

    backward = COMPARISON

    def cost(self, ctx):
        """One comparison per element."""
        return per_element(ctx, add_op(ctx.operands[0]))

    def infer(self, types, attrs):
        a, b = types
        expect_dtype(a, ("float", "int"), "a")
        expect_dtype(b, ("float", "int"), "b")
        if a.dtype != b.dtype:
            raise TypeCheck(f"a {a} and b {b} must have the same element type (cast one first)")
        return [TensorType(DType.b1, _broadcast(a, b))]

    def evaluate(self, args, attrs):
        return [np.asarray(np.equal(args[0], args[1]), dtype=np.bool_)]


@register
class Not(OpDef):
    """y = ¬x on b1 (e(y) = -e(x))."""

    name = "not"
    operands = ("x",)

    backward = NotDifferentiable("used on masks; a signal through a Boolean negation is not supported")

    def cost(self, ctx):
        """One NOT per element."""
        return per_element(ctx, LOGIC)

    def infer(self, types, attrs):
        expect_dtype(types[0], "bool", "input")
        return [types[0]]

    def evaluate(self, args, attrs):
        return [np.logical_not(args[0])]


@register
class Where(OpDef):
    """y = a where cond, else b (numpy where): cond b1, a and b of one element type (the
    result's), all three broadcast."""

    name = "where"
    operands = ("cond", "a", "b")
    nondiff_operands = ("cond",)

    def cost(self, ctx):
        """A selection per element: a copy of the chosen values."""
        return per_element(ctx, NO_OPS)

    def backward(self, ctx, op, dys):
        """da = where(cond, dy, 0), db = where(cond, 0, dy) (``where_grad``), each summed over the
        axes its operand was broadcast along."""
        cond = op.operands[0]
        grads = [None]
        for operand, branch, need in zip(op.operands[1:], ("a", "b"), ctx.needs[1:]):
            if not need:
                grads.append(None)
                continue
            g = ctx.op("where_grad", [dys[0], cond], {"branch": branch}, grad_of=operand)
            grads.append(sum_to_operand(ctx, g, operand))
        return grads

    def infer(self, types, attrs):
        cond, a, b = types
        expect_dtype(cond, "bool", "cond")
        if a.dtype != b.dtype:
            raise TypeCheck(f"a {a} and b {b} must have the same element type (cast one first)")
        return [TensorType(a.dtype, broadcast_all(cond, a, b))]

    def evaluate(self, args, attrs):
        return [np.ascontiguousarray(np.where(args[0], args[1], args[2]), dtype=args[1].dtype)]


@register
class WhereGrad(GradOp):
    """The signal of one branch of ``where``: dx = dy where cond (``branch`` "a") or where ¬cond
    (``branch`` "b"), else 0; cond broadcast to dy's shape."""

    name = "where_grad"
    operands = ("dy", "cond")
    attrs = (Attr("branch", "str", choices=("a", "b"), doc="the operand of where the signal is for"),)
    traits = (Gradient(),)

    def cost(self, ctx):
        """A selection per element (copy or zero)."""
        return [pointwise(ctx, NO_OPS, "signal")]

    def infer(self, types, attrs):
        dy, cond = types
        expect_signal(dy)
        expect_dtype(cond, "bool", "cond")
        if broadcast_all(dy, cond) != tuple(dy.shape):
            raise TypeCheck(f"cond {cond} does not broadcast to the signal {dy}")
        return [dy]

    def evaluate(self, args, attrs):
        dy, cond = args
        keep = cond if attrs["branch"] == "a" else np.logical_not(cond)
        return [as_f32(np.where(keep, dy, np.float32(0)))]
