"""Implementations of the gradient, signal and loss ops the backward rules emit
(boldc/ops/grad_ops.py, float_grad_ops.py, shape_ops.py, signal_ops.py, loss_ops.py), each
mirroring the op's ``evaluate``: sums in double, rounded once to float32.

Layer gradients with an integer signal (from ``quantize_signal``) sum integers: exact in
float64 in any order (|Σ| < 2^15·K, far below 2^53), so they use any GEMM or convolution
kernel, on CPU and CUDA alike. With an f32 signal and ``exact``, linear layers sum in k order
(``matmul_in_order``, as the interpreter) and convolutions in double; without ``exact`` they
are float32 kernels (within rounding of the interpreter).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from boldc.ops.loss_ops import check_label_shape, label_out_of_range
from boldc.ops.signal_ops import largest_level, scale_exponent, span, uniform
from boldc.torch.numerics import F64, exp_fixed, matmul_in_order, pad_nchw, tanh_derivative, transposed_conv
from boldc.torch.ops.common import F32, channel_shape, pool_geometry, window_counts
from boldc.torch.registry import implements
from boldc.torch.values import is_signal_type

# --- helpers ----------------------------------------------------------------------------------------


def _integer_signal(call) -> bool:
    return is_signal_type(call.in_types[0])


def _sum_dtype(call):
    """float64 for integer signals (exact) and with ``exact``; float32 otherwise."""
    return F64 if call.rt.exact or _integer_signal(call) else F32


def _signal_result(call, total: torch.Tensor, dy_scale) -> torch.Tensor:
    """f32(scale · (dy_scale · total)): an integer signal's power-of-two scale applied first
    (``grad_ops.signal_result``)."""
    if dy_scale is not None:
        total = total.to(F64) * float(dy_scale)
    return (call.attrs["scale"] * total).to(F32)


def _product(call, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [R, K] · b [K, M]: exact integer sums, the interpreter's k order with ``exact``, or float32."""
    if _integer_signal(call):
        return a.to(F64) @ b.to(F64)
    if call.rt.exact:
        return matmul_in_order(a, b)
    return a.to(F32) @ b.to(F32)


# --- layers -----------------------------------------------------------------------------------------


@implements("linear_grad_x")
def linear_grad_x(call, dy, w, dy_scale=None):
    """dx = scale · dy·e(W)  (the input signal g)."""
    dy2 = dy.reshape(-1, dy.shape[-1])
    total = _product(call, dy2, w)
    return (_signal_result(call, total, dy_scale).reshape(*dy.shape[:-1], w.shape[1]),)


@implements("linear_grad_w")
def linear_grad_w(call, dy, x, dy_scale=None):
    """dW = scale · dyᵀ·e(x)  (the weight signal q)."""
    dy2 = dy.reshape(-1, dy.shape[-1])
    x2 = x.reshape(-1, x.shape[-1])
    return (_signal_result(call, _product(call, dy2.t(), x2), dy_scale),)


@implements("channel_sum")
def channel_sum(call, dy, dy_scale=None):
    """Σ over every axis but ``axis`` (the bias signal), in double."""
    axis = call.attrs["axis"] % dy.ndim
    others = tuple(a for a in range(dy.ndim) if a != axis)
    total = dy.to(F64).sum(dim=others)
    if dy_scale is not None:
        total = total * float(dy_scale)
    return (total.to(F32),)


@implements("conv2d_grad_x")
def conv2d_grad_x(call, dy, w, dy_scale=None):
    """The transposed convolution of dy with e(W) onto the padded input, cropped to the input."""
    total = transposed_conv(dy, w, call.attrs, call.attrs["input_hw"], _sum_dtype(call))
    return (_signal_result(call, total, dy_scale),)


