"""Layout ops beyond flatten/reshape/concat: ``transpose`` and ``pad``."""

from __future__ import annotations

import numpy as np

from boldc.backend import kernels as K
from boldc.energymodel import works as E
from boldc.ops import common as C
from boldc.ops.registry import Attr, OpDef, TypeCheck, register


@register
class Transpose(OpDef):
    """y = x with its axes permuted: y.shape[i] = x.shape[perm[i]] (ONNX Transpose);
    any element type."""

    name = "transpose"
    operands = ("x",)
    attrs = (Attr("perm", "ints"),)
    traits = frozenset({"shape"})

    def cost(self, ctx):
        """A copy in another order; backward: the inverse transpose of the signal."""
        works = [E.pointwise(ctx, E.NO_OPS)]
        if ctx.need(0):
            dy, dx = ctx.signal_like(ctx.results[0]), ctx.signal_like(ctx.operands[0])
            works.append(E.copy(dy, dx, "signal", E.BACKWARD))
        return works

    def backward(self, ctx, op, dys):
        perm = op.attrs["perm"]
        inverse = sorted(range(len(perm)), key=perm.__getitem__)
        return [ctx.op("transpose", [dys[0]], {"perm": inverse}, grad_of=op.operands[0])]

    def infer(self, types, attrs):
        x, perm = types[0], attrs["perm"]
        if sorted(perm) != list(range(x.rank)):
            raise TypeCheck(f"perm {perm} is not a permutation of the {x.rank} axes of {x}")
        return [x.with_shape(tuple(x.shape[p] for p in perm))]

    def emit_c(self, cop):
        return K.transpose(cop, cop.attrs["perm"])

    def evaluate(self, args, attrs):
        return [np.ascontiguousarray(np.transpose(args[0], attrs["perm"]))]


@register
class Pad(OpDef):
    """Constant padding: y = x surrounded by ``value``; ``pads`` = [b_0, ..., b_{r-1}, e_0, ..., e_{r-1}]
    (ONNX order: the elements added before and after each axis, all >= 0).

    f32 or integer input (an integer input needs an integral value); a symbolic
    dimension (the batch) cannot be padded."""

    name = "pad"
    operands = ("x",)
    attrs = (Attr("pads", "ints"), Attr("value", "float", 0.0))
    traits = frozenset({"shape"})

    def cost(self, ctx):
        """A copy into the larger result; backward: one slice_axis copy per padded axis."""
        x, y = ctx.operands[0], ctx.results[0]
        works = [E.pointwise(ctx, E.NO_OPS)]
        if ctx.need(0):
            shape = list(y.shape)
            pads = ctx.attrs["pads"]
            for axis, size in enumerate(x.shape):
                if pads[axis] or pads[axis + len(x.shape)]:
                    shape[axis] = size
                    part = ctx.signal_like(x.with_shape(shape))
                    works.append(E.copy(part, part, "signal", E.BACKWARD))
        return works

    def backward(self, ctx, op, dys):
        """The padded border is dropped again: one slice per padded axis."""
        x, pads, g = op.operands[0], op.attrs["pads"], dys[0]
        for axis, size in enumerate(x.type.shape):
            if pads[axis] or pads[axis + x.type.rank]:
                g = ctx.op("slice_axis", [g], {"axis": axis, "start": pads[axis], "stop": pads[axis] + size},
                           grad_of=x)
        return [g]

    def infer(self, types, attrs):
        x, pads = types[0], attrs["pads"]
        C.expect_dtype(x, ("float", "int"), "input")
        if len(pads) != 2 * x.rank or min(pads, default=0) < 0:
            raise TypeCheck(f"pads {pads} must be {2 * x.rank} non-negative numbers for {x}")
        if x.dtype.is_int:
            lo, hi = x.dtype.int_range
            if attrs["value"] != int(attrs["value"]) or not lo <= attrs["value"] <= hi:
                raise TypeCheck(f"pad value {attrs['value']} is not a {x.dtype} value")
        shape = []
        for i, d in enumerate(x.shape):
            extra = pads[i] + pads[i + x.rank]
            if isinstance(d, str) and extra:
                raise TypeCheck(f"cannot pad the symbolic dimension {d} of {x}")
            shape.append(d + extra if extra else d)
        return [x.with_shape(shape)]

    def emit_c(self, cop):
        return K.pad(cop, cop.attrs["pads"], cop.attrs["value"])

    def evaluate(self, args, attrs):
        x, pads = args[0], attrs["pads"]
        r = x.ndim
        widths = [(pads[i], pads[i + r]) for i in range(r)]
        return [np.pad(x, widths, constant_values=np.asarray(attrs["value"]).astype(x.dtype))]
