"""Boolean and mixed ops (docs/method.md §2).

Boolean layers take b1 input and b1 weights and produce an integer pre-activation

    s[k, j] = e(w0[j]) + Σ_i e(L(x[k, i], W[j, i])),   L ∈ {xnor, xor}

which for xnor is ``m - 2·popcount(x XOR W)`` (+ bias) and for xor its negation.
The result is the narrowest integer type holding [-(m+1), m+1] (i8, i16 or i32),
so widths are a function of the shapes, never a choice.

Padding of Boolean convolutions (docs/method.md §2 leaves it to us): ``pad_mode = "false"``
(default) pads with F, so a padded position contributes e(L(F, w)) like any input
bit; ``pad_mode = "neutral"`` makes padded positions contribute 0. The interpreter
and the generated C implement both bit for bit.
"""

from __future__ import annotations

import numpy as np

from boldc.ir.types import DType, TensorType, narrowest_int
from boldc.ir.works import LOGIC, add_op, layer_forward, per_element, window_ops
from boldc.ops.backward_rules import layer_backward, layer_fan_in, maxpool_backward, rescale_factor, threshold_backward
from boldc.ops.common import (
    CEIL_MODE,
    DILATION,
    GROUPS,
    KERNEL,
    NEURON_LOGIC,
    PAD,
    STRIDE,
    channel_vector,
    conv_infer,
    conv_nchw,
    expect_dtype,
    expect_rank,
    linear_infer,
    matmul_in_order,
    pool_nchw,
    signed,
    window_out_hw,
)
from boldc.ops.registry import Attr, OpDef, TypeCheck, register
from boldc.ops.traits import Activation, Binarize, Boolean, Epilogue, FusionHead, Layer, Mixed

PAD_MODE = Attr("pad_mode", "str", "false", choices=("false", "neutral"),
                doc='"false": pad with F bits; "neutral": padded positions contribute 0')


def _logic_sign(attrs) -> float:
    """+1 for xnor, -1 for xor: e(xor(a, b)) = -e(xnor(a, b))."""
    return 1.0 if attrs["logic"] == "xnor" else -1.0


def preact_dtype(fan_in: int, has_bias: bool) -> DType:
    """Integer type of a Boolean layer's pre-activation with fan-in ``fan_in``."""
    bound = fan_in + (1 if has_bias else 0)
    return narrowest_int(-bound, bound)


def _to_int(y: np.ndarray, dtype: DType) -> np.ndarray:
    """Exact float32 integers (|y| < 2^24) to the integer result type."""
    return np.rint(y).astype(dtype.numpy)


@register
class BConv2d(OpDef):
    """Boolean convolution: s[n,m,h,w] = e(w0[m]) + Σ_{c,i,j} e(L(x[n,c,h',w'], W[m,c,i,j]))
    over the receptive field (m = C/g·kh·kw); padded positions are F bits or, with
    pad_mode="neutral", contribute 0."""

    name = "bconv2d"
    operands = ("x", "w", "bias?")
    attrs = (NEURON_LOGIC, STRIDE, PAD, DILATION, GROUPS, PAD_MODE)
    traits = (Layer("conv"), Boolean(), FusionHead())

    def cost(self, ctx):
        """Per multiply-accumulate one XNOR and one integer addition at the output width."""
        return layer_forward(ctx)

    def backward(self, ctx, op, dys):
        """docs/method.md §3: g = transposed convolution of z with e(W), q = correlation of e(x) with z
        (padded positions of x are e(F) = -1 for pad_mode "false", 0 for "neutral")."""
        rescale = rescale_factor(op) if ctx.options["rescale"] else 1.0
        pad_value = -1.0 if op.attrs["pad_mode"] == "false" else 0.0
        return layer_backward(ctx, op, dys[0], _logic_sign(op.attrs), rescale, pad_value, boolean=True)

    def fan_in(self, op, fan_in_of):
        return layer_fan_in(op)

    def infer(self, types, attrs):
        x, w = types[0], types[1]
        expect_dtype(x, "bool", "input")
        expect_dtype(w, "bool", "weights")
        n, m, oh, ow = conv_infer(x, w, attrs)
        if len(types) > 2:
            channel_vector(types[2], m, "bias", "bool")
        fan_in = w.shape[1] * w.shape[2] * w.shape[3]
        return [TensorType(preact_dtype(fan_in, len(types) > 2), (n, m, oh, ow))]

    def evaluate(self, args, attrs):
        x, w = args[0], args[1]
        pad_value = -1.0 if attrs["pad_mode"] == "false" else 0.0
        y = conv_nchw(signed(x), signed(w), attrs, pad_value) * _logic_sign(attrs)
        if len(args) > 2:
            y += signed(args[2]).reshape(1, -1, 1, 1)
        fan_in = w.shape[1] * w.shape[2] * w.shape[3]
        return [_to_int(y, preact_dtype(fan_in, len(args) > 2))]


