"""Batch normalization: the inference form (running statistics), the training form (batch
statistics, running statistics updated), and their gradients (docs/training.md,
"BatchNorm"). Channels are axis 1; values are computed in float64 and rounded once to f32.

The per-channel sums of the training form (Σx, Σ(x - μ)², Σdy, Σdy·x̂) have one fixed order,
the one runtime/bd_norm.c follows: for channel c, the n·inner values (inner = the product of
the axes after 1: H·W, L, or 1) in the order k = sample·inner + position (sample-major,
positions row-major), summed in float64 from 0.0 one exactly rounded addition at a time,
((0 + v_0) + v_1) + ... (``channel_sums``). Not numpy's sum, whose pairwise order depends on
numpy's version and on the memory layout.
"""

from __future__ import annotations

import numpy as np

from boldc.errors import InterpretError
from boldc.ir.types import DType, TensorType
from boldc.ir.works import ARITH, BACKWARD, add_op, per_element, stream
from boldc.ops.common import channel_vector, expect_dtype
from boldc.ops.float_grad_ops import signal_stream
from boldc.ops.grad_ops import GradOp, as_f32, as_f64, expect_same_shape, expect_signal
from boldc.ops.registry import Attr, OpDef, TypeCheck, register
from boldc.ops.traits import Epilogue, Gradient, Normalization, PerChannelAffine, SideEffect, TrainingForm

EPSILON = Attr("epsilon", "float", 1e-5)
MOMENTUM = Attr("momentum", "float", 0.1, doc="weight of the batch statistics in the running ones (PyTorch's)")


