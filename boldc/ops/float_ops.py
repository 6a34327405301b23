"""Float ops: the layers a converted network keeps in f32 and the structural ops.

Float arithmetic ops also accept a b1 input, read through e(.) as +-1 (SPEC §1):
that is how the last float layer consumes Boolean activations. Integer inputs are
read as their values.
"""

from __future__ import annotations

import numpy as np

from boldc.backend import kernels as K
from boldc.energymodel import works as E
from boldc.ir.types import DType, TensorType, dtype_of_numpy, promote_int_sum, size_product
from boldc.ops import common as C
from boldc.ops import grad_ops as G
from boldc.ops.registry import Attr, OpDef, TypeCheck, register

NUMERIC = ("float", "int", "bool")  # operand kinds a float layer accepts


def _float_out(shape) -> TensorType:
    return TensorType(DType.f32, tuple(shape))


@register
class Conv2d(OpDef):
    """Float convolution (zero padding; x read through e(.) when b1):
    y[n,m,h,w] = b[m] + Σ_{c,i,j} W[m,c,i,j] · x[n, g(m)·C/g + c, h·sh + i·dh - pt, w·sw + j·dw - pl]."""

    name = "conv2d"
    operands = ("x", "w", "bias?")
    attrs = (C.STRIDE, C.PAD, C.DILATION, C.GROUPS)
    traits = frozenset({"arithmetic", "conv"})
    boolean_counterpart = "bconv2d"
    mixed_counterpart = "mconv2d"

    def cost(self, ctx):
        return E.layer_cost(ctx)

    def backward(self, ctx, op, dys):
        return G.layer_backward(ctx, op, dys[0])

    def fan_in(self, op, fan_in_of):
        return G.layer_fan_in(op)

    def infer(self, types, attrs):
        x, w = types[0], types[1]
        C.expect_dtype(x, NUMERIC, "input")
        C.expect_dtype(w, "float", "weights")
        n, m, oh, ow = C.conv_infer(x, w, attrs)
        if len(types) > 2:
            C.channel_vector(types[2], m, "bias")
        return [_float_out((n, m, oh, ow))]

    def emit_c(self, cop):
        return K.fconv2d(cop)

    def evaluate(self, args, attrs):
        y = C.conv_nchw(C.signed(args[0]), args[1], attrs)
        if len(args) > 2:
            y += args[2].reshape(1, -1, 1, 1)
        return [y]


@register
class Linear(OpDef):
    """Float fully connected layer: y[..., j] = b[j] + Σ_i x[..., i] · W[j, i]  (W is [out, in])."""

    name = "linear"
    operands = ("x", "w", "bias?")
    traits = frozenset({"arithmetic", "linear"})
    boolean_counterpart = "blinear"
    mixed_counterpart = "mlinear"

    def cost(self, ctx):
        return E.layer_cost(ctx)

    def backward(self, ctx, op, dys):
        return G.layer_backward(ctx, op, dys[0])

    def fan_in(self, op, fan_in_of):
        return G.layer_fan_in(op)

    def infer(self, types, attrs):
        x, w = types[0], types[1]
        C.expect_dtype(x, NUMERIC, "input")
        C.expect_dtype(w, "float", "weights")
        lead, n = C.linear_infer(x, w)
        if len(types) > 2:
            C.channel_vector(types[2], n, "bias")
        return [_float_out(lead + (n,))]

    def emit_c(self, cop):
        return K.flinear(cop)

    def evaluate(self, args, attrs):
        y = (C.signed(args[0]) @ args[1].T).astype(np.float32)
        if len(args) > 2:
            y += args[2]
        return [y]