@register
class BLinear(OpDef):
    """Boolean linear layer: s[k, j] = e(w0[j]) + Σ_i e(L(x[k, i], W[j, i])), W is [n, m]."""

    name = "blinear"
    operands = ("x", "w", "bias?")
    attrs = (NEURON_LOGIC,)
    traits = (Layer("linear"), Boolean(), FusionHead())

    def cost(self, ctx):
        """Per multiply-accumulate one XNOR and one integer addition at the output width."""
        return layer_forward(ctx)

    def backward(self, ctx, op, dys):
        """docs/method.md §3: g = ±z·e(W), q = ±zᵀ·e(x), q0 = Σ_k z (± is - for xor)."""
        rescale = rescale_factor(op) if ctx.options["rescale"] else 1.0
        return layer_backward(ctx, op, dys[0], _logic_sign(op.attrs), rescale, boolean=True)

    def fan_in(self, op, fan_in_of):
        return layer_fan_in(op)

    def infer(self, types, attrs):
        x, w = types[0], types[1]
        expect_dtype(x, "bool", "input")
        expect_dtype(w, "bool", "weights")
        lead, n = linear_infer(x, w)
        if len(types) > 2:
            channel_vector(types[2], n, "bias", "bool")
        return [TensorType(preact_dtype(w.shape[1], len(types) > 2), lead + (n,))]

    def evaluate(self, args, attrs):
        x, w = args[0], args[1]
        y = (signed(x) @ signed(w).T) * _logic_sign(attrs)
        if len(args) > 2:
            y += signed(args[2])
        return [_to_int(y, preact_dtype(w.shape[1], len(args) > 2))]


@register
class MConv2d(OpDef):
    """Mixed convolution (real input, b1 weights): y[n,m,h,w] = b[m] + ±Σ e(W[m,c,i,j]) · x[n,c,h',w']
    (+ for xnor, - for xor; zero padding, as the input is real)."""

    name = "mconv2d"
    operands = ("x", "w", "bias?")
    attrs = (NEURON_LOGIC, STRIDE, PAD, DILATION, GROUPS)
    traits = (Layer("conv"), Mixed(), FusionHead())

    def cost(self, ctx):
        """Per multiply-accumulate one conditional negation and one addition."""
        return layer_forward(ctx)

    def backward(self, ctx, op, dys):
        return layer_backward(ctx, op, dys[0], _logic_sign(op.attrs))

    def fan_in(self, op, fan_in_of):
        return layer_fan_in(op)

    def infer(self, types, attrs):
        x, w = types[0], types[1]
        expect_dtype(x, ("float", "int"), "input")
        expect_dtype(w, "bool", "weights")
        n, m, oh, ow = conv_infer(x, w, attrs)
        if len(types) > 2:
            channel_vector(types[2], m, "bias")
        return [TensorType(DType.f32, (n, m, oh, ow))]

    def evaluate(self, args, attrs):
        y = conv_nchw(signed(args[0]), signed(args[1]), attrs) * np.float32(_logic_sign(attrs))
        if len(args) > 2:
            y += args[2].reshape(1, -1, 1, 1)
        return [y]


