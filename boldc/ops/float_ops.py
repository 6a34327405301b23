"""Float ops: the layers a converted network keeps in f32 and the structural ops.

Float arithmetic ops also accept a b1 input, read through e(.) as +-1 (docs/method.md §1):
that is how the last float layer consumes Boolean activations. Integer inputs are
read as their values.
"""

from __future__ import annotations

import numpy as np

from boldc.ir.types import DType, TensorType, dtype_of_numpy, promote_int_sum
from boldc.ir.works import (
    ARITH,
    BACKWARD,
    add_op,
    layer_forward,
    per_element,
    pointwise,
    transposed_forward,
    window_ops,
)
from boldc.ops.backward_rules import layer_backward, layer_fan_in, maxpool_backward, spatial, sum_to_operand
from boldc.ops.common import (
    CEIL_MODE,
    DILATION,
    GROUPS,
    KERNEL,
    PAD,
    STRIDE,
    channel_vector,
    conv_infer,
    conv_nchw,
    conv_transpose_infer,
    conv_transpose_out_hw,
    expect_dtype,
    expect_rank,
    linear_infer,
    matmul_in_order,
    pool_nchw,
    signed,
    transposed_conv_nchw,
    window_out_hw,
)
from boldc.ops.registry import Attr, OpDef, TypeCheck, register
from boldc.ops.traits import (
    Activation,
    BooleanCounterpart,
    Epilogue,
    FloatOnlyLayer,
    FusionHead,
    Layer,
    MixedCounterpart,
)

NUMERIC = ("float", "int", "bool")  # operand kinds a float layer accepts


def _float_out(shape) -> TensorType:
    return TensorType(DType.f32, tuple(shape))


def _conv_layer_out(types, attrs, inputs, geometry) -> list[TensorType]:
    """The f32 result of a float convolution layer (x of the kinds ``inputs``, f32 weights, an
    optional f32 bias per output channel) whose shape ``geometry(x, w, attrs)`` checks and gives."""
    x, w = types[0], types[1]
    expect_dtype(x, inputs, "input")
    expect_dtype(w, "float", "weights")
    n, m, oh, ow = geometry(x, w, attrs)
    if len(types) > 2:
        channel_vector(types[2], m, "bias")
    return [_float_out((n, m, oh, ow))]


@register
class Conv2d(OpDef):
    """Float convolution (zero padding; x read through e(.) when b1):
    y[n,m,h,w] = b[m] + Σ_{c,i,j} W[m,c,i,j] · x[n, g(m)·C/g + c, h·sh + i·dh - pt, w·sw + j·dw - pl]."""

    name = "conv2d"
    operands = ("x", "w", "bias?")
    attrs = (STRIDE, PAD, DILATION, GROUPS)
    traits = (Layer("conv"), BooleanCounterpart("bconv2d"), MixedCounterpart("mconv2d"), FusionHead())

    def cost(self, ctx):
        """A convolution: two arithmetic operations per multiply-accumulate."""
        return layer_forward(ctx)

    def backward(self, ctx, op, dys):
        return layer_backward(ctx, op, dys[0])

    def fan_in(self, op, fan_in_of):
        return layer_fan_in(op)

    def infer(self, types, attrs):
        return _conv_layer_out(types, attrs, NUMERIC, conv_infer)

    def evaluate(self, args, attrs):
        y = conv_nchw(signed(args[0]), args[1], attrs)
        if len(args) > 2:
            y += args[2].reshape(1, -1, 1, 1)
        return [y]


OUTPUT_PADDING = Attr("output_padding", "ints", [0, 0], length=2,
                      doc="[h, w]: rows and columns added at the bottom and right, each below its stride")


