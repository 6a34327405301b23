"""Shape ops: flatten, reshape, concat, expand, transpose and pad (any element type unless
said), and the gradients of broadcasting and of concat and pad: sum_to and slice_axis."""

from __future__ import annotations

import math

import numpy as np

from boldc.errors import BoldcError
from boldc.ir.types import DType, TensorType, dtype_of_numpy, size_product
from boldc.ir.works import BACKWARD, NO_OPS, add_op, copy, per_element, stream, view
from boldc.ops.common import expect_dtype, expect_static, single_dim
from boldc.ops.grad_ops import GradOp, as_f32, as_f64, expect_signal
from boldc.ops.registry import Attr, OpDef, TypeCheck, register
from boldc.ops.traits import Gradient


@register
class Transpose(OpDef):
    """y = x with its axes permuted: y.shape[i] = x.shape[perm[i]] (ONNX Transpose);
    any element type."""

    name = "transpose"
    operands = ("x",)
    attrs = (Attr("perm", "ints"),)

    def cost(self, ctx):
        """A copy in another order."""
        return per_element(ctx, NO_OPS)

    def backward(self, ctx, op, dys):
        perm = op.attrs["perm"]
        inverse = sorted(range(len(perm)), key=perm.__getitem__)
        return [ctx.op("transpose", [dys[0]], {"perm": inverse}, grad_of=op.operands[0])]

    def fan_in(self, op, fan_in_of):
        return fan_in_of(op.operands[0])  # the same values, in another order

    def infer(self, types, attrs):
        x, perm = types[0], attrs["perm"]
        if sorted(perm) != list(range(x.rank)):
            raise TypeCheck(f"perm {perm} is not a permutation of the {x.rank} axes of {x}")
        return [x.with_shape(tuple(x.shape[p] for p in perm))]

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

    def cost(self, ctx):
        """A copy into the larger result."""
        return per_element(ctx, NO_OPS)

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
        expect_dtype(x, ("float", "int"), "input")
        if len(pads) != 2 * x.rank or min(pads, default=0) < 0:
            raise TypeCheck(f"pads {pads} must be {2 * x.rank} non-negative numbers for {x}")
        if x.dtype.is_int:
            lo, hi = x.dtype.int_range
            value = attrs["value"]
            if not math.isfinite(value) or value != int(value) or not lo <= value <= hi:
                raise TypeCheck(f"pad value {attrs['value']} is not a {x.dtype} value")
        shape = []
        for i, d in enumerate(x.shape):
            extra = pads[i] + pads[i + x.rank]
            if isinstance(d, str) and extra:
                raise TypeCheck(f"cannot pad the symbolic dimension {d} of {x}")
            shape.append(d + extra if extra else d)
        return [x.with_shape(shape)]

    def evaluate(self, args, attrs):
        x, pads = args[0], attrs["pads"]
        r = x.ndim
        widths = [(pads[i], pads[i + r]) for i in range(r)]
        return [np.pad(x, widths, constant_values=np.asarray(attrs["value"]).astype(x.dtype))]


class _RowMajorView(OpDef):
    """A new shape over the same row-major elements (flatten, reshape): costs nothing,
    its signal is the output signal reshaped back, fan-in passes through."""

    def cost(self, ctx):
        """A view: row-major order is kept, no data moves."""
        return view(ctx)

    def backward(self, ctx, op, dys):
        x = op.operands[0]
        return [ctx.op("reshape", [dys[0]], {"shape": list(x.type.shape)}, grad_of=x)]

    def fan_in(self, op, fan_in_of):
        return fan_in_of(op.operands[0])


@register
class Flatten(_RowMajorView):
    """[d0, ..., d{axis-1}, d{axis}, ...] -> [d0·...·d{axis-1}, d{axis}·...] (ONNX Flatten)."""

    name = "flatten"
    operands = ("x",)
    attrs = (Attr("axis", "int", 1),)

    def infer(self, types, attrs):
        x = types[0]
        axis = attrs["axis"] + (x.rank if attrs["axis"] < 0 else 0)
        if not 0 <= axis <= x.rank:
            raise TypeCheck(f"axis {attrs['axis']} out of range for {x}")
        lead = single_dim(x.shape[:axis], "flatten")
        rest = single_dim(x.shape[axis:], "flatten")
        return [x.with_shape((lead, rest))]

    def evaluate(self, args, attrs):
        x = args[0]
        axis = attrs["axis"] + x.ndim if attrs["axis"] < 0 else attrs["axis"]
        return [x.reshape(int(np.prod(x.shape[:axis])), -1)]


