"""Implementations of the transformer's float ops (boldc/ops/elementwise_ops.py,
activation_ops.py, float_grad_ops.py, layernorm_ops.py, reduce_ops.py), each mirroring the op's
``evaluate``: the same double operations in the same order, rounded once to float32.

With ``exact``, every sum is sequential in row-major order of the summed positions, as
``reduce_ops.ordered_sum`` (a cumulative sum in float64, which adds in order), so LayerNorm and
the reductions give the interpreter's bits; without it they are float32 sums in torch's order.
"""

from __future__ import annotations

import math

import torch

from boldc.ops.activation_ops import GELU_CUBIC, GELU_CUBIC3, INV_SQRT_2PI, SQRT1_2, SQRT_2_OVER_PI
from boldc.ops.float_grad_ops import TWO_OVER_SQRT_PI
from boldc.ops.reduce_ops import normalized_axes, reduced_shape
from boldc.torch.numerics import F64, exp_fixed, tanh_derivative
from boldc.torch.ops.common import F32, float_dtype
from boldc.torch.ops.grads import _sum_to
from boldc.torch.registry import implements


def ordered_sum(call, t: torch.Tensor, axes, keepdim: bool = True) -> torch.Tensor:
    """Σ of ``t`` over ``axes``: with ``exact`` sequentially from 0.0 in row-major order of the
    reduced positions (``reduce_ops.ordered_sum``), else torch's sum."""
    axes = sorted(a % t.ndim for a in axes) if t.ndim else []
    shape = reduced_shape(tuple(t.shape), axes, keepdim)
    if not axes:
        return t.clone().reshape(shape)
    if not call.rt.exact:
        return t.sum(dim=axes, keepdim=keepdim)
    kept = [a for a in range(t.ndim) if a not in axes]
    rows = t.permute(*kept, *axes).reshape(*[t.shape[a] for a in kept], math.prod(t.shape[a] for a in axes))
    terms = torch.cat([rows.new_zeros(rows.shape[:-1] + (1,)), rows], dim=-1)
    return terms.cumsum(dim=-1)[..., -1].reshape(shape)


# --- elementwise ------------------------------------------------------------------------------------


@implements("sub")
def sub(call, a, b):
    """a - b (b1 as ±1): exact for integers, one rounding for floats."""
    return (a - b,)


@implements("div")
def div(call, a, b):
    """a / b in float32 (b1 as ±1, integers as their values), as numpy."""
    return (a / b,)


@implements("erf")
def erf(call, x):
    return (torch.erf(x.to(F64)).to(F32),)


def _gelu_argument(x: torch.Tensor) -> torch.Tensor:
    return SQRT_2_OVER_PI * (x + GELU_CUBIC * (x * x * x))


@implements("gelu")
def gelu(call, x):
    """0.5·x·erfc(-(x·SQRT1_2)) or x / (1 + e^(-2u)), in double (``activation_ops.gelu_values``)."""
    x = x.to(F64)
    if call.attrs["approximate"] == "tanh":
        return ((x / (1.0 + exp_fixed(-2.0 * _gelu_argument(x)))).to(F32),)
    return ((0.5 * x * torch.erfc(-(x * SQRT1_2))).to(F32),)


@implements("erf_grad")
def erf_grad(call, dy, x):
    x = x.to(F64)
    return ((dy.to(F64) * (TWO_OVER_SQRT_PI * exp_fixed(-(x * x)))).to(F32),)


@implements("gelu_grad")
def gelu_grad(call, dy, x):
    """dy · gelu'(x) in double (``float_grad_ops.GeluGrad``)."""
    x = x.to(F64)
    if call.attrs["approximate"] == "tanh":
        u = _gelu_argument(x)
        d = 1.0 / (1.0 + exp_fixed(-2.0 * u)) + 0.5 * x * tanh_derivative(u) * (
            SQRT_2_OVER_PI * (1.0 + GELU_CUBIC3 * (x * x)))
    else:
        d = 0.5 * torch.erfc(-(x * SQRT1_2)) + x * (exp_fixed(-0.5 * (x * x)) * INV_SQRT_2PI)
    return ((dy.to(F64) * d).to(F32),)


@implements("sub_grad_b")
def sub_grad_b(call, dy):
    return ((-_sum_to(dy.to(F64), call.attrs["shape"])).to(F32),)


@implements("div_grad_b")
def div_grad_b(call, dy, a, b):
    """-Σ dy·a / (b·b) over b's broadcast axes, in double."""
    a, b = a.to(F64), b.to(F64)
    return (_sum_to(-(dy.to(F64) * a) / (b * b), b.shape).to(F32),)


# --- layer normalization ----------------------------------------------------------------------------


def _normalized(call, x: torch.Tensor, axis: int):
    """(x̂, 1/sqrt(σ² + ε) per row, K) as ``layernorm_ops.normalized``."""
    x = x.to(float_dtype(call))
    axes = list(range(axis, x.ndim))
    k = math.prod(x.shape[axis:])
    d = x - ordered_sum(call, x, axes) / k
    invstd = 1.0 / torch.sqrt(ordered_sum(call, d * d, axes) / k + call.attrs["epsilon"])
    return d * invstd, invstd, k


def _axis(call, x: torch.Tensor) -> int:
    return call.attrs["axis"] % x.ndim


@implements("layernorm")
def layernorm(call, x, scale, bias=None):
    xhat, _, _ = _normalized(call, x, _axis(call, x))
    y = xhat * scale.to(xhat.dtype)
    if bias is not None:
        y = y + bias.to(xhat.dtype)
    return (y.to(F32),)


@implements("layernorm_grad_x")
def layernorm_grad_x(call, dy, x, scale):
    axis = _axis(call, x)
    xhat, invstd, k = _normalized(call, x, axis)
    axes = list(range(axis, x.ndim))
    g = dy.to(xhat.dtype) * scale.to(xhat.dtype)
    sum_g, sum_gx = ordered_sum(call, g, axes), ordered_sum(call, g * xhat, axes)
    return (((invstd / k) * ((k * g - sum_g) - xhat * sum_gx)).to(F32),)


@implements("layernorm_grad_scale")
def layernorm_grad_scale(call, dy, x):
    axis = _axis(call, x)
    xhat, _, _ = _normalized(call, x, axis)
    return (ordered_sum(call, dy.to(xhat.dtype) * xhat, list(range(axis)), keepdim=False).to(F32),)


# --- reductions -------------------------------------------------------------------------------------


@implements("reduce_sum")
def reduce_sum(call, x):
    axes = normalized_axes(call.attrs["axes"], x.ndim)
    return (ordered_sum(call, x.to(float_dtype(call)), axes, call.attrs["keepdims"]).to(F32),)


@implements("reduce_mean")
def reduce_mean(call, x):
    axes = normalized_axes(call.attrs["axes"], x.ndim)
    total = ordered_sum(call, x.to(float_dtype(call)), axes, call.attrs["keepdims"])
    return ((total / math.prod(x.shape[a] for a in axes)).to(F32),)


@implements("reduce_mean_grad")
def reduce_mean_grad(call, dy):
    """dy / K broadcast to x's shape (``shape``, symbols bound)."""
    shape = tuple(call.attrs["shape"])
    axes = normalized_axes(call.attrs["axes"], len(shape))
    count = math.prod(shape[a] for a in axes)
    dy = dy.to(F64).reshape(reduced_shape(shape, axes, True))
    return ((dy / count).expand(*shape).to(F32).contiguous(),)
