"""Reductions over axes: ``reduce_sum``, ``reduce_mean`` (ONNX ReduceSum / ReduceMean on f32)
and the gradient of the mean, ``reduce_mean_grad``.

Every sum has one fixed order, the one the C backend and the torch engine follow: the
reduced positions in row-major order (the reduced axes' indices, last fastest), summed in
float64 from 0.0 one exactly rounded addition at a time (``ordered_sum``; not numpy's
pairwise sum), then rounded once to f32. The LayerNorm family (layernorm_ops.py) sums rows
the same way.
"""

from __future__ import annotations

import math

import numpy as np

from boldc.ir.types import DType, TensorType
from boldc.ir.works import ARITH, add_op, stream
from boldc.ops.common import expect_dtype
from boldc.ops.float_grad_ops import signal_stream
from boldc.ops.grad_ops import GradOp, as_f32, as_f64, expect_signal
from boldc.ops.registry import Attr, OpDef, TypeCheck, register
from boldc.ops.traits import Gradient

AXES = Attr("axes", "ints", doc="the reduced axes (negative counts from the end), distinct, at least one")
KEEPDIMS = Attr("keepdims", "bool", True, doc="keep each reduced axis with size 1")


def ordered_sum(v: np.ndarray, axes, keepdims: bool = True) -> np.ndarray:
    """Σ of float64 ``v`` over ``axes``, sequentially (module docstring):
    s = (...((0.0 + v_0) + v_1) + ...) + v_{K-1}, v_k the reduced positions in row-major order."""
    axes = sorted({a % v.ndim for a in axes}) if v.ndim else []
    kept = [a for a in range(v.ndim) if a not in axes]
    count = math.prod(v.shape[a] for a in axes)
    rows = np.transpose(v, kept + axes).reshape([v.shape[a] for a in kept] + [count])
    terms = np.concatenate([np.zeros(rows.shape[:-1] + (1,)), rows], axis=-1)  # the 0.0 the sums start from
    total = np.cumsum(terms, axis=-1)[..., -1]  # cumsum adds in order, unlike np.sum (pairwise)
    return total.reshape(reduced_shape(v.shape, axes, keepdims))


def reduced_shape(shape, axes, keepdims: bool) -> tuple:
    """``shape`` with the (normalized) ``axes`` set to 1 (keepdims) or removed."""
    if keepdims:
        return tuple(1 if a in axes else d for a, d in enumerate(shape))
    return tuple(d for a, d in enumerate(shape) if a not in axes)


def normalized_axes(axes, rank: int) -> list[int]:
    """The axes in [0, rank), sorted; TypeCheck for an empty list, an axis out of range or
    one given twice."""
    if not axes:
        raise TypeCheck("axes must name at least one axis")
    if any(not -rank <= a < rank for a in axes):
        raise TypeCheck(f"axes {list(axes)} out of range for rank {rank}")
    out = sorted(a % rank for a in axes)
    if len(set(out)) != len(out):
        raise TypeCheck(f"axes {list(axes)} name an axis twice")
    return out


def reduced_count(shape, axes) -> int:
    """The number of values each result of a reduction over ``axes`` of ``shape`` (sizes
    bound) sums."""
    return math.prod(shape[a] for a in axes)


class _Reduce(OpDef):
    """Shared by reduce_sum and reduce_mean: an f32 x, the result's shape by ``axes`` and
    ``keepdims``."""

    operands = ("x",)
    attrs = (AXES, KEEPDIMS)

    def infer(self, types, attrs):
        x = types[0]
        expect_dtype(x, "float", "input")
        axes = normalized_axes(attrs["axes"], x.rank)
        return [TensorType(DType.f32, reduced_shape(x.shape, axes, attrs["keepdims"]))]


