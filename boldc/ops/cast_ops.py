"""Casts between b1, integers and f32 (docs/method.md §1 for the Boolean readings)."""

from __future__ import annotations

import numpy as np

from boldc.ir.types import DType, dtype_from_str
from boldc.ir.works import ARITH, BIT, LOGIC, NO_OPS, REAL, per_element, view
from boldc.ops.backward_rules import threshold_backward
from boldc.ops.registry import Attr, OpDef, TypeCheck, register
from boldc.ops.traits import Cast as CastTrait
from boldc.ops.traits import Epilogue


@register
class Cast(OpDef):
    """y = x converted to ``to``:

    - b1 -> number: e(x), T -> +1, F -> -1;
    - number -> b1: T if x >= 0 else F;
    - f32 -> integer: round half to even, saturating at the type's range;
    - integer -> wider integer or f32: the value."""

    name = "cast"
    operands = ("x",)
    attrs = (Attr("to", "str", choices=tuple(d.value for d in DType)),)
    traits = (CastTrait(), Epilogue())

    def cost(self, ctx):
        """Per element: to or from b1 one logic operation, f32 <-> integer one arithmetic
        operation, integer widening nothing (a copy); a cast to the same representation (as
        in the float baseline) is an identity."""
        x, y = ctx.operands[0], ctx.results[0]
        if (x.kind, x.bits) == (y.kind, y.bits):
            return view(ctx, "an identity in this representation")
        if BIT in (x.kind, y.kind):
            return per_element(ctx, LOGIC)
        return per_element(ctx, ARITH if REAL in (x.kind, y.kind) else NO_OPS)

    def backward(self, ctx, op, dys):
        """To b1 (x >= 0) is a threshold at 0 and uses its rule; every other cast passes the
        signal through unchanged (straight-through for f32 -> integer rounding)."""
        x = op.operands[0]
        if op.result.type.dtype.is_bool and not x.type.dtype.is_bool:
            return [threshold_backward(ctx, op, dys[0], [], 0)]
        return [dys[0]]

    def fan_in(self, op, fan_in_of):
        return None if op.result.type.dtype.is_bool else fan_in_of(op.operands[0])

    def infer(self, types, attrs):
        to = dtype_from_str(attrs["to"])
        src = types[0].dtype
        if src.is_int and to.is_int and to.bits < src.bits:
            raise TypeCheck(f"cast {src} -> {to} narrows an integer; not allowed")
        return [types[0].with_dtype(to)]

    def evaluate(self, args, attrs):
        x = args[0]
        to = dtype_from_str(attrs["to"])
        if to.is_bool:
            return [x >= 0] if x.dtype != np.bool_ else [x.copy()]
        if x.dtype == np.bool_:
            return [np.where(x, 1, -1).astype(to.numpy)]
        if to.is_int and np.issubdtype(x.dtype, np.floating):
            lo, hi = to.int_range
            return [np.clip(np.rint(x.astype(np.float64)), lo, hi).astype(to.numpy)]
        return [x.astype(to.numpy)]
