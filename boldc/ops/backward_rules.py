"""The backward rules the forward ops' ``backward`` hooks share (docs/method.md §3,
docs/training.md): the input, weight and bias signals of a layer, the threshold's
surrogate derivative, and the signals of pooling and broadcasting. Each emits gradient
ops (boldc/ops/grad_ops.py, shape_ops.py, float_grad_ops.py) through the autodiff
context ``ctx``."""

from __future__ import annotations

import math

from boldc.ops.common import expect_static


def layer_backward(ctx, op, dy, sign: float = 1.0, rescale: float = 1.0, pad_value: float = 0.0,
                   boolean: bool = False) -> list:
    """Gradients of a linear or convolution layer ``y = layer(x, w, bias?)`` with the signal
    ``dy``: input signal (scaled by ``sign·rescale``), weight signal (scaled by ``sign``) and
    bias signal (channel sums, unscaled: the bias enters as e(w0) or b). A ``boolean``
    layer (b1 input and weights) takes the signal as integers when autodiff's options ask
    for them (``ctx.quantize``): every sum is then exact."""
    x, w = op.operands[0], op.operands[1]
    conv = w.type.rank == 4
    geometry = {k: op.attrs[k] for k in ("stride", "pad", "dilation", "groups")} if conv else {}
    signal = [dy]
    quantized = ctx.quantize(dy, op.results[0]) if boolean else None
    if quantized is not None:
        q, scale = quantized
        signal = [q, scale]
    grads = [None] * len(op.operands)
    if ctx.needs[0]:
        attrs = {**geometry, "scale": sign * rescale}
        if conv:
            attrs["input_hw"] = [expect_static(d, "input size") for d in x.type.shape[2:]]
        grads[0] = ctx.op("conv2d_grad_x" if conv else "linear_grad_x", [signal[0], w, *signal[1:]], attrs,
                          grad_of=x)
    if ctx.needs[1]:
        attrs = {**geometry, "scale": sign}
        if conv:
            attrs.update(kernel=list(w.type.shape[2:]), pad_value=pad_value)
        grads[1] = ctx.op("conv2d_grad_w" if conv else "linear_grad_w", [signal[0], x, *signal[1:]], attrs,
                          grad_of=w)
    if len(op.operands) > 2 and ctx.needs[2]:
        grads[2] = ctx.op("channel_sum", signal, {"axis": 1 if conv else -1}, grad_of=op.operands[2])
    return grads


def layer_fan_in(op) -> int:
    """m of docs/method.md §3 for a linear ([out, in]) or convolution ([M, C/g, kh, kw]) layer."""
    return math.prod(op.operands[1].type.shape[1:])


def rescale_factor(op) -> float:
    """docs/method.md §3's optional input-signal rescaling: √(2/m_out) for a linear layer,
    √(2·s/(c_out·kh·kw)) for a convolution (s = √(sh·sw), the stride of a square kernel)."""
    w = op.operands[1].type.shape
    if len(w) == 2:
        return math.sqrt(2.0 / w[0])
    s = math.sqrt(op.attrs["stride"][0] * op.attrs["stride"][1])
    return math.sqrt(2.0 * s / (w[0] * w[2] * w[3]))


def threshold_backward(ctx, op, dy, extra_operands, tau) -> object:
    """The threshold rule (docs/method.md §3) for the pre-activation ``op.operands[0]``."""
    s = op.operands[0]
    alpha = ctx.options["alpha"]
    if not alpha:
        m = ctx.fan_in(s)
        if m is None:
            raise ctx.error(op, f"cannot find the fan-in of %{s.name} (no layer produces it); "
                                "give autodiff the option alpha")
        alpha = math.pi / (2.0 * math.sqrt(3.0 * m))
    attrs = {"mode": ctx.options["threshold-grad"], "alpha": float(alpha), "tau": tau}
    return ctx.op("threshold_grad", [dy, s, *extra_operands], attrs, grad_of=s)


def spatial(x) -> list[int]:
    """[H, W] of an NCHW value (static)."""
    return [expect_static(d, "spatial size") for d in x.type.shape[2:]]


def maxpool_backward(ctx, op, dy):
    x = op.operands[0]
    attrs = {k: op.attrs[k] for k in ("kernel", "stride", "pad", "dilation", "ceil_mode")}
    return ctx.op("maxpool2d_grad", [dy, x], attrs, grad_of=x)


def sum_to_operand(ctx, dy, operand):
    """dy itself, or dy summed to the shape of an operand that was broadcast."""
    if tuple(operand.type.shape) == tuple(dy.type.shape):
        return dy
    return ctx.op("sum_to", [dy], {"shape": list(operand.type.shape)}, grad_of=operand)