def _channels(x: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(shape that broadcasts a per-channel vector over x, the axes that are not channels)."""
    return (1, -1) + (1,) * (x.ndim - 2), tuple(a for a in range(x.ndim) if a != 1)


def channel_sums(v: np.ndarray) -> np.ndarray:
    """Σ of v (float64) per channel over every axis but 1, sequentially (see the module's
    docstring): s_c = (...((0.0 + v_c[0]) + v_c[1]) + ...) + v_c[n·inner - 1]."""
    rows = np.moveaxis(v, 1, 0).reshape(v.shape[1], -1)  # [c][sample·inner + position]
    terms = np.zeros((rows.shape[0], rows.shape[1] + 1))  # the 0.0 the sums start from first
    terms[:, 1:] = rows
    return np.cumsum(terms, axis=1)[:, -1]  # cumsum adds in order, unlike np.sum (pairwise)


def batch_statistics(x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per-channel mean μ = Σx / n, biased variance σ² = Σ(x - μ)² / n (two passes) and
    1/sqrt(σ² + eps) of x over every axis but 1 (float64, ``channel_sums``), and the count n
    they are taken over."""
    shape, _ = _channels(x)
    x = x.astype(np.float64)
    n = x.size // x.shape[1]
    mean = channel_sums(x) / n
    var = channel_sums((x - mean.reshape(shape)) ** 2) / n
    return mean, var, 1.0 / np.sqrt(var + eps), n


def _normalized(x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray, int]:
    """x̂ = (x - μ)·(1/sqrt(σ² + eps)) with x's batch statistics, 1/sqrt(σ² + eps) and n."""
    mean, _, invstd, n = batch_statistics(x, eps)
    shape, _ = _channels(x)
    return (x.astype(np.float64) - mean.reshape(shape)) * invstd.reshape(shape), invstd, n


def _check_bn(types: list[TensorType], params: tuple[str, ...]) -> TensorType:
    x = types[0]
    expect_dtype(x, ("float", "int"), "input")
    if x.rank < 2:
        raise TypeCheck(f"input must have rank >= 2, got {x}")
    for name, t in zip(params, types[1:]):
        channel_vector(t, x.shape[1], name)
    return x


class _Normalize(OpDef):
    """Shared by the two forms of BatchNorm: operands (x, four per-channel vectors), an f32
    result of x's shape, the fan-in of x passed through."""

    def fan_in(self, op, fan_in_of):
        return fan_in_of(op.operands[0])

    def infer(self, types, attrs):
        return [_check_bn(types, self.operands[1:]).with_dtype(DType.f32)]


@register
class BatchNorm(_Normalize):
    """Inference batch normalisation over channel axis 1:
    y = scale · (x - mean) / sqrt(var + epsilon) + bias (mean, var: the running statistics).
    A training step uses ``batchnorm_train`` in its place (batch statistics)."""

    name = "batchnorm"
    operands = ("x", "scale", "bias", "mean", "var")
    attrs = (EPSILON, MOMENTUM)
    traits = (Normalization(), PerChannelAffine(("scale", "bias", "mean", "var")), TrainingForm("batchnorm_train"),
              Epilogue())

    nondiff_operands = ("mean", "var")

    def cost(self, ctx):
        """y = x·k + b' with per-channel k, b': 2 operations per element."""
        return per_element(ctx, ARITH.times(2))

    def backward(self, ctx, op, dys):
        """With the statistics constant (a train step built with the inference form, e.g. by
        hand): gradients for x, scale and bias."""
        x, scale, bias, mean, var = op.operands
        eps = {"epsilon": op.attrs["epsilon"]}
        return [ctx.op("batchnorm_grad_x", [dys[0], scale, var], eps, grad_of=x) if ctx.needs[0] else None,
                ctx.op("batchnorm_grad_scale", [dys[0], x, mean, var], eps, grad_of=scale) if ctx.needs[1] else None,
                ctx.op("channel_sum", [dys[0]], {"axis": 1}, grad_of=bias) if ctx.needs[2] else None,
                None, None]

    def evaluate(self, args, attrs):
        x, scale, bias, mean, var = args
        shape, _ = _channels(x)
        k = (scale / np.sqrt(var.astype(np.float64) + attrs["epsilon"])).reshape(shape)
        y = (x.astype(np.float64) - mean.reshape(shape)) * k + bias.reshape(shape)
        return [y.astype(np.float32)]


@register
class BatchNormTrain(_Normalize):
    """Batch normalisation with batch statistics (PyTorch's train mode), channel axis 1:

        μ, σ² = Σx / n, Σ(x - μ)² / n over every axis but 1 (n values per channel, the
                sums sequential: ``channel_sums``)
        y = (x - μ) / sqrt(σ² + epsilon) · scale + bias
        running_mean <- (1 - momentum) · running_mean + momentum · μ
        running_var  <- (1 - momentum) · running_var + momentum · σ² · n / (n - 1)

    The running statistics are params it updates (committed when the step returns)."""

    name = "batchnorm_train"
    operands = ("x", "scale", "bias", "running_mean", "running_var")
    updates = ("running_mean", "running_var")
    attrs = (EPSILON, MOMENTUM)
    traits = (Normalization(), SideEffect())

    nondiff_operands = ("running_mean", "running_var")

    def cost(self, ctx):
        """Per element: the mean (1), the variance (3), the normalisation (3)."""
        return per_element(ctx, ARITH.times(7))

    def backward(self, ctx, op, dys):
        """Through the batch statistics: dx, dscale = Σ dy·x̂, dbias = Σ dy."""
        x, scale, bias = op.operands[:3]
        eps = {"epsilon": op.attrs["epsilon"]}
        return [ctx.op("batchnorm_train_grad_x", [dys[0], x, scale], eps, grad_of=x) if ctx.needs[0] else None,
                ctx.op("batchnorm_train_grad_scale", [dys[0], x], eps, grad_of=scale) if ctx.needs[1] else None,
                ctx.op("channel_sum", [dys[0]], {"axis": 1}, grad_of=bias) if ctx.needs[2] else None,
                None, None]

    def evaluate(self, args, attrs):
        x, scale, bias, running_mean, running_var = args
        mean, var, invstd, n = batch_statistics(x, attrs["epsilon"])
        if n < 2:
            raise InterpretError(f"batchnorm_train needs more than one value per channel, got {n} (a larger batch)")
        shape, _ = _channels(x)
        y = (x.astype(np.float64) - mean.reshape(shape)) * invstd.reshape(shape) * scale.reshape(shape)
        y = y + bias.reshape(shape)
        m = attrs["momentum"]
        new_mean = (1.0 - m) * running_mean.astype(np.float64) + m * mean
        new_var = (1.0 - m) * running_var.astype(np.float64) + m * var * (n / (n - 1))
        return [y.astype(np.float32), new_mean.astype(np.float32), new_var.astype(np.float32)]


# --- gradients ------------------------------------------------------------------------------------


def _bn_factor(scale, var, eps, ndim) -> np.ndarray:
    shape = (1, -1) + (1,) * (ndim - 2)
    return (as_f64(scale) / np.sqrt(as_f64(var) + eps)).reshape(shape)


@register
class BatchNormGradX(GradOp):
    """Inference BatchNorm backward (statistics are constants): dx = dy · scale / sqrt(var + ε)."""

    name = "batchnorm_grad_x"
    operands = ("dy", "scale", "var")
    attrs = (EPSILON,)
    traits = (Gradient(),)

    def cost(self, ctx):
        """δx = δy · scale / sqrt(var + ε) (a per-channel factor): one multiplication per element."""
        return signal_stream(ctx, ARITH)

    def infer(self, types, attrs):
        dy = types[0]
        expect_signal(dy)
        for name, t in zip(("scale", "var"), types[1:]):
            channel_vector(t, dy.shape[1], name)
        return [dy]

    def evaluate(self, args, attrs):
        dy, scale, var = args
        return [as_f32(as_f64(dy) * _bn_factor(scale, var, attrs["epsilon"], dy.ndim))]


@register
class BatchNormGradScale(GradOp):
    """dscale[c] = Σ over all axes but 1 of dy · (x - mean[c]) / sqrt(var[c] + ε)."""

    name = "batchnorm_grad_scale"
    operands = ("dy", "x", "mean", "var")
    attrs = (EPSILON,)
    traits = (Gradient(),)

    def cost(self, ctx):
        """Per element a subtraction, two multiplications and an accumulation."""
        dy, x, mean, var = ctx.operands
        out = ctx.results[0]
        per = add_op(x) + ARITH.times(2) + add_op(out)
        return [stream("bn scale signal", BACKWARD, (dy, x, mean, var), (out,), per.times(dy.numel))]

    def infer(self, types, attrs):
        dy, x = types[0], types[1]
        expect_signal(dy)
        expect_same_shape(dy, x, "signal and input")
        for name, t in zip(("mean", "var"), types[2:]):
            channel_vector(t, dy.shape[1], name)
        return [TensorType(DType.f32, (dy.shape[1],))]

    def evaluate(self, args, attrs):
        dy, x, mean, var = (as_f64(a) for a in args)
        shape, axes = _channels(x)
        xhat = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + attrs["epsilon"])
        return [as_f32((dy * xhat).sum(axis=axes))]