@register
class MLinear(OpDef):
    """Mixed linear layer (real input, b1 weights): y[k, j] = b[j] + ±Σ_i e(W[j, i]) · x[k, i],
    summed in double in i order (``common.matmul_in_order``), rounded once to f32."""

    name = "mlinear"
    operands = ("x", "w", "bias?")
    attrs = (NEURON_LOGIC,)
    traits = (Layer("linear"), Mixed(), FusionHead())

    def cost(self, ctx):
        """Per multiply-accumulate one conditional negation and one addition."""
        return layer_forward(ctx)

    def backward(self, ctx, op, dys):
        return layer_backward(ctx, op, dys[0], _logic_sign(op.attrs))

    def fan_in(self, op, fan_in_of):
        return layer_fan_in(op)

    def infer(self, types, attrs):
        x, w = types[0], types[1]
        expect_dtype(x, ("float", "int"), "input")
        expect_dtype(w, "bool", "weights")
        lead, n = linear_infer(x, w)
        if len(types) > 2:
            channel_vector(types[2], n, "bias")
        return [TensorType(DType.f32, lead + (n,))]

    def evaluate(self, args, attrs):
        x = signed(args[0])
        lead = x.shape[:-1]
        acc = matmul_in_order(x.reshape(-1, x.shape[-1]), signed(args[1]).T) * _logic_sign(attrs)
        if len(args) > 2:
            acc = acc + args[2].astype(np.float64)
        return [acc.astype(np.float32).reshape(lead + (args[1].shape[0],))]


@register
class Threshold(OpDef):
    """Threshold activation: y = T if x >= τ else F.

    τ is the scalar attribute ``tau``, or a per-channel tensor operand (channel axis 1,
    integer or f32). The optional per-channel b1 operand ``ge`` selects the comparison:
    T keeps ``x >= τ_c``, F uses ``x <= τ_c`` (a folded BatchNorm with negative scale)."""

    name = "threshold"
    operands = ("x", "tau?", "ge?")
    attrs = (Attr("tau", "number", 0, doc="scalar threshold when no tau operand is given"),)
    traits = (Activation(), Binarize(float_form="relu"), Epilogue())

    nondiff_operands = ("tau", "ge")

    def cost(self, ctx):
        """One comparison x >= τ per element (at x's width)."""
        x = ctx.operands[0]
        return per_element(ctx, add_op(x))

    def backward(self, ctx, op, dys):
        """docs/method.md §3: δLoss/δs = δLoss/δy · tanh'(α (s - τ)) (or the box / Bi-Real variant)."""
        grad = threshold_backward(ctx, op, dys[0], op.operands[1:], op.attrs["tau"])
        return [grad] + [None] * (len(op.operands) - 1)

    def infer(self, types, attrs):
        x = types[0]
        expect_dtype(x, ("float", "int"), "input")
        if len(types) > 1:
            if attrs["tau"] != 0:
                raise TypeCheck("give tau either as attribute or as operand, not both")
            if x.rank < 2:
                raise TypeCheck(f"per-channel tau needs an input of rank >= 2, got {x}")
            channel_vector(types[1], x.shape[1], "tau", ("float", "int"))
        if len(types) > 2:
            channel_vector(types[2], x.shape[1], "ge", "bool")
        return [x.with_dtype(DType.b1)]

    def evaluate(self, args, attrs):
        x = args[0]
        if len(args) == 1:
            return [x >= attrs["tau"]]
        shape = (1, -1) + (1,) * (x.ndim - 2)
        tau = args[1].reshape(shape)
        ge = x >= tau
        if len(args) == 2:
            return [ge]
        return [np.where(args[2].reshape(shape), ge, x <= tau)]


@register
class BMaxPool2d(OpDef):
    """Boolean max-pool: y = OR of the bits in the window (max of +-1 values); padding is F."""

    name = "bmaxpool2d"
    operands = ("x",)
    attrs = (KERNEL, STRIDE, PAD, DILATION, CEIL_MODE)
    traits = (Boolean(),)

    def cost(self, ctx):
        """An OR of kh·kw bits per output (kh·kw - 1 logic operations)."""
        kh, kw = ctx.attrs["kernel"]
        return per_element(ctx, window_ops(kh * kw, LOGIC))

    def backward(self, ctx, op, dys):
        return [maxpool_backward(ctx, op, dys[0])]

    def infer(self, types, attrs):
        x = types[0]
        expect_dtype(x, "bool", "input")
        expect_rank(x, 4, "input")
        oh, ow = window_out_hw(x, attrs["kernel"], attrs, attrs["ceil_mode"])
        return [x.with_shape((x.shape[0], x.shape[1], oh, ow))]

    def evaluate(self, args, attrs):
        return [pool_nchw(args[0], attrs, "max")]