@register
class ConvTranspose2d(OpDef):
    """Float transposed convolution (ONNX ConvTranspose; f32 x [N, C, H, W], W [C, M/g, kh, kw]):
    y[n, g(c)·M/g + m', h·sh + i·dh - pt, w·sw + j·dw - pl] += x[n, c, h, w] · W[c, m', i, j], plus b[m];
    the output is [N, M, (H-1)·sh - pt - pb + dh·(kh-1) + 1 + oph, (W-1)·sw - pl - pr + dw·(kw-1) + 1 + opw]
    (what lands in the padding is dropped). Summed in double, the bias added, rounded once to f32.
    It has no Boolean form (``FloatOnlyLayer``)."""

    name = "conv_transpose2d"
    operands = ("x", "w", "bias?")
    attrs = (STRIDE, PAD, OUTPUT_PADDING, DILATION, GROUPS)
    traits = (FloatOnlyLayer(), FusionHead())

    def cost(self, ctx):
        """The loop nest of a convolution's input signal: two arithmetic operations per
        multiply-accumulate, one addition per output for the bias."""
        return transposed_forward(ctx)

    def backward(self, ctx, op, dys):
        """dx = conv2d(dy, W) (the convolution the transposed one is the adjoint of, same
        geometry), dW = conv2d_grad_w(x, dy) (x in the role of the signal, dy in that of the
        input), db = Σ dy per channel."""
        x, w = op.operands[0], op.operands[1]
        geometry = {k: op.attrs[k] for k in ("stride", "pad", "dilation", "groups")}
        grads = [None] * len(op.operands)
        if ctx.needs[0]:
            grads[0] = ctx.op("conv2d", [dys[0], w], geometry, grad_of=x)
        if ctx.needs[1]:
            grads[1] = ctx.op("conv2d_grad_w", [x, dys[0]], {**geometry, "kernel": list(w.type.shape[2:])}, grad_of=w)
        if len(op.operands) > 2 and ctx.needs[2]:
            grads[2] = ctx.op("channel_sum", [dys[0]], {"axis": 1}, grad_of=op.operands[2])
        return grads

    def fan_in(self, op, fan_in_of):
        """The most products one output sums: C/g inputs times ⌈kh/sh⌉·⌈kw/sw⌉ taps."""
        c, _, kh, kw = op.operands[1].type.shape
        sh, sw = op.attrs["stride"]
        return c // op.attrs["groups"] * -(-kh // sh) * -(-kw // sw)

    def infer(self, types, attrs):
        return _conv_layer_out(types, attrs, "float", conv_transpose_infer)

    def evaluate(self, args, attrs):
        x, w = args[0].astype(np.float64), args[1].astype(np.float64)
        y = transposed_conv_nchw(x, w, attrs, conv_transpose_out_hw(x.shape, w.shape, attrs))
        if len(args) > 2:
            y = y + args[2].astype(np.float64).reshape(1, -1, 1, 1)
        return [y.astype(np.float32)]


@register
class Linear(OpDef):
    """Float fully connected layer: y[..., j] = b[j] + Σ_i x[..., i] · W[j, i]  (W is [out, in]),
    summed in double in i order, then the bias added, rounded once to f32
    (``common.matmul_in_order``: the same bits as the C)."""

    name = "linear"
    operands = ("x", "w", "bias?")
    traits = (Layer("linear"), BooleanCounterpart("blinear"), MixedCounterpart("mlinear"), FusionHead())

    def cost(self, ctx):
        """A 1x1 convolution: two arithmetic operations per multiply-accumulate."""
        return layer_forward(ctx)

    def backward(self, ctx, op, dys):
        return layer_backward(ctx, op, dys[0])

    def fan_in(self, op, fan_in_of):
        return layer_fan_in(op)

    def infer(self, types, attrs):
        x, w = types[0], types[1]
        expect_dtype(x, NUMERIC, "input")
        expect_dtype(w, "float", "weights")
        lead, n = linear_infer(x, w)
        if len(types) > 2:
            channel_vector(types[2], n, "bias")
        return [_float_out(lead + (n,))]

    def evaluate(self, args, attrs):
        x = signed(args[0])
        lead = x.shape[:-1]
        acc = matmul_in_order(x.reshape(-1, x.shape[-1]), args[1].T)
        if len(args) > 2:
            acc = acc + args[2].astype(np.float64)
        return [acc.astype(np.float32).reshape(lead + (args[1].shape[0],))]


