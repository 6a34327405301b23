"""Layer normalization (ONNX LayerNormalization) and its gradients.

x is normalized over its trailing dims ``axis``..rank-1 (a "row" of K values; the leading
dims, which may be symbols such as N and L, index the rows): the mean and the biased
variance of each row, then a per-position scale and bias of shape x.shape[axis:].
Everything is computed in float64 and rounded once to f32; each row sum (and the sum over
rows of the scale's gradient) is sequential in row-major order, from 0.0
(``reduce_ops.ordered_sum``), the order the C backend and the torch engine follow.

Unlike BatchNorm, LayerNorm carries no ``Normalization`` trait: lowering keeps it as it is
(a transformer's LayerNorms stay float).
"""

from __future__ import annotations

import math

import numpy as np

from boldc.ir.types import DType, TensorType
from boldc.ir.works import ARITH, BACKWARD, add_op, per_element, stream
from boldc.ops.common import expect_dtype
from boldc.ops.float_grad_ops import signal_stream
from boldc.ops.grad_ops import GradOp, as_f32, as_f64, expect_same_shape, expect_signal
from boldc.ops.reduce_ops import ordered_sum
from boldc.ops.registry import Attr, OpDef, TypeCheck, register
from boldc.ops.traits import Gradient, RealFeatures

AXIS = Attr("axis", "int", -1, doc="the first normalized dim: x is normalized over dims axis..rank-1")
EPSILON = Attr("epsilon", "float", 1e-5)


def norm_axis(x: TensorType, axis: int, what: str = "input") -> int:
    """``axis`` in [0, rank); TypeCheck when out of range."""
    if not -x.rank <= axis < x.rank:
        raise TypeCheck(f"axis {axis} out of range for {what} {x}")
    return axis % x.rank


def _check_row_param(t: TensorType, x: TensorType, axis: int, what: str) -> None:
    """``scale`` or ``bias``: f32 of shape x.shape[axis:]."""
    expect_dtype(t, "float", what)
    want = tuple(x.shape[axis:])
    if tuple(t.shape) != want:
        raise TypeCheck(f"{what} must have shape [{', '.join(str(d) for d in want)}] (the dims of the input {x} "
                        f"from axis {axis}), got {t}")


def normalized(x: np.ndarray, axis: int, eps: float) -> tuple[np.ndarray, np.ndarray, int]:
    """(x̂, 1/sqrt(σ² + ε) per row (dims kept), K) of x in float64:
    μ = Σx / K, σ² = Σ(x - μ)² / K over each row (``ordered_sum``), x̂ = (x - μ) · 1/sqrt(σ² + ε)."""
    x = as_f64(x)
    axes = list(range(axis, x.ndim))
    k = math.prod(x.shape[axis:])
    mean = ordered_sum(x, axes) / k
    d = x - mean
    invstd = 1.0 / np.sqrt(ordered_sum(d * d, axes) / k + eps)
    return d * invstd, invstd, k


