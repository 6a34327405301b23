"""Casts between b1, integers and f32 (SPEC §1 for the Boolean readings)."""

from __future__ import annotations

import numpy as np

from boldc.ir.types import DType, dtype_from_str
from boldc.ops.registry import Attr, OpDef, TypeCheck, register


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
    traits = frozenset({"elementwise", "cast"})

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
