"""Boolean and mixed ops (SPEC §2).

Boolean layers take b1 input and b1 weights and produce an integer pre-activation

    s[k, j] = e(w0[j]) + Σ_i e(L(x[k, i], W[j, i])),   L ∈ {xnor, xor}

which for xnor is ``m - 2·popcount(x XOR W)`` (+ bias) and for xor its negation.
The result is the narrowest integer type holding [-(m+1), m+1] (i8, i16 or i32),
so widths are a function of the shapes, never a choice.

Padding of Boolean convolutions (SPEC §2 leaves it to us): ``pad_mode = "false"``
(default) pads with F, so a padded position contributes e(L(F, w)) like any input
bit; ``pad_mode = "neutral"`` makes padded positions contribute 0. The interpreter
and the generated C implement both bit for bit.
"""

from __future__ import annotations

import numpy as np

from boldc.backend import kernels as K
from boldc.energymodel import works as E
from boldc.ir.types import DType, TensorType, narrowest_int
from boldc.ops import common as C
from boldc.ops import grad_ops as G
from boldc.ops.registry import Attr, OpDef, TypeCheck, register

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
    attrs = (C.LOGIC, C.STRIDE, C.PAD, C.DILATION, C.GROUPS, PAD_MODE)
    traits = frozenset({"arithmetic", "conv", "boolean"})

    def cost(self, ctx):
        """Per multiply-accumulate one XNOR and one integer addition at the output width."""
        return E.layer_cost(ctx)

    def backward(self, ctx, op, dys):
        """SPEC §3: g = transposed convolution of z with e(W), q = correlation of e(x) with z
        (padded positions of x are e(F) = -1 for pad_mode "false", 0 for "neutral")."""
        rescale = G.rescale_factor(op) if ctx.options["rescale"] else 1.0
        pad_value = -1.0 if op.attrs["pad_mode"] == "false" else 0.0
        return G.layer_backward(ctx, op, dys[0], _logic_sign(op.attrs), rescale, pad_value)

    def fan_in(self, op, fan_in_of):
        return G.layer_fan_in(op)

    def infer(self, types, attrs):
        x, w = types[0], types[1]
        C.expect_dtype(x, "bool", "input")
        C.expect_dtype(w, "bool", "weights")
        n, m, oh, ow = C.conv_infer(x, w, attrs)
        if len(types) > 2:
            C.channel_vector(types[2], m, "bias", "bool")
        fan_in = w.shape[1] * w.shape[2] * w.shape[3]
        return [TensorType(preact_dtype(fan_in, len(types) > 2), (n, m, oh, ow))]

    def emit_c(self, cop):
        return K.bconv2d(cop)

    def evaluate(self, args, attrs):
        x, w = args[0], args[1]
        pad_value = -1.0 if attrs["pad_mode"] == "false" else 0.0
        y = C.conv_nchw(C.signed(x), C.signed(w), attrs, pad_value) * _logic_sign(attrs)
        if len(args) > 2:
            y += C.signed(args[2]).reshape(1, -1, 1, 1)
        fan_in = w.shape[1] * w.shape[2] * w.shape[3]
        return [_to_int(y, preact_dtype(fan_in, len(args) > 2))]


@register
class BLinear(OpDef):
    """Boolean linear layer: s[k, j] = e(w0[j]) + Σ_i e(L(x[k, i], W[j, i])), W is [n, m]."""

    name = "blinear"
    operands = ("x", "w", "bias?")
    attrs = (C.LOGIC,)
    traits = frozenset({"arithmetic", "linear", "boolean"})

    def cost(self, ctx):
        """Per multiply-accumulate one XNOR and one integer addition at the output width."""
        return E.layer_cost(ctx)

    def backward(self, ctx, op, dys):
        """SPEC §3: g = ±z·e(W), q = ±zᵀ·e(x), q0 = Σ_k z (± is - for xor)."""
        rescale = G.rescale_factor(op) if ctx.options["rescale"] else 1.0
        return G.layer_backward(ctx, op, dys[0], _logic_sign(op.attrs), rescale)

    def fan_in(self, op, fan_in_of):
        return G.layer_fan_in(op)

    def infer(self, types, attrs):
        x, w = types[0], types[1]
        C.expect_dtype(x, "bool", "input")
        C.expect_dtype(w, "bool", "weights")
        lead, n = C.linear_infer(x, w)
        if len(types) > 2:
            C.channel_vector(types[2], n, "bias", "bool")
        return [TensorType(preact_dtype(w.shape[1], len(types) > 2), lead + (n,))]

    def emit_c(self, cop):
        return K.blinear(cop)

    def evaluate(self, args, attrs):
        x, w = args[0], args[1]
        y = (C.signed(x) @ C.signed(w).T) * _logic_sign(attrs)
        if len(args) > 2:
            y += C.signed(args[2])
        return [_to_int(y, preact_dtype(w.shape[1], len(args) > 2))]