@register
class LayerNorm(OpDef):
    """y = (x - μ) / sqrt(σ² + ε) · scale + bias, μ and the biased σ² over the dims
    axis..rank-1 of x (ONNX LayerNormalization); scale and the optional bias have the shape
    x.shape[axis:]. Computed as x̂ · scale + bias with x̂ = (x - μ) · (1/sqrt(σ² + ε))
    (``normalized``), in double, rounded once."""

    name = "layernorm"
    operands = ("x", "scale", "bias?")
    traits = (RealFeatures(),)
    attrs = (AXIS, EPSILON)

    def cost(self, ctx):
        """Per element: the mean's addition (1), the variance's subtraction, square and
        addition (3), the normalization's subtraction and multiplication (2), the scale (1)
        and the bias (1, when given); the per-row divisions and square root are not counted."""
        return per_element(ctx, ARITH.times(8 if len(ctx.operands) > 2 else 7))

    def fan_in(self, op, fan_in_of):
        """1: the normalized output has unit variance, the spread of a pre-activation with
        fan-in m = 1 (docs/method.md §3), so a threshold after a LayerNorm gets α = π/(2√3)."""
        return 1

    def backward(self, ctx, op, dys):
        """dx through the row statistics (``layernorm_grad_x``), dscale = Σ over the rows of
        dy · x̂ (``layernorm_grad_scale``), dbias = Σ over the rows of dy (``sum_to``)."""
        x, scale = op.operands[0], op.operands[1]
        attrs = {"axis": op.attrs["axis"], "epsilon": op.attrs["epsilon"]}
        grads = [None] * len(op.operands)
        if ctx.needs[0]:
            grads[0] = ctx.op("layernorm_grad_x", [dys[0], x, scale], attrs, grad_of=x)
        if ctx.needs[1]:
            grads[1] = ctx.op("layernorm_grad_scale", [dys[0], x], attrs, grad_of=scale)
        if len(op.operands) > 2 and ctx.needs[2]:
            bias = op.operands[2]
            grads[2] = ctx.op("sum_to", [dys[0]], {"shape": list(bias.type.shape)}, grad_of=bias)
        return grads

    def infer(self, types, attrs):
        x = types[0]
        expect_dtype(x, "float", "input")
        axis = norm_axis(x, attrs["axis"])
        _check_row_param(types[1], x, axis, "scale")
        if len(types) > 2:
            _check_row_param(types[2], x, axis, "bias")
        return [x]

    def evaluate(self, args, attrs):
        x, scale = args[0], args[1]
        xhat, _, _ = normalized(x, attrs["axis"] % x.ndim, attrs["epsilon"])
        y = xhat * as_f64(scale)
        if len(args) > 2:
            y = y + as_f64(args[2])
        return [as_f32(y)]


@register
class LayerNormGradX(GradOp):
    """Backward of ``layernorm`` to its input, through the row statistics (x̂, 1/sqrt(σ² + ε)
    and K from x as in the forward; g = dy · scale):

        dx = (1/sqrt(σ² + ε) / K) · ((K·g - Σg) - x̂ · Σ g·x̂)

    (sums over each row, sequential: ``ordered_sum``)."""

    name = "layernorm_grad_x"
    operands = ("dy", "x", "scale")
    attrs = (AXIS, EPSILON)
    traits = (Gradient(),)

    def cost(self, ctx):
        """Per element: x̂ again (6), g (1), the two sums (3), the combination (5)."""
        return signal_stream(ctx, ARITH.times(15))

    def infer(self, types, attrs):
        dy, x, scale = types
        expect_signal(dy)
        expect_dtype(x, "float", "input")
        expect_same_shape(dy, x, "signal and input")
        _check_row_param(scale, x, norm_axis(x, attrs["axis"]), "scale")
        return [dy]

    def evaluate(self, args, attrs):
        dy, x, scale = args
        axis = attrs["axis"] % x.ndim
        xhat, invstd, k = normalized(x, axis, attrs["epsilon"])
        axes = list(range(axis, x.ndim))
        g = as_f64(dy) * as_f64(scale)
        sum_g = ordered_sum(g, axes)
        sum_gx = ordered_sum(g * xhat, axes)
        return [as_f32((invstd / k) * ((k * g - sum_g) - xhat * sum_gx))]


@register
class LayerNormGradScale(GradOp):
    """dscale = Σ over the rows (the dims before ``axis``) of dy · x̂, shaped x.shape[axis:]
    (x̂ as in the forward; the rows summed sequentially in row-major order: ``ordered_sum``)."""

    name = "layernorm_grad_scale"
    operands = ("dy", "x")
    attrs = (AXIS, EPSILON)
    traits = (Gradient(),)

    def cost(self, ctx):
        """Per element: x̂ (6), a multiplication and an accumulation."""
        dy, out = ctx.operands[0], ctx.results[0]
        return [stream("layernorm scale signal", BACKWARD, ctx.operands, ctx.results,
                       (ARITH.times(7) + add_op(out)).times(dy.numel))]

    def infer(self, types, attrs):
        dy, x = types
        expect_signal(dy)
        expect_dtype(x, "float", "input")
        expect_same_shape(dy, x, "signal and input")
        return [TensorType(DType.f32, x.shape[norm_axis(x, attrs["axis"]):])]

    def evaluate(self, args, attrs):
        dy, x = args
        axis = attrs["axis"] % x.ndim
        xhat, _, _ = normalized(x, axis, attrs["epsilon"])
        return [as_f32(ordered_sum(as_f64(dy) * xhat, list(range(axis)), keepdims=False))]