@implements("conv2d_grad_w")
def conv2d_grad_w(call, dy, x, dy_scale=None):
    """The correlation of e(x), padded with ``pad_value``, with dy."""
    a = call.attrs
    dtype = _sum_dtype(call)
    xp = pad_nchw(x.to(dtype), a["pad"], a["pad_value"])
    shape = (dy.shape[1], x.shape[1] // a["groups"], *a["kernel"])
    total = torch.nn.grad.conv2d_weight(xp, shape, dy.to(dtype), stride=a["stride"], padding=0,
                                        dilation=a["dilation"], groups=a["groups"])
    return (_signal_result(call, total, dy_scale),)


# --- the threshold ------------------------------------------------------------------------------------

TABLE_LIMIT = 1 << 16  # an integer pre-activation whose keys span more is computed element by element


def _derivative(mode: str, u: torch.Tensor) -> torch.Tensor:
    if mode == "tanh":
        return tanh_derivative(u)
    if mode == "box":
        return (u.abs() <= 1.0).to(F64)
    return torch.clamp_min(2.0 - 2.0 * u.abs(), 0.0)


@implements("threshold_grad")
def threshold_grad(call, dy, x, tau=None, ge=None):
    """dx = dy · d(α(x - τ)) (tanh, box or bireal), negated where the per-channel ge is F. For an
    integer pre-activation and an integer τ, d is computed once per key k = x - τ (the values
    are the same: α·k is the same double operation) and gathered. Without ``exact``, d and the
    product are float32, element by element (tanh' from torch's tanh)."""
    a = call.attrs
    shape = channel_shape(x.ndim)
    exact = call.rt.exact
    dtype = F64 if exact else F32
    t = tau.to(dtype).reshape(shape) if tau is not None else float(a["tau"])
    integer_tau = (call.in_types[2].dtype.is_int if tau is not None else isinstance(a["tau"], int))
    k = x.to(dtype) - t  # exact for integers (|k| < 2^24)
    d = None
    if exact and call.in_types[1].dtype.is_int and integer_tau and k.numel():
        lo, hi = int(k.min()), int(k.max())
        if hi - lo <= TABLE_LIMIT:
            keys = torch.arange(lo, hi + 1, dtype=F64, device=x.device)
            d = _derivative(a["mode"], a["alpha"] * keys).to(dtype)[(k - lo).to(torch.long)]
    if d is None:
        if not exact and a["mode"] == "tanh":
            d = 1.0 - torch.tanh(a["alpha"] * k) ** 2
        else:
            d = _derivative(a["mode"], a["alpha"] * k.to(F64)).to(dtype)
    if ge is not None:
        d = d * torch.where(ge > 0, 1.0, -1.0).to(dtype).reshape(shape)
    return ((dy.to(dtype) * d).to(F32),)


# --- float activations --------------------------------------------------------------------------------


def _unary(dy, derivative) -> tuple:
    return ((dy.to(F64) * derivative).to(F32),)


@implements("relu_grad")
def relu_grad(call, dy, x):
    return _unary(dy, (x > 0).to(F64))


@implements("leaky_relu_grad")
def leaky_relu_grad(call, dy, x):
    one = torch.ones((), dtype=F64, device=x.device)
    return _unary(dy, torch.where(x >= 0, one, one * call.attrs["alpha"]))  # alpha in double, as numpy


@implements("clip_grad")
def clip_grad(call, dy, x):
    x = x.to(F64)
    return _unary(dy, ((x >= call.attrs["min"]) & (x <= call.attrs["max"])).to(F64))


@implements("sigmoid_grad")
def sigmoid_grad(call, dy, y):
    y = y.to(F64)
    return _unary(dy, y * (1.0 - y))


@implements("tanh_grad")
def tanh_grad(call, dy, y):
    y = y.to(F64)
    return _unary(dy, 1.0 - y * y)


@implements("prelu_grad_x")
def prelu_grad_x(call, dy, x, slope):
    return _unary(dy, torch.where(x >= 0, 1.0, slope.to(F64)).to(F64))


def _sum_to(dy: torch.Tensor, target) -> torch.Tensor:
    """dy (float64) summed over the axes along which an operand of ``target`` shape was broadcast."""
    target = tuple(target)
    lead = dy.ndim - len(target)
    axes = tuple(range(lead)) + tuple(lead + i for i, t in enumerate(target) if t == 1 and dy.shape[lead + i] != 1)
    out = dy.sum(dim=axes) if axes else dy
    return out.reshape(target)


@implements("prelu_grad_slope")
def prelu_grad_slope(call, dy, x, slope):
    x = x.to(F64)
    return (_sum_to(dy.to(F64) * torch.where(x < 0, x, 0.0), slope.shape).to(F32),)


@implements("softmax_grad")
def softmax_grad(call, dy, y):
    dy, y = dy.to(F64), y.to(F64)
    return ((y * (dy - (dy * y).sum(dim=call.attrs["axis"], keepdim=True))).to(F32),)


@implements("log_softmax_grad")
def log_softmax_grad(call, dy, y):
    dy, y = dy.to(F64), y.to(F64)
    return ((dy - torch.exp(y) * dy.sum(dim=call.attrs["axis"], keepdim=True)).to(F32),)


# --- pooling --------------------------------------------------------------------------------------------


def _windows(attrs, hw, out_hw) -> tuple[int, int]:
    """Rows and columns of the padded input that the (OH, OW) windows cover."""
    kh, kw = attrs["kernel"]
    dh, dw = attrs.get("dilation", [1, 1])
    sh, sw = attrs["stride"]
    return (out_hw[0] - 1) * sh + dh * (kh - 1) + 1, (out_hw[1] - 1) * sw + dw * (kw - 1) + 1


def _fold_into_input(cols: torch.Tensor, attrs, shape, padding, out_hw) -> torch.Tensor:
    """Window columns [N, C·kh·kw, OH·OW] added back onto the padded input, cropped to the input."""
    n, c, h, w = shape
    need = _windows(attrs, (h, w), out_hw)
    folded = F.fold(cols, need, attrs["kernel"], dilation=attrs.get("dilation", [1, 1]), stride=attrs["stride"])
    pl, pr, pt, pb = padding
    full = torch.zeros((n, c, h + pt + pb, w + pl + pr), dtype=cols.dtype, device=cols.device)
    full[:, :, :need[0], :need[1]] = folded
    return full[:, :, pt:pt + h, pl:pl + w]


@implements("maxpool2d_grad")
def maxpool2d_grad(call, dy, x):
    """Each dy to the first maximal element of its window in row-major order (torch's max-pool
    keeps the first maximum: it replaces only on a larger value); overlapping windows add up.
    The padding never wins: in float64 a -inf of x becomes -1e300, still above the padding's
    -inf and below every float32."""
    a = call.attrs
    (oh, ow), padding = pool_geometry(x.shape, a)
    key = x.to(F64)
    key = torch.where(key == float("-inf"), torch.full_like(key, -1e300), key)
    xp = F.pad(key, padding, value=float("-inf"))
    _, index = F.max_pool2d(xp, a["kernel"], a["stride"], dilation=a["dilation"], return_indices=True)
    n, c, hp, wp = xp.shape
    dtype = F64 if call.rt.exact else F32
    dxp = torch.zeros((n, c, hp * wp), dtype=dtype, device=x.device)
    dxp.scatter_add_(2, index[:, :, :oh, :ow].reshape(n, c, -1), dy.to(dtype).reshape(n, c, -1))
    pl, _, pt, _ = padding
    h, w = x.shape[2:]
    return (dxp.view(n, c, hp, wp)[:, :, pt:pt + h, pl:pl + w].to(F32).contiguous(),)


@implements("avgpool2d_grad")
def avgpool2d_grad(call, dy):
    """Each dy / count added to every position of its window (padding dropped)."""
    a = call.attrs
    n, c = dy.shape[:2]
    shape = (n, c, *a["input_hw"])
    out_hw, padding = pool_geometry(shape, {**a, "dilation": [1, 1]})
    per = dy.to(F64) / window_counts(a, a["input_hw"], out_hw, dy.device)
    kk, count = a["kernel"][0] * a["kernel"][1], out_hw[0] * out_hw[1]
    cols = per.reshape(n, c, 1, count).expand(n, c, kk, count).reshape(n, c * kk, count)
    return (_fold_into_input(cols, {**a, "dilation": [1, 1]}, shape, padding, out_hw).to(F32),)


@implements("global_avgpool_grad")
def global_avgpool_grad(call, dy):
    h, w = call.attrs["input_hw"]
    return ((dy.to(F64) / (h * w)).expand(*dy.shape[:2], h, w).to(F32).contiguous(),)


# --- shapes ------------------------------------------------------------------------------------------


@implements("sum_to")
def sum_to(call, dy):
    return (_sum_to(dy.to(F64), call.attrs["shape"]).to(F32),)


@implements("slice_axis")
def slice_axis(call, x):
    a = call.attrs
    return (x.narrow(a["axis"], a["start"], a["stop"] - a["start"]).contiguous(),)


# --- integer signals ----------------------------------------------------------------------------------


@implements("quantize_signal")
def quantize_signal(call, z, step=None):
    """z ≈ q · 2^e (``QuantizeSignal.evaluate``): e from the largest magnitude, q rounded to nearest,
    stochastically or logarithmically. Under DistributedDataParallel the largest magnitude is
    taken over the whole batch (all ranks), so every rank scales as one process would."""
    a = call.attrs
    bits, rounding = a["bits"], a["rounding"]
    top = largest_level(bits, rounding)
    z = z.to(F32)
    m = z.abs().max() if z.numel() else torch.zeros((), dtype=F32, device=z.device)
    if call.rt.comm is not None:
        m = call.rt.comm.all_max(m)
    m = np.float32(m.item())
    if not np.isfinite(m):
        return torch.zeros_like(z), torch.tensor(float("nan"), dtype=F32, device=z.device)
    e = scale_exponent(m, bits, rounding)
    v = torch.ldexp(z.to(F64), torch.tensor(-e, dtype=F64, device=z.device))
    if rounding == "nearest":
        q = torch.round(v)
    elif rounding == "stochastic":
        u = uniform(a["seed"], a["stream"], int(step), z.numel()).reshape(tuple(z.shape))
        q = torch.floor(v + torch.from_numpy(u).to(z.device))
    else:
        q = _log_round(v, span(bits, rounding))
    q = torch.clamp(q, -top, top)
    return q.to(F32), torch.tensor(float(np.ldexp(np.float32(1), e)), dtype=F32, device=z.device)


def _log_round(v: torch.Tensor, kmax: int) -> torch.Tensor:
    """±2^round(log2 |v|) (``signal_ops.log_round``): k = E if f >= √½ else E - 1, 0 below 2^0."""
    f, big = torch.frexp(v.abs())
    big = big.to(F64)
    k = torch.where(f >= float(np.sqrt(0.5)), big, big - 1)
    mag = torch.where(k < 0, 0.0, torch.ldexp(torch.ones_like(v), k.clamp(0, kmax)))
    return torch.sign(v) * mag


# --- losses ---------------------------------------------------------------------------------------------


def _positions(call, pred: torch.Tensor, target: torch.Tensor):
    """(logits [P, C] in float64, labels [P], kept [P]) of logits [N, C, *spatial] and labels
    [N, *spatial] (loss_ops._positions): the P positions in the labels' row-major order,
    ``kept`` the labels that are not ignore_index; another label out of range is an error."""
    classes, ignore = pred.shape[1], call.attrs["ignore_index"]
    check_label_shape(pred.shape, target.shape)
    labels = target.reshape(-1).to(torch.long)
    kept = labels != ignore
    bad = labels[kept & ((labels < 0) | (labels >= classes))]
    if bad.numel():
        raise label_out_of_range(int(bad[0]), classes, ignore)
    return torch.movedim(pred, 1, -1).reshape(-1, classes).to(F64), labels, kept


def _kept_count(call, kept: torch.Tensor) -> float:
    """What a mean cross-entropy divides by: the labels not ignored, of the whole batch over
    all ranks under DistributedDataParallel (one all-reduce), at least 1 (every label
    ignored: the loss and the gradient are 0)."""
    count = float(kept.sum())
    if call.rt.comm is not None:
        count = call.rt.comm.all_sum(count, kept.device)
    return max(count, 1.0)


def _count(call, pred: torch.Tensor) -> float:
    """What a mean mse or l1 divides by: the elements of the batch, of the whole batch over
    all ranks under DistributedDataParallel."""
    if call.attrs["reduction"] != "mean":
        return 1.0
    samples = call.rt.loss_count if call.rt.loss_count is not None else pred.shape[0]
    return float(samples * math.prod(pred.shape[1:]))


@implements("softmax_xent")
def softmax_xent(call, pred, target):
    """Σ_k (log Σ_c exp z[k, c] - z[k, y_k]) over the labels not ignored, over their count
    for "mean", in double."""
    z, labels, kept = _positions(call, pred, target)
    shifted = z - z.amax(dim=1, keepdim=True)
    logp = shifted - torch.log(torch.exp(shifted).sum(dim=1, keepdim=True))
    total = 0.0 - logp[kept].gather(1, labels[kept].view(-1, 1)).sum()  # 0.0 - : +0 when every label is ignored
    if call.attrs["reduction"] == "mean":
        total = total / _kept_count(call, kept)
    return (total.to(F32),)


@implements("softmax_xent_grad")
def softmax_xent_grad(call, pred, target):
    """dz = softmax(z) - onehot(y) (``exp_fixed``, the sum in class order) at the labels not
    ignored, 0 at the others, over their count for "mean"."""
    z, labels, kept = _positions(call, pred, target)
    e = exp_fixed(z - z.amax(dim=1, keepdim=True))
    total = torch.zeros(e.shape[0], dtype=F64, device=e.device)
    for c in range(e.shape[1]):
        total = total + e[:, c]
    g = e / total[:, None]
    rows = torch.nonzero(kept).view(-1)
    g[rows, labels[rows]] -= 1.0
    g[~kept] = 0.0
    if call.attrs["reduction"] == "mean":
        g = g / _kept_count(call, kept)
    shape = (pred.shape[0], *pred.shape[2:], pred.shape[1])
    return (torch.movedim(g.reshape(shape), -1, 1).to(F32),)


def _difference(pred, target) -> torch.Tensor:
    return pred.to(F64) - target.to(F64)


@implements("mse")
def mse(call, pred, target):
    d = _difference(pred, target)
    return (((d * d).sum() / _count(call, pred)).to(F32),)


@implements("mse_grad")
def mse_grad(call, pred, target):
    return ((2.0 * _difference(pred, target) / _count(call, pred)).to(F32),)


@implements("l1")
def l1(call, pred, target):
    return ((_difference(pred, target).abs().sum() / _count(call, pred)).to(F32),)


@implements("l1_grad")
def l1_grad(call, pred, target):
    return ((torch.sign(_difference(pred, target)) / _count(call, pred)).to(F32),)