@register
class Reshape(_RowMajorView):
    """Reshape to ``shape`` (ints, symbols such as N, at most one -1 inferred);
    element order is row-major, as in ONNX Reshape."""

    name = "reshape"
    operands = ("x",)
    attrs = (Attr("shape", "shape"),)

    def infer(self, types, attrs):
        x = types[0]
        target = attrs["shape"]
        if sum(1 for d in target if d == -1) > 1:
            raise TypeCheck("at most one -1 in shape")
        if any(isinstance(d, int) and d < -1 for d in target):
            raise TypeCheck(f"bad dimension in shape {target}")
        known = [d for d in target if d != -1]
        in_c, in_s = size_product(x.shape)
        k_c, k_s = size_product(known)
        if -1 not in target:
            if (in_c, in_s) != (k_c, k_s):
                raise TypeCheck(f"cannot reshape {x} to {target}: element counts differ")
            return [x.with_shape(tuple(target))]
        rest = list(in_s)
        for s in k_s:
            if s not in rest:
                raise TypeCheck(f"cannot reshape {x} to {target}: symbol {s} not in input")
            rest.remove(s)
        if k_c == 0 or in_c % k_c:
            raise TypeCheck(f"cannot reshape {x} to {target}: element counts do not divide")
        missing = single_dim([in_c // k_c, *rest], "reshape")
        return [x.with_shape(tuple(missing if d == -1 else d for d in target))]

    def evaluate(self, args, attrs):
        # Symbols are resolved by the interpreter before evaluate (see interp.py).
        return [args[0].reshape(attrs["shape"])]


def concat_dtype(dtypes) -> DType:
    """The element type of a concat: the inputs' one type, or, for b1 and integers, the
    widest integer type among them (b1 counting as i8: a bit enters as e(b) = ±1, exact)."""
    kinds = set(dtypes)
    if len(kinds) == 1:
        return kinds.pop()
    if not all(d.is_int or d.is_bool for d in kinds):
        raise TypeCheck(f"inputs of element types {', '.join(sorted(str(d) for d in kinds))} cannot be joined: "
                        "concat takes one element type, or b1 and integers")
    return max((DType.i8 if d.is_bool else d for d in kinds), key=lambda d: d.bits)


@register
class Concat(OpDef):
    """Concatenation of the inputs along ``axis`` (other dims equal). One element type, or
    b1 and integers: then the result is the widest integer type and a b1 input enters as
    e(b) = ±1 (``concat_dtype``)."""

    name = "concat"
    operands = ("inputs*",)
    attrs = (Attr("axis", "int", 1),)
    def cost(self, ctx):
        """A copy of the inputs into the result."""
        return per_element(ctx, NO_OPS)

    def backward(self, ctx, op, dys):
        out, start = [], 0
        for operand, need in zip(op.operands, ctx.needs):
            stop = start + operand.type.shape[op.attrs["axis"]]
            attrs = {"axis": op.attrs["axis"], "start": start, "stop": stop}
            out.append(ctx.op("slice_axis", [dys[0]], attrs, grad_of=operand) if need else None)
            start = stop
        return out

    def fan_in(self, op, fan_in_of):
        """The largest of the inputs' (bits count 1): a threshold of a concat of bits and
        integers takes the integers' scale and passes the bits' signals almost unchanged."""
        fans = [fan_in_of(o) for o in op.operands]
        return None if None in fans else max(fans)

    def infer(self, types, attrs):
        if not types:
            raise TypeCheck("concat needs at least one input")
        first = types[0]
        axis = attrs["axis"] + (first.rank if attrs["axis"] < 0 else 0)
        if not 0 <= axis < first.rank:
            raise TypeCheck(f"axis {attrs['axis']} out of range for {first}")
        dtype = concat_dtype(t.dtype for t in types)
        total = 0
        for t in types:
            if t.rank != first.rank:
                raise TypeCheck(f"inputs {first} and {t} differ in rank")
            for i, (a, b) in enumerate(zip(t.shape, first.shape)):
                if i != axis and a != b:
                    raise TypeCheck(f"inputs {first} and {t} differ outside axis {axis}")
            total += expect_static(t.shape[axis], "concatenated dimension")
        shape = list(first.shape)
        shape[axis] = total
        return [TensorType(dtype, tuple(shape))]

    def evaluate(self, args, attrs):
        out = concat_dtype(dtype_of_numpy(a) for a in args).numpy
        return [np.concatenate([signed_as(a, out) for a in args], axis=attrs["axis"])]


def signed_as(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``a`` as ``dtype``: a bit as e(b) = ±1 when the type is a number."""
    if a.dtype == np.bool_ and dtype != np.bool_:
        return np.where(a, 1, -1).astype(dtype)
    return a.astype(dtype, copy=False)


@register
class Expand(OpDef):
    """y = x broadcast to ``shape`` (numpy's broadcast_to: axes aligned on the right, an axis
    of x of size 1 repeated, axes added in front); any element type. The frontend resolves
    ONNX Expand's two-way broadcast into this target (the batch may be a symbol)."""

    name = "expand"
    operands = ("x",)
    attrs = (Attr("shape", "shape"),)

    def cost(self, ctx):
        """A copy into the larger result (x read once)."""
        return per_element(ctx, NO_OPS)

    def backward(self, ctx, op, dys):
        """dy summed over the broadcast axes (``sum_to``)."""
        x = op.operands[0]
        return [ctx.op("sum_to", [dys[0]], {"shape": list(x.type.shape)}, grad_of=x)]

    def fan_in(self, op, fan_in_of):
        return fan_in_of(op.operands[0])

    def infer(self, types, attrs):
        x, target = types[0], list(attrs["shape"])
        if len(target) < x.rank or any(isinstance(d, int) and d < 1 for d in target):
            raise TypeCheck(f"cannot expand {x} to {target}: the target needs rank >= {x.rank} and sizes >= 1")
        for d, t in zip(x.shape, target[len(target) - x.rank:]):
            if d != 1 and d != t:
                raise TypeCheck(f"cannot expand {x} to {target}: dimension {d} is neither 1 nor {t}")
        return [x.with_shape(target)]

    def evaluate(self, args, attrs):
        # Symbols are resolved by the interpreter before evaluate (see interp.py).
        return [np.ascontiguousarray(np.broadcast_to(args[0], tuple(attrs["shape"])))]


# --- shapes: broadcasts and slices (the gradients of broadcasting, concat and pad) -------


@register
class SumTo(GradOp):
    """Gradient of a broadcast: dy summed over the axes along which an operand of ``shape``
    was broadcast (numpy rules), giving that shape."""

    name = "sum_to"
    operands = ("dy",)
    attrs = (Attr("shape", "shape"),)
    traits = (Gradient(),)

    def cost(self, ctx):
        """The signal summed over the broadcast axes: numel(dy) - numel(result) additions."""
        dy, out = ctx.operands[0], ctx.results[0]
        return [stream("signal", BACKWARD, (dy,), (out,), add_op(out).times(dy.numel - out.numel))]

    def infer(self, types, attrs):
        dy = types[0]
        expect_signal(dy)
        target = tuple(attrs["shape"])
        if len(target) > dy.rank:
            raise TypeCheck(f"cannot sum {dy} to a shape of higher rank {list(target)}")
        for d, t in zip(dy.shape[dy.rank - len(target):], target):
            if t != 1 and t != d:
                raise TypeCheck(f"{dy} was not broadcast from {list(target)}")
        return [TensorType(DType.f32, target)]

    def evaluate(self, args, attrs):
        dy = as_f64(args[0])
        target = tuple(attrs["shape"])
        lead = dy.ndim - len(target)
        axes = tuple(range(lead)) + tuple(lead + i for i, t in enumerate(target) if t == 1 and dy.shape[lead + i] != 1)
        return [as_f32(dy.sum(axis=axes).reshape(target))]


@register
class SliceAxis(OpDef):
    """y = x[..., start:stop, ...] along ``axis``: the gradient of concat for one input and of
    pad, and a forward op too (ONNX Slice, Split, Gather at constant indices: ``x[:, 0]``).

    The sliced dimension may be symbolic (a sequence length ``L``): the result's size
    stop - start is static, and the interpreter checks stop <= the bound size."""

    name = "slice_axis"
    operands = ("x",)
    attrs = (Attr("axis", "int"), Attr("start", "int"), Attr("stop", "int"))

    def cost(self, ctx):
        """A copy of the kept elements."""
        x, y = ctx.operands[0], ctx.results[0]
        return [copy(x.with_shape(y.shape), y, ctx.label, ctx.phase)]

    def backward(self, ctx, op, dys):
        """dx = dy put back at [start, stop) with zeros around it (pad; a symbolic sliced
        dimension cannot be padded, so training needs it bound)."""
        x = op.operands[0]
        axis = op.attrs["axis"] % x.type.rank
        size = x.type.shape[axis]
        if isinstance(size, str):
            raise BoldcError(f"slice_axis %{op.results[0].name}: training through a slice of the symbolic dimension "
                             f"{size} of {x.type} needs a fixed {size}: bind it (boldc.compile(..., dims={{'{size}': "
                             f"SIZE}}), the pass bind-dims) or convert with --input-shape giving it a size")
        pads = [0] * (2 * x.type.rank)
        pads[axis], pads[axis + x.type.rank] = op.attrs["start"], size - op.attrs["stop"]
        return [ctx.op("pad", [dys[0]], {"pads": pads, "value": 0.0}, grad_of=x)]

    def infer(self, types, attrs):
        x = types[0]
        axis = attrs["axis"] % x.rank if -x.rank <= attrs["axis"] < x.rank else None
        if axis is None:
            raise TypeCheck(f"axis {attrs['axis']} out of range for {x}")
        size = x.shape[axis]
        in_range = 0 <= attrs["start"] < attrs["stop"]
        if isinstance(size, int):
            in_range = in_range and attrs["stop"] <= size  # a symbolic size is checked once bound
        if not in_range:
            raise TypeCheck(f"slice [{attrs['start']}, {attrs['stop']}) out of range for size {size}")
        shape = list(x.shape)
        shape[axis] = attrs["stop"] - attrs["start"]
        return [x.with_shape(shape)]

    def evaluate(self, args, attrs):
        x = args[0]
        if attrs["stop"] > x.shape[attrs["axis"]]:
            raise BoldcError(f"slice_axis [{attrs['start']}, {attrs['stop']}) is out of range for an axis of size "
                             f"{x.shape[attrs['axis']]}")
        index = [slice(None)] * x.ndim
        index[attrs["axis"]] = slice(attrs["start"], attrs["stop"])
        return [np.ascontiguousarray(x[tuple(index)])]