@register
class Relu(OpDef):
    """y = max(x, 0)."""

    name = "relu"
    operands = ("x",)
    traits = (Activation(), Epilogue())

    def cost(self, ctx):
        """One comparison per element."""
        return per_element(ctx, add_op(ctx.operands[0]))

    def backward(self, ctx, op, dys):
        return [ctx.op("relu_grad", [dys[0], op.operands[0]], grad_of=op.operands[0])]

    def fan_in(self, op, fan_in_of):
        return fan_in_of(op.operands[0])

    def infer(self, types, attrs):
        expect_dtype(types[0], ("float", "int"), "input")
        return [types[0]]

    def evaluate(self, args, attrs):
        return [np.maximum(args[0], np.zeros((), args[0].dtype))]


_POOL_ATTRS = (KERNEL, STRIDE, PAD, DILATION, CEIL_MODE)


@register
class MaxPool2d(OpDef):
    """y[n,c,h,w] = max over the window of x (padding never wins)."""

    name = "maxpool2d"
    operands = ("x",)
    attrs = _POOL_ATTRS
    traits = (BooleanCounterpart("bmaxpool2d"),)

    def cost(self, ctx):
        """kh·kw - 1 comparisons per output."""
        kh, kw = ctx.attrs["kernel"]
        return per_element(ctx, window_ops(kh * kw, add_op(ctx.operands[0])))

    def backward(self, ctx, op, dys):
        return [maxpool_backward(ctx, op, dys[0])]

    def fan_in(self, op, fan_in_of):
        return fan_in_of(op.operands[0])

    def infer(self, types, attrs):
        x = types[0]
        expect_dtype(x, ("float", "int"), "input")
        expect_rank(x, 4, "input")
        oh, ow = window_out_hw(x, attrs["kernel"], attrs, attrs["ceil_mode"])
        return [x.with_shape((x.shape[0], x.shape[1], oh, ow))]

    def evaluate(self, args, attrs):
        return [pool_nchw(args[0], attrs, "max")]


@register
class AvgPool2d(OpDef):
    """y[n,c,h,w] = mean over the window of x (b1 read as +-1); the divisor counts
    padded positions only with count_include_pad."""

    name = "avgpool2d"
    operands = ("x",)
    attrs = (KERNEL, STRIDE, PAD, CEIL_MODE, Attr("count_include_pad", "bool", False))
    def cost(self, ctx):
        """kh·kw - 1 additions and one division per output."""
        kh, kw = ctx.attrs["kernel"]
        return per_element(ctx, window_ops(kh * kw, add_op(ctx.results[0])) + ARITH)

    def backward(self, ctx, op, dys):
        x = op.operands[0]
        attrs = {k: op.attrs[k] for k in ("kernel", "stride", "pad", "ceil_mode", "count_include_pad")}
        return [ctx.op("avgpool2d_grad", [dys[0]], {**attrs, "input_hw": spatial(x)}, grad_of=x)]

    def fan_in(self, op, fan_in_of):
        return fan_in_of(op.operands[0])

    def infer(self, types, attrs):
        x = types[0]
        expect_dtype(x, NUMERIC, "input")
        expect_rank(x, 4, "input")
        oh, ow = window_out_hw(x, attrs["kernel"], attrs, attrs["ceil_mode"])
        return [_float_out((x.shape[0], x.shape[1], oh, ow))]

    def evaluate(self, args, attrs):
        return [pool_nchw(signed(args[0]), attrs, "avg")]