@register
class ReduceSum(_Reduce):
    """y = Σ of x over ``axes`` (ONNX ReduceSum), summed in double in row-major order of the
    reduced positions (``ordered_sum``), rounded once."""

    name = "reduce_sum"

    def cost(self, ctx):
        """numel(x) - numel(y) additions."""
        x, y = ctx.operands[0], ctx.results[0]
        return [stream(ctx.label, ctx.phase, (x,), (y,), add_op(y).times(x.numel - y.numel))]

    def backward(self, ctx, op, dys):
        """dx = dy broadcast back to x's shape: reshaped to keep the reduced axes (when
        ``keepdims`` is false), then ``expand``ed (symbolic dims included)."""
        x = op.operands[0]
        axes = normalized_axes(op.attrs["axes"], x.type.rank)
        dy = dys[0]
        if not op.attrs["keepdims"]:
            dy = ctx.op("reshape", [dy], {"shape": list(reduced_shape(x.type.shape, axes, True))}, grad_of=x)
        return [ctx.op("expand", [dy], {"shape": list(x.type.shape)}, grad_of=x)]

    def evaluate(self, args, attrs):
        x = args[0]
        axes = normalized_axes(attrs["axes"], x.ndim)
        return [as_f32(ordered_sum(as_f64(x), axes, attrs["keepdims"]))]


@register
class ReduceMean(_Reduce):
    """y = (Σ of x over ``axes``) / K, K the number of values summed (ONNX ReduceMean); the
    sum as reduce_sum's, the division in double, rounded once."""

    name = "reduce_mean"

    def cost(self, ctx):
        """numel(x) - numel(y) additions and one division per result."""
        x, y = ctx.operands[0], ctx.results[0]
        return [stream(ctx.label, ctx.phase, (x,), (y,), add_op(y).times(x.numel - y.numel) + ARITH.times(y.numel))]

    def backward(self, ctx, op, dys):
        """dx = dy / K broadcast back to x's shape (``reduce_mean_grad``)."""
        x = op.operands[0]
        attrs = {"axes": list(op.attrs["axes"]), "keepdims": op.attrs["keepdims"], "shape": list(x.type.shape)}
        return [ctx.op("reduce_mean_grad", [dys[0]], attrs, grad_of=x)]

    def evaluate(self, args, attrs):
        x = args[0]
        axes = normalized_axes(attrs["axes"], x.ndim)
        return [as_f32(ordered_sum(as_f64(x), axes, attrs["keepdims"]) / reduced_count(x.shape, axes))]


@register
class ReduceMeanGrad(GradOp):
    """dx = dy / K broadcast to ``shape`` (x's; symbols allowed), K the count reduce_mean
    divided by: each result of the mean over ``axes`` spreads evenly over its K inputs. In
    double, rounded once."""

    name = "reduce_mean_grad"
    operands = ("dy",)
    attrs = (AXES, KEEPDIMS, Attr("shape", "shape", doc="x's shape"))
    traits = (Gradient(),)

    def cost(self, ctx):
        """One division per element of dx."""
        return signal_stream(ctx, ARITH)

    def infer(self, types, attrs):
        dy = types[0]
        expect_signal(dy)
        shape = tuple(attrs["shape"])
        if any(isinstance(d, int) and d < 0 for d in shape):
            raise TypeCheck(f"bad dimension in shape {list(shape)}")
        axes = normalized_axes(attrs["axes"], len(shape))
        want = reduced_shape(shape, axes, attrs["keepdims"])
        if tuple(dy.shape) != want:
            raise TypeCheck(f"signal {dy} is not the mean of {list(shape)} over axes {attrs['axes']} "
                            f"(want [{', '.join(str(d) for d in want)}])")
        return [TensorType(DType.f32, shape)]

    def evaluate(self, args, attrs):
        # Symbols of ``shape`` are resolved by the interpreter before evaluate (see interp.py).
        shape = tuple(attrs["shape"])
        axes = normalized_axes(attrs["axes"], len(shape))
        dy = as_f64(args[0]).reshape(reduced_shape(shape, axes, True))
        return [as_f32(np.broadcast_to(dy / reduced_count(shape, axes), shape))]
