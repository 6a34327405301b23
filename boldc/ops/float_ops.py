"""Float ops: the layers a converted network keeps in f32 and the structural ops.

Float arithmetic ops also accept a b1 input, read through e(.) as +-1 (SPEC §1):
that is how the last float layer consumes Boolean activations. Integer inputs are
read as their values.
"""

from __future__ import annotations

import numpy as np

from boldc.ir.types import DType, TensorType, dtype_of_numpy, promote_int_sum, size_product
from boldc.ops import common as C
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

    def infer(self, types, attrs):
        x, w = types[0], types[1]
        C.expect_dtype(x, NUMERIC, "input")
        C.expect_dtype(w, "float", "weights")
        n, m, oh, ow = C.conv_infer(x, w, attrs)
        if len(types) > 2:
            C.channel_vector(types[2], m, "bias")
        return [_float_out((n, m, oh, ow))]

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

    def infer(self, types, attrs):
        x, w = types[0], types[1]
        C.expect_dtype(x, NUMERIC, "input")
        C.expect_dtype(w, "float", "weights")
        lead, n = C.linear_infer(x, w)
        if len(types) > 2:
            C.channel_vector(types[2], n, "bias")
        return [_float_out(lead + (n,))]

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

    def infer(self, types, attrs):
        x = types[0]
        C.expect_dtype(x, ("float", "int"), "input")
        if x.rank < 2:
            raise TypeCheck(f"input must have rank >= 2, got {x}")
        for name, t in zip(self.operands[1:], types[1:]):
            C.channel_vector(t, x.shape[1], name)
        return [_float_out(x.shape)]

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

    def infer(self, types, attrs):
        C.expect_dtype(types[0], ("float", "int"), "input")
        return [types[0]]

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

    def infer(self, types, attrs):
        x = types[0]
        C.expect_dtype(x, ("float", "int"), "input")
        C.expect_rank(x, 4, "input")
        oh, ow = C.window_out_hw(x, attrs["kernel"], attrs, attrs["ceil_mode"])
        return [x.with_shape((x.shape[0], x.shape[1], oh, ow))]

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

    def infer(self, types, attrs):
        x = types[0]
        C.expect_dtype(x, NUMERIC, "input")
        C.expect_rank(x, 4, "input")
        oh, ow = C.window_out_hw(x, attrs["kernel"], attrs, attrs["ceil_mode"])
        return [_float_out((x.shape[0], x.shape[1], oh, ow))]

    def evaluate(self, args, attrs):
        return [C.pool_nchw(C.signed(args[0]), attrs, "avg")]


@register
class GlobalAvgPool(OpDef):
    """y[n,c,0,0] = mean over h, w of x[n,c,h,w] (b1 read as +-1; output [N, C, 1, 1] as in ONNX)."""

    name = "global_avgpool"
    operands = ("x",)
    traits = frozenset({"pool"})

    def infer(self, types, attrs):
        x = types[0]
        C.expect_dtype(x, NUMERIC, "input")
        C.expect_rank(x, 4, "input")
        return [_float_out((x.shape[0], x.shape[1], 1, 1))]

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

    def infer(self, types, attrs):
        a, b = types
        return [TensorType(add_dtype(a.dtype, b.dtype), _broadcast(a, b))]

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

    def infer(self, types, attrs):
        x = types[0]
        axis = attrs["axis"] + (x.rank if attrs["axis"] < 0 else 0)
        if not 0 <= axis <= x.rank:
            raise TypeCheck(f"axis {attrs['axis']} out of range for {x}")
        lead = C.single_dim(x.shape[:axis], "flatten")
        rest = C.single_dim(x.shape[axis:], "flatten")
        return [x.with_shape((lead, rest))]

    def evaluate(self, args, attrs):
        x = args[0]
        axis = attrs["axis"] % (x.ndim + 1) if attrs["axis"] < 0 else attrs["axis"]
        return [x.reshape(int(np.prod(x.shape[:axis])), -1)]


@register
class Reshape(OpDef):
    """Reshape to ``shape`` (ints, symbols such as N, at most one -1 inferred);
    element order is row-major, as in ONNX Reshape."""

    name = "reshape"
    operands = ("x",)
    attrs = (Attr("shape", "shape"),)
    traits = frozenset({"shape"})

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

    def evaluate(self, args, attrs):
        return [np.concatenate(args, axis=attrs["axis"])]


@register
class Softmax(OpDef):
    """y = exp(x - max) / Σ exp(x - max) along ``axis``."""

    name = "softmax"
    operands = ("x",)
    attrs = (Attr("axis", "int", -1),)
    traits = frozenset({"elementwise"})

    def infer(self, types, attrs):
        x = types[0]
        C.expect_dtype(x, "float", "input")
        if not -x.rank <= attrs["axis"] < x.rank:
            raise TypeCheck(f"axis {attrs['axis']} out of range for {x}")
        return [x]

    def evaluate(self, args, attrs):
        x = args[0].astype(np.float64)
        e = np.exp(x - x.max(axis=attrs["axis"], keepdims=True))
        return [(e / e.sum(axis=attrs["axis"], keepdims=True)).astype(np.float32)]

