"""Implementations of the forward ops (the ops of @forward), each mirroring the op's
``evaluate`` in boldc/ops: the same operations, in float64 where the interpreter computes in
double (with ``exact``), rounded to float32 where it rounds.

Boolean layers are ±1 products: every partial sum is an integer of magnitude at most the
fan-in m, so float32 (or TF32/bf16 operands with float32 accumulation) is exact for
m + 1 <= 2^24; the result is rounded to the nearest integer as the interpreter's ``rint``,
which also absorbs the error of a convolution algorithm that is not a plain sum.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from boldc.ops.common import conv_transpose_out_hw
from boldc.ops.depth_space_ops import depth_to_space_plan, space_to_depth_plan
from boldc.ops.fused_ops import run_parts, types_of_part
from boldc.torch.numerics import F64, conv, matmul_in_order, transposed_conv
from boldc.torch.ops.common import (
    F32,
    autocast,
    channel_shape,
    logic_sign,
    pool_geometry,
    window_counts,
)
from boldc.torch.registry import OpCall, implementation, implements

# --- layers ---------------------------------------------------------------------------------------


def _dense(call, x, w) -> torch.Tensor:
    """x [..., m] · w [n, m]ᵀ: in k order in double (``exact``, as ``matmul_in_order``), else a float32 GEMM."""
    x2 = x.reshape(-1, x.shape[-1])
    if call.rt.exact:
        return matmul_in_order(x2, w.t())
    with autocast(call):
        return (x2 @ w.t()).to(F32)


def _lead(x, y, n):
    return y.reshape(*x.shape[:-1], n)


@implements("linear")
def linear(call, x, w, bias=None):
    """y = x·Wᵀ + b: the sum in double in k order, the bias added in double, rounded once."""
    acc = _dense(call, x, w)
    if bias is not None:
        acc = acc + bias.to(acc.dtype)
    return (_lead(x, acc.to(F32), w.shape[0]),)


@implements("mlinear")
def mlinear(call, x, w, bias=None):
    """y = ±x·e(W)ᵀ + b (+ for xnor), as linear."""
    acc = _dense(call, x, w) * logic_sign(call)
    if bias is not None:
        acc = acc + bias.to(acc.dtype)
    return (_lead(x, acc.to(F32), w.shape[0]),)


@implements("blinear")
def blinear(call, x, w, bias=None):
    """s = ±e(x)·e(W)ᵀ + e(w0): a ±1 product, exact in float32."""
    x2 = x.reshape(-1, x.shape[-1])
    s = (x2 @ w.t()) * logic_sign(call)
    if bias is not None:
        s = s + bias
    return (_lead(x, torch.round(s), w.shape[0]),)


def _float_conv(call, x, w) -> torch.Tensor:
    """The float32 result of a convolution with zero padding (in double, rounded, with ``exact``)."""
    if call.rt.exact:
        return conv(x, w, call.attrs, 0.0, F64).to(F32)
    with autocast(call):
        return conv(x, w, call.attrs, 0.0, F32).to(F32)


@implements("conv2d")
def conv2d(call, x, w, bias=None):
    """y = conv(x, W) (zero padding), then + b in float32 as the interpreter adds it."""
    y = _float_conv(call, x, w)
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return (y,)


@implements("mconv2d")
def mconv2d(call, x, w, bias=None):
    """y = ±conv(x, e(W)) + b (+ for xnor; zero padding)."""
    y = _float_conv(call, x, w) * logic_sign(call)
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return (y,)


@implements("bconv2d")
def bconv2d(call, x, w, bias=None):
    """s = ±conv(e(x), e(W)) + e(w0), padded positions e(F) = -1 (pad_mode "false") or 0."""
    pad_value = -1.0 if call.attrs["pad_mode"] == "false" else 0.0
    s = conv(x, w, call.attrs, pad_value, F32) * logic_sign(call)
    if bias is not None:
        s = s + bias.view(1, -1, 1, 1)
    return (torch.round(s),)


@implements("conv_transpose2d")
def conv_transpose2d(call, x, w, bias=None):
    """y = convᵀ(x, W) + b: in double, the bias added in double, rounded once (``exact``), else
    in float32."""
    dtype = F64 if call.rt.exact else F32
    y = transposed_conv(x, w, call.attrs, conv_transpose_out_hw(x.shape, w.shape, call.attrs), dtype)
    if bias is not None:
        y = y + bias.to(dtype).view(1, -1, 1, 1)
    return (y.to(F32),)


@implements("fused")
def fused(call, *operands):
    """The parts of the body one after the other, each with its implementation (``run_parts``)
    and its own operand and result types (a cast part reads them)."""
    body, previous = call.attrs["body"], []

    def run(opdef, args, attrs):
        before = previous[-1] if previous else None
        _, in_types, _, out_types = types_of_part(body, len(previous), call.in_types, before)
        previous.append(out_types[0])
        part = OpCall(opdef.name, opdef.normalize_attrs(attrs), in_types, out_types, call.rt)
        return list(implementation(opdef.name)(part, *args))

    return tuple(run_parts(body, list(operands), run))


# --- the threshold and casts ----------------------------------------------------------------------


def _signs(bits: torch.Tensor) -> torch.Tensor:
    """True/False as the b1 values +1/-1."""
    return bits.to(F32) * 2.0 - 1.0


@implements("threshold")
def threshold(call, x, tau=None, ge=None):
    """T iff x >= τ (scalar attribute, or per-channel operand); where the per-channel ge is F, x <= τ."""
    if tau is None:
        return (_signs(x >= call.attrs["tau"]),)
    t = tau.reshape(channel_shape(x.ndim))
    bits = x >= t
    if ge is not None:
        bits = torch.where(ge.reshape(channel_shape(x.ndim)) > 0, bits, x <= t)
    return (_signs(bits),)


@implements("cast")
def cast(call, x):
    """b1 -> number: e(x) (the value as held); number -> b1: x >= 0; f32 -> integer: round half to
    even and saturate; widening: the value."""
    src, to = call.in_types[0].dtype, call.out_types[0].dtype
    if to.is_bool:
        return (x.clone() if src.is_bool else _signs(x >= 0),)
    if to.is_int and src.is_float:
        lo, hi = to.int_range
        return (torch.clamp(torch.round(x.to(F64)), lo, hi).to(F32),)
    return (x.clone(),)


# --- elementwise ----------------------------------------------------------------------------------


@implements("relu")
def relu(call, x):
    return (torch.clamp_min(x, 0.0),)


@implements("leaky_relu")
def leaky_relu(call, x):
    """x if x >= 0 else x·f32(alpha)."""
    return (torch.where(x >= 0, x, x * call.attrs["alpha"]),)


@implements("prelu")
def prelu(call, x, slope):
    return (torch.where(x >= 0, x, x * slope),)


@implements("clip")
def clip(call, x):
    """min(max(x, min), max) in float32."""
    lo = torch.tensor(call.attrs["min"], dtype=F32, device=x.device)
    hi = torch.tensor(call.attrs["max"], dtype=F32, device=x.device)
    return (torch.minimum(torch.maximum(x, lo), hi),)


@implements("sigmoid")
def sigmoid(call, x):
    """0.5·(1 + tanh(x/2)) in double."""
    return ((0.5 * (1.0 + torch.tanh(0.5 * x.to(F64)))).to(F32),)


@implements("tanh")
def tanh(call, x):
    return (torch.tanh(x.to(F64)).to(F32),)


@implements("add")
def add(call, a, b):
    """a + b (b1 as ±1): exact for integers, one rounding for floats."""
    return (a + b,)


@implements("mul")
def mul(call, a, b):
    return (a * b,)


@implements("exp")
def exp(call, x):
    """e^x in double, rounded once."""
    return (torch.exp(x.to(F64)).to(F32),)


@implements("softmax")
def softmax(call, x):
    x = x.to(F64)
    axis = call.attrs["axis"]
    e = torch.exp(x - x.amax(dim=axis, keepdim=True))
    return ((e / e.sum(dim=axis, keepdim=True)).to(F32),)


@implements("log_softmax")
def log_softmax(call, x):
    x = x.to(F64)
    axis = call.attrs["axis"]
    z = x - x.amax(dim=axis, keepdim=True)
    return ((z - torch.log(torch.exp(z).sum(dim=axis, keepdim=True))).to(F32),)


# --- pooling --------------------------------------------------------------------------------------


def _max_pool(call, x, fill: float):
    (oh, ow), pad = pool_geometry(x.shape, call.attrs)
    xp = F.pad(x, pad, value=fill)
    y = F.max_pool2d(xp, call.attrs["kernel"], call.attrs["stride"], dilation=call.attrs["dilation"])
    return (y[:, :, :oh, :ow].contiguous(),)


@implements("maxpool2d")
def maxpool2d(call, x):
    """Max over the window; padding never wins (-inf)."""
    return _max_pool(call, x, float("-inf"))


@implements("bmaxpool2d")
def bmaxpool2d(call, x):
    """OR of the bits of the window = max of ±1; padding is F (-1)."""
    return _max_pool(call, x, -1.0)


@implements("avgpool2d")
def avgpool2d(call, x):
    """Window sums in double divided by the counted positions, rounded once."""
    (oh, ow), pad = pool_geometry(x.shape, call.attrs)
    xp = F.pad(x.to(F64), pad, value=0.0)
    total = F.avg_pool2d(xp, call.attrs["kernel"], call.attrs["stride"], divisor_override=1)[:, :, :oh, :ow]
    count = window_counts(call.attrs, x.shape[2:], (oh, ow), x.device)
    return ((total / count).to(F32),)


@implements("global_avgpool")
def global_avgpool(call, x):
    return (x.to(F64).mean(dim=(2, 3), keepdim=True).to(F32),)


@implements("global_maxpool")
def global_maxpool(call, x):
    return (x.amax(dim=(2, 3), keepdim=True),)


# --- shapes ---------------------------------------------------------------------------------------


@implements("flatten")
def flatten(call, x):
    axis = call.attrs["axis"] + x.ndim if call.attrs["axis"] < 0 else call.attrs["axis"]
    return (x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:])),)


@implements("reshape")
def reshape(call, x):
    return (x.reshape(call.attrs["shape"]),)


@implements("transpose")
def transpose(call, x):
    return (x.permute(*call.attrs["perm"]).contiguous(),)


def _shuffle(x, plan):
    tmp, perm, out = plan
    return x.reshape(tmp).permute(*perm).reshape(out)


@implements("depth_to_space")
def depth_to_space(call, x):
    """The reshape, permutation and reshape of ``depth_space_ops`` (exact: a copy)."""
    return (_shuffle(x, depth_to_space_plan(x.shape, call.attrs["blocksize"], call.attrs["mode"])),)


@implements("space_to_depth")
def space_to_depth(call, x):
    return (_shuffle(x, space_to_depth_plan(x.shape, call.attrs["blocksize"], call.attrs["mode"])),)


@implements("concat")
def concat(call, *xs):
    """b1 values are held as ±1 already: joined with integers they are e(b)."""
    return (torch.cat(xs, dim=call.attrs["axis"]),)


@implements("expand")
def expand(call, x):
    return (x.expand(*call.attrs["shape"]).contiguous(),)


@implements("pad")
def pad(call, x):
    """Constant padding of any rank: pads = [b_0, ..., b_{r-1}, e_0, ..., e_{r-1}]."""
    r = x.ndim
    pads = call.attrs["pads"]
    widths = []
    for axis in reversed(range(r)):
        widths += [pads[axis], pads[axis + r]]
    return (F.pad(x, widths, value=float(call.attrs["value"])),)