@register
class GlobalAvgPool(OpDef):
    """y[n,c,0,0] = mean over h, w of x[n,c,h,w] (b1 read as +-1; output [N, C, 1, 1] as in ONNX)."""

    name = "global_avgpool"
    operands = ("x",)
    def cost(self, ctx):
        """H·W - 1 additions and one division per output."""
        x = ctx.operands[0]
        return per_element(ctx, window_ops(x.shape[2] * x.shape[3], add_op(ctx.results[0])) + ARITH)

    def backward(self, ctx, op, dys):
        x = op.operands[0]
        return [ctx.op("global_avgpool_grad", [dys[0]], {"input_hw": spatial(x)}, grad_of=x)]

    def fan_in(self, op, fan_in_of):
        return fan_in_of(op.operands[0])

    def infer(self, types, attrs):
        x = types[0]
        expect_dtype(x, NUMERIC, "input")
        expect_rank(x, 4, "input")
        return [_float_out((x.shape[0], x.shape[1], 1, 1))]

    def evaluate(self, args, attrs):
        x = signed(args[0])
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
    e(b) in i8 (docs/method.md §2: a Boolean operand entering an add contributes e(b))."""
    if a.is_float or b.is_float:
        return DType.f32
    ia = DType.i8 if a.is_bool else a
    ib = DType.i8 if b.is_bool else b
    return promote_int_sum(ia, ib)


class AddTyped(OpDef):
    """Shared by ``add`` and ``sub``: y = combine(a, b) with numpy broadcasting, of the element
    type ``add_dtype`` gives; computed in float64 (an f32 result, rounded once) or int64 (an
    exact integer one), b1 operands entering as e(b) = +-1."""

    operands = ("a", "b")
    combine = staticmethod(np.add)

    def infer(self, types, attrs):
        a, b = types
        return [TensorType(add_dtype(a.dtype, b.dtype), _broadcast(a, b))]

    def evaluate(self, args, attrs):
        a, b = args
        out = add_dtype(dtype_of_numpy(a), dtype_of_numpy(b))
        wide = np.float64 if out.is_float else np.int64
        return [self.combine(_as_number(a, wide), _as_number(b, wide)).astype(out.numpy)]


@register
class Add(AddTyped):
    """y = a + b with numpy broadcasting; b1 operands enter as e(b) = +-1, integer
    sums are exact (result one integer step wider, see ``add_dtype``)."""

    name = "add"
    traits = (Epilogue(chain=("a", "b")),)
    def cost(self, ctx):
        """One addition per element (in a backward pass: the sum of two gradients)."""
        label = "gradient sum" if ctx.phase == BACKWARD else None
        return [pointwise(ctx, add_op(ctx.results[0]), label)]

    def backward(self, ctx, op, dys):
        """dy goes to both operands, summed over the axes along which one was broadcast."""
        return [sum_to_operand(ctx, dys[0], operand) if need else None
                for operand, need in zip(op.operands, ctx.needs)]

    def fan_in(self, op, fan_in_of):
        """Variances add: the sum of the operands' fan-ins (a b1 operand, +-1, counts 1)."""
        fans = [1 if o.type.dtype.is_bool else fan_in_of(o) for o in op.operands]
        known = [f for f in fans if f is not None]
        return sum(known) if known else None


def _as_number(arr: np.ndarray, dtype) -> np.ndarray:
    if arr.dtype == np.bool_:
        return np.where(arr, 1, -1).astype(dtype)
    return arr.astype(dtype)


@register
class Softmax(OpDef):
    """y = exp(x - max) / Σ exp(x - max) along ``axis``."""

    name = "softmax"
    operands = ("x",)
    attrs = (Attr("axis", "int", -1),)
    def cost(self, ctx):
        """Per element: max comparison, subtraction, exp, sum, division (5)."""
        return per_element(ctx, ARITH.times(5))

    def backward(self, ctx, op, dys):
        return [ctx.op("softmax_grad", [dys[0], op.result], {"axis": op.attrs["axis"]}, grad_of=op.operands[0])]

    def infer(self, types, attrs):
        x = types[0]
        expect_dtype(x, "float", "input")
        if not -x.rank <= attrs["axis"] < x.rank:
            raise TypeCheck(f"axis {attrs['axis']} out of range for {x}")
        return [x]

    def evaluate(self, args, attrs):
        x = args[0].astype(np.float64)
        e = np.exp(x - x.max(axis=attrs["axis"], keepdims=True))
        return [(e / e.sum(axis=attrs["axis"], keepdims=True)).astype(np.float32)]