@register
class MConv2d(OpDef):
    """Mixed convolution (real input, b1 weights): y[n,m,h,w] = b[m] + ±Σ e(W[m,c,i,j]) · x[n,c,h',w']
    (+ for xnor, - for xor; zero padding, as the input is real)."""

    name = "mconv2d"
    operands = ("x", "w", "bias?")
    attrs = (C.LOGIC, C.STRIDE, C.PAD, C.DILATION, C.GROUPS)
    traits = frozenset({"arithmetic", "conv", "mixed"})

    def cost(self, ctx):
        """Per multiply-accumulate one conditional negation and one addition."""
        return E.layer_cost(ctx)

    def backward(self, ctx, op, dys):
        return G.layer_backward(ctx, op, dys[0], _logic_sign(op.attrs))

    def fan_in(self, op, fan_in_of):
        return G.layer_fan_in(op)

    def infer(self, types, attrs):
        x, w = types[0], types[1]
        C.expect_dtype(x, ("float", "int"), "input")
        C.expect_dtype(w, "bool", "weights")
        n, m, oh, ow = C.conv_infer(x, w, attrs)
        if len(types) > 2:
            C.channel_vector(types[2], m, "bias")
        return [TensorType(DType.f32, (n, m, oh, ow))]

    def emit_c(self, cop):
        return K.fconv2d(cop, sign=int(_logic_sign(cop.attrs)))

    def evaluate(self, args, attrs):
        y = C.conv_nchw(C.signed(args[0]), C.signed(args[1]), attrs) * np.float32(_logic_sign(attrs))
        if len(args) > 2:
            y += args[2].reshape(1, -1, 1, 1)
        return [y]


@register
class MLinear(OpDef):
    """Mixed linear layer (real input, b1 weights): y[k, j] = b[j] + ±Σ_i e(W[j, i]) · x[k, i]."""

    name = "mlinear"
    operands = ("x", "w", "bias?")
    attrs = (C.LOGIC,)
    traits = frozenset({"arithmetic", "linear", "mixed"})

    def cost(self, ctx):
        """Per multiply-accumulate one conditional negation and one addition."""
        return E.layer_cost(ctx)

    def backward(self, ctx, op, dys):
        return G.layer_backward(ctx, op, dys[0], _logic_sign(op.attrs))

    def fan_in(self, op, fan_in_of):
        return G.layer_fan_in(op)

    def infer(self, types, attrs):
        x, w = types[0], types[1]
        C.expect_dtype(x, ("float", "int"), "input")
        C.expect_dtype(w, "bool", "weights")
        lead, n = C.linear_infer(x, w)
        if len(types) > 2:
            C.channel_vector(types[2], n, "bias")
        return [TensorType(DType.f32, lead + (n,))]

    def emit_c(self, cop):
        return K.flinear(cop, sign=int(_logic_sign(cop.attrs)))

    def evaluate(self, args, attrs):
        y = (C.signed(args[0]) @ C.signed(args[1]).T * np.float32(_logic_sign(attrs))).astype(np.float32)
        if len(args) > 2:
            y += args[2]
        return [y]


@register
class Threshold(OpDef):
    """Threshold activation: y = T if x >= τ else F.

    τ is the scalar attribute ``tau``, or a per-channel tensor operand (channel axis 1,
    integer or f32). The optional per-channel b1 operand ``ge`` selects the comparison:
    T keeps ``x >= τ_c``, F uses ``x <= τ_c`` (a folded BatchNorm with negative scale)."""

    name = "threshold"
    operands = ("x", "tau?", "ge?")
    attrs = (Attr("tau", "number", 0, doc="scalar threshold when no tau operand is given"),)
    traits = frozenset({"activation", "binarize"})

    nondiff_operands = ("tau", "ge")

    def cost(self, ctx):
        """One comparison x >= τ per element (at x's width); backward: threshold_grad."""
        x = ctx.operands[0]
        works = [E.pointwise(ctx, E.add_op(x))]
        if ctx.need(0):
            works.append(E.threshold_grad(ctx.signal_like(ctx.results[0]), x, ctx.operands[1:], ctx.signal_like(x)))
        return works

    def backward(self, ctx, op, dys):
        """SPEC §3: δLoss/δs = δLoss/δy · tanh'(α (s - τ)) (or the box / Bi-Real variant)."""
        grad = G.threshold_backward(ctx, op, dys[0], op.operands[1:], op.attrs["tau"])
        return [grad] + [None] * (len(op.operands) - 1)

    def infer(self, types, attrs):
        x = types[0]
        C.expect_dtype(x, ("float", "int"), "input")
        if len(types) > 1:
            if attrs["tau"] != 0:
                raise TypeCheck("give tau either as attribute or as operand, not both")
            if x.rank < 2:
                raise TypeCheck(f"per-channel tau needs an input of rank >= 2, got {x}")
            C.channel_vector(types[1], x.shape[1], "tau", ("float", "int"))
        if len(types) > 2:
            C.channel_vector(types[2], x.shape[1], "ge", "bool")
        return [x.with_dtype(DType.b1)]

    def emit_c(self, cop):
        return K.threshold(cop)

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
    attrs = (C.KERNEL, C.STRIDE, C.PAD, C.DILATION, C.CEIL_MODE)
    traits = frozenset({"pool", "boolean"})

    def cost(self, ctx):
        """An OR of kh·kw bits per output (kh·kw - 1 logic operations); backward: maxpool2d_grad."""
        return E.max_pool(ctx, ctx.attrs["kernel"][0] * ctx.attrs["kernel"][1], E.LOGIC)

    def backward(self, ctx, op, dys):
        return [G.maxpool_backward(ctx, op, dys[0])]

    def infer(self, types, attrs):
        x = types[0]
        C.expect_dtype(x, "bool", "input")
        C.expect_rank(x, 4, "input")
        oh, ow = C.window_out_hw(x, attrs["kernel"], attrs, attrs["ceil_mode"])
        return [x.with_shape((x.shape[0], x.shape[1], oh, ow))]

    def emit_c(self, cop):
        return K.pool(cop, "or")

    def evaluate(self, args, attrs):
        return [C.pool_nchw(args[0], attrs, "max")]