@register
class BatchNorm(OpDef):
    """Inference batch normalisation over channel axis 1:
    y = scale · (x - mean) / sqrt(var + epsilon) + bias."""

    name = "batchnorm"
    operands = ("x", "scale", "bias", "mean", "var")
    attrs = (Attr("epsilon", "float", 1e-5),)
    traits = frozenset({"normalization"})

    nondiff_operands = ("mean", "var")

    def cost(self, ctx):
        """y = x·k + b' with per-channel k, b': 2 operations per element."""
        return [E.pointwise(ctx, E.ARITH.times(2)), *E.batchnorm_backward(ctx)]

    def backward(self, ctx, op, dys):
        """The statistics are constants (docs/training.md): gradients for x, scale and bias."""
        x, scale, bias, mean, var = op.operands
        eps = {"epsilon": op.attrs["epsilon"]}
        return [ctx.op("batchnorm_grad_x", [dys[0], scale, var], eps, grad_of=x) if ctx.needs[0] else None,
                ctx.op("batchnorm_grad_scale", [dys[0], x, mean, var], eps, grad_of=scale) if ctx.needs[1] else None,
                ctx.op("channel_sum", [dys[0]], {"axis": 1}, grad_of=bias) if ctx.needs[2] else None,
                None, None]

    def fan_in(self, op, fan_in_of):
        return fan_in_of(op.operands[0])

    def infer(self, types, attrs):
        x = types[0]
        C.expect_dtype(x, ("float", "int"), "input")
        if x.rank < 2:
            raise TypeCheck(f"input must have rank >= 2, got {x}")
        for name, t in zip(self.operands[1:], types[1:]):
            C.channel_vector(t, x.shape[1], name)
        return [_float_out(x.shape)]

    def emit_c(self, cop):
        return K.batchnorm(cop, cop.attrs["epsilon"])

    def evaluate(self, args, attrs):
        x, scale, bias, mean, var = args
        shape = (1, -1) + (1,) * (x.ndim - 2)
        k = (scale / np.sqrt(var.astype(np.float64) + attrs["epsilon"])).reshape(shape)
        y = (x.astype(np.float64) - mean.reshape(shape)) * k + bias.reshape(shape)
        return [y.astype(np.float32)]


@register
class Relu(OpDef):
    """y = max(x, 0)."""

    name = "relu"
    operands = ("x",)
    traits = frozenset({"activation", "elementwise"})

    def cost(self, ctx):
        """One comparison per element; backward: relu_grad."""
        x = ctx.operands[0]
        works = [E.pointwise(ctx, E.add_op(x))]
        if ctx.need(0):
            works.append(E.relu_grad(ctx.signal_like(ctx.results[0]), x, ctx.signal_like(x)))
        return works

    def backward(self, ctx, op, dys):
        return [ctx.op("relu_grad", [dys[0], op.operands[0]], grad_of=op.operands[0])]

    def fan_in(self, op, fan_in_of):
        return fan_in_of(op.operands[0])

    def infer(self, types, attrs):
        C.expect_dtype(types[0], ("float", "int"), "input")
        return [types[0]]

    def emit_c(self, cop):
        return K.elementwise(cop, lambda x: f"({x} < 0 ? 0 : {x})")

    def evaluate(self, args, attrs):
        return [np.maximum(args[0], np.zeros((), args[0].dtype))]


_POOL_ATTRS = (C.KERNEL, C.STRIDE, C.PAD, C.DILATION, C.CEIL_MODE)


@register
class MaxPool2d(OpDef):
    """y[n,c,h,w] = max over the window of x (padding never wins)."""

    name = "maxpool2d"
    operands = ("x",)
    attrs = _POOL_ATTRS
    traits = frozenset({"pool"})
    boolean_counterpart = "bmaxpool2d"

    def cost(self, ctx):
        """kh·kw - 1 comparisons per output; backward: maxpool2d_grad."""
        return E.max_pool(ctx, ctx.attrs["kernel"][0] * ctx.attrs["kernel"][1], E.add_op(ctx.operands[0]))

    def backward(self, ctx, op, dys):
        return [G.maxpool_backward(ctx, op, dys[0])]

    def fan_in(self, op, fan_in_of):
        return fan_in_of(op.operands[0])

    def infer(self, types, attrs):
        x = types[0]
        C.expect_dtype(x, ("float", "int"), "input")
        C.expect_rank(x, 4, "input")
        oh, ow = C.window_out_hw(x, attrs["kernel"], attrs, attrs["ceil_mode"])
        return [x.with_shape((x.shape[0], x.shape[1], oh, ow))]

    def emit_c(self, cop):
        return K.pool(cop, "max")

    def evaluate(self, args, attrs):
        return [C.pool_nchw(args[0], attrs, "max")]