@register
class BatchNormTrainGradX(GradOp):
    """Backward of ``batchnorm_train`` to its input, through the batch statistics
    (μ, σ² and n from x as in the forward, x̂ = (x - μ)/sqrt(σ² + ε)):

        dx = scale / sqrt(σ² + ε) / n · (n·dy - Σ dy - x̂ · Σ dy·x̂)

    (sums per channel, sequential: ``channel_sums``)."""

    name = "batchnorm_train_grad_x"
    operands = ("dy", "x", "scale")
    attrs = (EPSILON,)
    traits = (Gradient(),)

    def cost(self, ctx):
        """Per element: x̂ again (2), the two sums (3), the combination (4)."""
        return signal_stream(ctx, ARITH.times(9))

    def infer(self, types, attrs):
        dy, x, scale = types
        expect_signal(dy)
        expect_same_shape(dy, x, "signal and input")
        channel_vector(scale, dy.shape[1], "scale")
        return [dy]

    def evaluate(self, args, attrs):
        dy, x, scale = args
        xhat, invstd, n = _normalized(x, attrs["epsilon"])
        shape, _ = _channels(x)
        dy = as_f64(dy)
        sum_dy = channel_sums(dy).reshape(shape)
        sum_dy_xhat = channel_sums(dy * xhat).reshape(shape)
        k = (as_f64(scale) * invstd / n).reshape(shape)
        return [as_f32(k * (n * dy - sum_dy - xhat * sum_dy_xhat))]


@register
class BatchNormTrainGradScale(GradOp):
    """dscale[c] = Σ over all axes but 1 of dy · x̂ (sequential: ``channel_sums``),
    x̂ = (x - μ)/sqrt(σ² + ε) with the batch statistics of x."""

    name = "batchnorm_train_grad_scale"
    operands = ("dy", "x")
    attrs = (EPSILON,)
    traits = (Gradient(),)

    def cost(self, ctx):
        """Per element: x̂ (2), a multiplication and an accumulation."""
        out = ctx.results[0]
        return [stream("bn scale signal", BACKWARD, ctx.operands, ctx.results,
                       (ARITH.times(3) + add_op(out)).times(ctx.operands[0].numel))]

    def infer(self, types, attrs):
        dy, x = types
        expect_signal(dy)
        expect_same_shape(dy, x, "signal and input")
        return [TensorType(DType.f32, (dy.shape[1],))]

    def evaluate(self, args, attrs):
        dy, x = args
        xhat, _, _ = _normalized(x, attrs["epsilon"])
        return [as_f32(channel_sums(as_f64(dy) * xhat))]
