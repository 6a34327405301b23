"""Implementations of batch normalization (boldc/ops/norm_ops.py): the inference form, the
training form (batch statistics) and their gradients, in double, rounded once; and of local
response normalization and its gradient (boldc/ops/lrn_ops.py), with the interpreter's window
sums (sequential, in ascending channel order).

Under DistributedDataParallel the batch statistics are those of the whole batch: the
per-channel sums are all-reduced (as torch's SyncBatchNorm), so N processes normalize as one
process does on the whole batch, and ``batchnorm_train_grad_x`` all-reduces its sums too.
"""

from __future__ import annotations

import torch

from boldc.errors import InterpretError
from boldc.ops.lrn_ops import window
from boldc.torch.numerics import F64
from boldc.torch.ops.common import F32, channel_shape, float_dtype
from boldc.torch.registry import implements


def _others(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(a for a in range(x.ndim) if a != 1)


def _channel_sum(call, t: torch.Tensor) -> torch.Tensor:
    """Σ over every axis but 1 (float64), over all ranks under DistributedDataParallel."""
    total = t.sum(dim=_others(t))
    return call.rt.comm.all_sum_tensor(total) if call.rt.comm is not None else total


def batch_statistics(call, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Per-channel mean, biased variance, 1/sqrt(var + ε) (float64) and the count n, as
    ``norm_ops.batch_statistics``."""
    x = x.to(F64)
    shape = channel_shape(x.ndim)
    if call.rt.comm is None:
        n = x.numel() // x.shape[1] if x.shape[1] else 0
        mean = x.mean(dim=_others(x))
        var = ((x - mean.reshape(shape)) ** 2).mean(dim=_others(x))
    else:
        local = torch.tensor([x.numel() // x.shape[1]], dtype=F64, device=x.device)
        n = int(call.rt.comm.all_sum_tensor(local))
        mean = _channel_sum(call, x) / n
        var = _channel_sum(call, (x - mean.reshape(shape)) ** 2) / n
    return mean, var, 1.0 / torch.sqrt(var + call.attrs["epsilon"]), n


@implements("batchnorm")
def batchnorm(call, x, scale, bias, mean, var):
    """y = (x - mean)·k + bias with k = scale / sqrt(var + ε) (the running statistics)."""
    shape = channel_shape(x.ndim)
    k = (scale.to(F64) / torch.sqrt(var.to(F64) + call.attrs["epsilon"])).reshape(shape)
    y = (x.to(F64) - mean.to(F64).reshape(shape)) * k + bias.to(F64).reshape(shape)
    return (y.to(F32),)


@implements("batchnorm_train")
def batchnorm_train(call, x, scale, bias, running_mean, running_var):
    """y with the batch statistics; then the new running statistics (updated operands)."""
    mean, var, invstd, n = batch_statistics(call, x)
    if n < 2:
        raise InterpretError(f"batchnorm_train needs more than one value per channel, got {n} (a larger batch)")
    shape = channel_shape(x.ndim)
    y = (x.to(F64) - mean.reshape(shape)) * invstd.reshape(shape) * scale.to(F64).reshape(shape)
    y = y + bias.to(F64).reshape(shape)
    m = call.attrs["momentum"]
    new_mean = (1.0 - m) * running_mean.to(F64) + m * mean
    new_var = (1.0 - m) * running_var.to(F64) + m * var * (n / (n - 1))
    return y.to(F32), new_mean.to(F32), new_var.to(F32)


@implements("batchnorm_grad_x")
def batchnorm_grad_x(call, dy, scale, var):
    k = (scale.to(F64) / torch.sqrt(var.to(F64) + call.attrs["epsilon"])).reshape(channel_shape(dy.ndim))
    return ((dy.to(F64) * k).to(F32),)


@implements("batchnorm_grad_scale")
def batchnorm_grad_scale(call, dy, x, mean, var):
    shape = channel_shape(x.ndim)
    xhat = (x.to(F64) - mean.to(F64).reshape(shape)) / torch.sqrt(var.to(F64).reshape(shape) + call.attrs["epsilon"])
    return ((dy.to(F64) * xhat).sum(dim=_others(x)).to(F32),)


def _xhat(call, x):
    mean, _, invstd, n = batch_statistics(call, x)
    shape = channel_shape(x.ndim)
    return (x.to(F64) - mean.reshape(shape)) * invstd.reshape(shape), invstd, n


@implements("batchnorm_train_grad_x")
def batchnorm_train_grad_x(call, dy, x, scale):
    """dx = scale / sqrt(σ² + ε) / n · (n·dy - Σ dy - x̂ · Σ dy·x̂), the sums over the whole batch."""
    xhat, invstd, n = _xhat(call, x)
    shape = channel_shape(x.ndim)
    dy = dy.to(F64)
    sum_dy = _channel_sum(call, dy).reshape(shape)
    sum_dy_xhat = _channel_sum(call, dy * xhat).reshape(shape)
    k = (scale.to(F64) * invstd / n).reshape(shape)
    return ((k * (n * dy - sum_dy - xhat * sum_dy_xhat)).to(F32),)


@implements("batchnorm_train_grad_scale")
def batchnorm_train_grad_scale(call, dy, x):
    """Σ dy·x̂ over this rank's samples (DistributedDataParallel sums the ranks' gradients)."""
    xhat, _, _ = _xhat(call, x)
    return ((dy.to(F64) * xhat).sum(dim=_others(x)).to(F32),)


# --- local response normalization ------------------------------------------------------------------


def _window_sums(v: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """s[:, c] = Σ_{c' = c-lo}^{c+hi} v[:, c'] over the channels that exist, one addition at a
    time in ascending c' from 0 (``lrn_ops.window_sums``)."""
    channels = v.shape[1]
    out = torch.zeros_like(v)
    for k in range(-lo, hi + 1):
        if abs(k) < channels:
            out[:, max(-k, 0):channels - max(k, 0)] += v[:, max(k, 0):channels + min(k, 0)]
    return out


def _lrn_denominator(call, x: torch.Tensor) -> torch.Tensor:
    lo, hi = window(call.attrs)
    a = call.attrs
    return a["bias"] + (a["alpha"] / a["size"]) * _window_sums(x * x, lo, hi)


@implements("lrn")
def lrn(call, x):
    """y = x / d^beta, d = bias + alpha/size · Σ_window x² (in double with ``exact``)."""
    x = x.to(float_dtype(call))
    return ((x / torch.pow(_lrn_denominator(call, x), call.attrs["beta"])).to(F32),)


@implements("lrn_grad")
def lrn_grad(call, dy, x):
    """dx = dy/p - (2·alpha·beta/size)·x·Σ_{transposed window} dy·x/(p·d), p = d^beta."""
    dtype = float_dtype(call)
    dy, x = dy.to(dtype), x.to(dtype)
    lo, hi = window(call.attrs)
    d = _lrn_denominator(call, x)
    p = torch.pow(d, call.attrs["beta"])
    total = _window_sums(dy * x / (p * d), hi, lo)
    k = 2.0 * call.attrs["alpha"] * call.attrs["beta"] / call.attrs["size"]
    return ((dy / p - k * x * total).to(F32),)