@register
class AvgPool2d(OpDef):
    """y[n,c,h,w] = mean over the window of x (b1 read as +-1); the divisor counts
    padded positions only with count_include_pad."""

    name = "avgpool2d"
    operands = ("x",)
    attrs = (C.KERNEL, C.STRIDE, C.PAD, C.CEIL_MODE, Attr("count_include_pad", "bool", False))
    traits = frozenset({"pool"})

    def cost(self, ctx):
        """kh·kw - 1 additions and one division per output; backward: avgpool2d_grad."""
        x, y = ctx.operands[0], ctx.results[0]
        window = ctx.attrs["kernel"][0] * ctx.attrs["kernel"][1]
        works = [E.pointwise(ctx, E.window_ops(window, E.add_op(y)) + E.ARITH)]
        if ctx.need(0):
            works.append(E.avgpool_grad(ctx.signal_like(y), ctx.signal_like(x), window))
        return works

    def backward(self, ctx, op, dys):
        x = op.operands[0]
        attrs = {k: op.attrs[k] for k in ("kernel", "stride", "pad", "ceil_mode", "count_include_pad")}
        return [ctx.op("avgpool2d_grad", [dys[0]], {**attrs, "input_hw": G.spatial(x)}, grad_of=x)]

    def fan_in(self, op, fan_in_of):
        return fan_in_of(op.operands[0])

    def infer(self, types, attrs):
        x = types[0]
        C.expect_dtype(x, NUMERIC, "input")
        C.expect_rank(x, 4, "input")
        oh, ow = C.window_out_hw(x, attrs["kernel"], attrs, attrs["ceil_mode"])
        return [_float_out((x.shape[0], x.shape[1], oh, ow))]

    def emit_c(self, cop):
        return K.pool(cop, "avg")

    def evaluate(self, args, attrs):
        return [C.pool_nchw(C.signed(args[0]), attrs, "avg")]


@register
class GlobalAvgPool(OpDef):
    """y[n,c,0,0] = mean over h, w of x[n,c,h,w] (b1 read as +-1; output [N, C, 1, 1] as in ONNX)."""

    name = "global_avgpool"
    operands = ("x",)
    traits = frozenset({"pool"})

    def cost(self, ctx):
        """H·W - 1 additions and one division per output; backward: global_avgpool_grad."""
        x, y = ctx.operands[0], ctx.results[0]
        works = [E.pointwise(ctx, E.window_ops(x.shape[2] * x.shape[3], E.add_op(y)) + E.ARITH)]
        if ctx.need(0):
            works.append(E.global_avgpool_grad(ctx.signal_like(y), ctx.signal_like(x)))
        return works

    def backward(self, ctx, op, dys):
        x = op.operands[0]
        return [ctx.op("global_avgpool_grad", [dys[0]], {"input_hw": G.spatial(x)}, grad_of=x)]

    def fan_in(self, op, fan_in_of):
        return fan_in_of(op.operands[0])

    def infer(self, types, attrs):
        x = types[0]
        C.expect_dtype(x, NUMERIC, "input")
        C.expect_rank(x, 4, "input")
        return [_float_out((x.shape[0], x.shape[1], 1, 1))]

    def emit_c(self, cop):
        return K.global_pool(cop, "avg")

    def evaluate(self, args, attrs):
        x = C.signed(args[0])
        return [x.astype(np.float64).mean(axis=(2, 3), keepdims=True).astype(np.float32)]


def _broadcast(a: TensorType, b: TensorType) -> tuple:
    """numpy broadcasting of two shapes (symbols broadcast only with themselves or 1)."""
    ra, rb = a.rank, b.rank
    out = []
    for i in range(max(ra, rb)):
        da = a.shape[ra - 1 - i] if i < ra else 1
        db = b.shape[rb - 1 - i] if i < rb else 1
        if da == db or db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        else:
            raise TypeCheck(f"shapes {a} and {b} do not broadcast")
    return tuple(reversed(out))


def add_dtype(a: DType, b: DType) -> DType:
    """f32 if either side is f32; otherwise an exact integer sum, b1 counting as
    e(b) in i8 (SPEC §2: a Boolean operand entering an add contributes e(b))."""
    if a.is_float or b.is_float:
        return DType.f32
    ia = DType.i8 if a.is_bool else a
    ib = DType.i8 if b.is_bool else b
    return promote_int_sum(ia, ib)


@register
class Add(OpDef):
    """y = a + b with numpy broadcasting; b1 operands enter as e(b) = +-1, integer
    sums are exact (result one integer step wider, see ``add_dtype``)."""

    name = "add"
    operands = ("a", "b")
    traits = frozenset({"elementwise", "residual"})

    def cost(self, ctx):
        """One addition per element (in a backward pass: the sum of two gradients);
        backward: the signal itself, summed (sum_to) for a broadcast operand."""
        y = ctx.results[0]
        label = "gradient sum" if ctx.phase == E.BACKWARD else None
        works = [E.pointwise(ctx, E.add_op(y), label)]
        for i, operand in enumerate(ctx.operands):
            if ctx.need(i) and operand.shape != y.shape:
                works.append(E.sum_to(ctx.signal_like(y), ctx.signal_like(operand)))
        return works

    def backward(self, ctx, op, dys):
        """dy goes to both operands, summed over the axes along which one was broadcast."""
        return [G.sum_to_operand(ctx, dys[0], operand) if need else None
                for operand, need in zip(op.operands, ctx.needs)]

    def fan_in(self, op, fan_in_of):
        """Variances add: the sum of the operands' fan-ins (a b1 operand, +-1, counts 1)."""
        fans = [1 if o.type.dtype.is_bool else fan_in_of(o) for o in op.operands]
        known = [f for f in fans if f is not None]
        return sum(known) if known else None

    def infer(self, types, attrs):
        a, b = types
        return [TensorType(add_dtype(a.dtype, b.dtype), _broadcast(a, b))]

    def emit_c(self, cop):
        wide = K.wide_ctype(cop.out.dtype)  # exact integer sum, or one f32 rounding of the double sum
        return K.elementwise(cop, lambda a, b: f"(({wide}){a} + ({wide}){b})")

    def evaluate(self, args, attrs):
        a, b = args
        out = add_dtype(dtype_of_numpy(a), dtype_of_numpy(b))
        wide = np.float64 if out.is_float else np.int64
        res = _as_number(a, wide) + _as_number(b, wide)
        return [res.astype(out.numpy)]


def _as_number(arr: np.ndarray, dtype) -> np.ndarray:
    if arr.dtype == np.bool_:
        return np.where(arr, 1, -1).astype(dtype)
    return arr.astype(dtype)


@register
class Flatten(OpDef):
    """[d0, ..., d{axis-1}, d{axis}, ...] -> [d0·...·d{axis-1}, d{axis}·...] (ONNX Flatten)."""

    name = "flatten"
    operands = ("x",)
    attrs = (Attr("axis", "int", 1),)
    traits = frozenset({"shape"})

    cost = staticmethod(E.view_cost)

    def backward(self, ctx, op, dys):
        x = op.operands[0]
        return [ctx.op("reshape", [dys[0]], {"shape": list(x.type.shape)}, grad_of=x)]

    def fan_in(self, op, fan_in_of):
        return fan_in_of(op.operands[0])

    def infer(self, types, attrs):
        x = types[0]
        axis = attrs["axis"] + (x.rank if attrs["axis"] < 0 else 0)
        if not 0 <= axis <= x.rank:
            raise TypeCheck(f"axis {attrs['axis']} out of range for {x}")
        lead = C.single_dim(x.shape[:axis], "flatten")
        rest = C.single_dim(x.shape[axis:], "flatten")
        return [x.with_shape((lead, rest))]

    def emit_c(self, cop):
        return K.reshape(cop)

    def evaluate(self, args, attrs):
        x = args[0]
        axis = attrs["axis"] + x.ndim if attrs["axis"] < 0 else attrs["axis"]
        return [x.reshape(int(np.prod(x.shape[:axis])), -1)]


@register
class Reshape(OpDef):
    """Reshape to ``shape`` (ints, symbols such as N, at most one -1 inferred);
    element order is row-major, as in ONNX Reshape."""

    name = "reshape"
    operands = ("x",)
    attrs = (Attr("shape", "shape"),)
    traits = frozenset({"shape"})

    cost = staticmethod(E.view_cost)

    def backward(self, ctx, op, dys):
        x = op.operands[0]
        return [ctx.op("reshape", [dys[0]], {"shape": list(x.type.shape)}, grad_of=x)]

    def fan_in(self, op, fan_in_of):
        return fan_in_of(op.operands[0])

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
        missing = C.single_dim([in_c // k_c, *rest], "reshape")
        return [x.with_shape(tuple(missing if d == -1 else d for d in target))]

    def emit_c(self, cop):
        return K.reshape(cop)

    def evaluate(self, args, attrs):
        # Symbols are resolved by the interpreter before evaluate (see interp.py).
        return [args[0].reshape(attrs["shape"])]


@register
class Concat(OpDef):
    """Concatenation of the inputs along ``axis`` (same dtype, other dims equal)."""

    name = "concat"
    operands = ("inputs*",)
    attrs = (Attr("axis", "int", 1),)
    traits = frozenset({"shape"})

    def cost(self, ctx):
        """A copy of the inputs into the result; backward: one slice_axis copy per input."""
        works = [E.pointwise(ctx, E.NO_OPS)]
        for i, operand in enumerate(ctx.operands):
            if ctx.need(i):
                part = ctx.signal_like(operand)
                works.append(E.copy(part, part, "signal", E.BACKWARD))
        return works

    def backward(self, ctx, op, dys):
        out, start = [], 0
        for operand, need in zip(op.operands, ctx.needs):
            stop = start + operand.type.shape[op.attrs["axis"]]
            attrs = {"axis": op.attrs["axis"], "start": start, "stop": stop}
            out.append(ctx.op("slice_axis", [dys[0]], attrs, grad_of=operand) if need else None)
            start = stop
        return out

    def fan_in(self, op, fan_in_of):
        fans = {fan_in_of(o) for o in op.operands}
        return fans.pop() if len(fans) == 1 else None

    def infer(self, types, attrs):
        if not types:
            raise TypeCheck("concat needs at least one input")
        first = types[0]
        axis = attrs["axis"] + (first.rank if attrs["axis"] < 0 else 0)
        if not 0 <= axis < first.rank:
            raise TypeCheck(f"axis {attrs['axis']} out of range for {first}")
        total = 0
        for t in types:
            if t.dtype != first.dtype or t.rank != first.rank:
                raise TypeCheck(f"inputs {first} and {t} differ in element type or rank")
            for i, (a, b) in enumerate(zip(t.shape, first.shape)):
                if i != axis and a != b:
                    raise TypeCheck(f"inputs {first} and {t} differ outside axis {axis}")
            total += C.expect_static(t.shape[axis], "concatenated dimension")
        shape = list(first.shape)
        shape[axis] = total
        return [first.with_shape(shape)]

    def emit_c(self, cop):
        return K.concat(cop, cop.attrs["axis"])

    def evaluate(self, args, attrs):
        return [np.concatenate(args, axis=attrs["axis"])]


@register
class Softmax(OpDef):
    """y = exp(x - max) / Σ exp(x - max) along ``axis``."""

    name = "softmax"
    operands = ("x",)
    attrs = (Attr("axis", "int", -1),)
    traits = frozenset({"elementwise"})

    def cost(self, ctx):
        """Per element: max comparison, subtraction, exp, sum, division (5); backward: softmax_grad."""
        y = ctx.results[0]
        works = [E.pointwise(ctx, E.ARITH.times(5))]
        if ctx.need(0):
            works.append(E.softmax_grad(ctx.signal_like(y), y, ctx.signal_like(ctx.operands[0])))
        return works

    def backward(self, ctx, op, dys):
        return [ctx.op("softmax_grad", [dys[0], op.result], {"axis": op.attrs["axis"]}, grad_of=op.operands[0])]

    def infer(self, types, attrs):
        x = types[0]
        C.expect_dtype(x, "float", "input")
        if not -x.rank <= attrs["axis"] < x.rank:
            raise TypeCheck(f"axis {attrs['axis']} out of range for {x}")
        return [x]

    def emit_c(self, cop):
        return K.softmax(cop, cop.attrs["axis"])

    def evaluate(self, args, attrs):
        x = args[0].astype(np.float64)
        e = np.exp(x - x.max(axis=attrs["axis"], keepdims=True))
        return [(e / e.sum(axis=attrs["axis"], keepdims=True)).astype(np.float32)]

