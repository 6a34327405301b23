"""Torch versions of the numeric kernels of boldc/ops/common.py, computed with the same
sequence of IEEE double operations (torch's float64 elementwise operations are exactly
rounded), so they give the interpreter's bits:

- ``matmul_in_order``: sums in k order (``common.matmul_in_order``);
- ``exp_fixed`` and ``tanh_derivative``: the fixed exp of the C runtime and the interpreter;
- convolution and padding helpers in NCHW with ``pad = [top, left, bottom, right]``.

Integer-valued products and sums (±1 operands, integer signals) are exact in float64 in any
order below 2^53, so they may use any GEMM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from boldc.ops.common import EXP_TERMS, LN2_HI, LN2_LO, LOG2_E

F64 = torch.float64


def matmul_in_order(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [R, K] · b [K, M] in float64, each sum taken in k order (k = 0, 1, ...). A product of
    two float32 (or ±1) values is exact in double, so accumulating it with ``addcmul_`` (fused
    or not) rounds once per step, as the interpreter's ``acc + a·b`` does."""
    a = a.to(F64)
    b = b.to(F64)
    acc = torch.zeros((a.shape[0], b.shape[1]), dtype=F64, device=a.device)
    for k in range(a.shape[1]):
        acc.addcmul_(a[:, k:k + 1], b[k:k + 1, :])
    return acc


def exp_fixed(x: torch.Tensor) -> torch.Tensor:
    """e^x in float64 as ``common.exp_fixed``: k = rint(x·log2 e), r = (x - k·LN2_HI) - k·LN2_LO,
    Horner's rule on EXP_TERMS (a multiplication and an addition per term, each rounded),
    times 2^k. Exact to the interpreter's bits for x <= 709 (the callers pass x <= 0)."""
    clipped = x.to(F64).clamp(-746.0, 710.0)
    k = torch.round(clipped * LOG2_E)
    r = (clipped - k * LN2_HI) - k * LN2_LO
    p = torch.full_like(r, EXP_TERMS[-1])
    for c in EXP_TERMS[-2::-1]:
        p = p * r + c
    return torch.ldexp(p, k)


def tanh_derivative(u: torch.Tensor) -> torch.Tensor:
    """1 - tanh²(u) = 4t / (1 + t)² with t = e^(-2|u|), in float64 (``common.tanh_derivative``)."""
    t = exp_fixed(-2.0 * u.to(F64).abs())
    return 4.0 * t / ((1.0 + t) * (1.0 + t))


def pad_nchw(x: torch.Tensor, pad, value: float) -> torch.Tensor:
    """x padded by ``pad = [top, left, bottom, right]`` with ``value``."""
    pt, pl, pb, pr = pad
    if not (pt or pl or pb or pr):
        return x
    return F.pad(x, (pl, pr, pt, pb), value=value)


def conv(x: torch.Tensor, w: torch.Tensor, attrs: dict, pad_value: float, dtype) -> torch.Tensor:
    """Correlation of x [N, C, H, W] padded with ``pad_value`` with w [M, C/g, kh, kw], in ``dtype``."""
    xp = pad_nchw(x.to(dtype), attrs["pad"], pad_value)
    return F.conv2d(xp, w.to(dtype), stride=attrs["stride"], dilation=attrs["dilation"], groups=attrs["groups"])


def padded_hw(attrs: dict, hw) -> tuple[int, int]:
    pt, pl, pb, pr = attrs["pad"]
    return hw[0] + pt + pb, hw[1] + pl + pr


def crop(xp: torch.Tensor, pad, hw) -> torch.Tensor:
    return xp[:, :, pad[0]:pad[0] + hw[0], pad[1]:pad[1] + hw[1]]


def transposed_conv(x: torch.Tensor, w: torch.Tensor, attrs: dict, out_hw, dtype) -> torch.Tensor:
    """The transposed convolution of x [N, M, H, W] with w [M, C/g, kh, kw] onto [N, C, *out_hw]
    in ``dtype`` (``common.transposed_conv_nchw``): onto the padded output, then cropped."""
    hp, wp = padded_hw(attrs, out_hw)
    yp = torch.nn.grad.conv2d_input((x.shape[0], w.shape[1] * attrs["groups"], hp, wp), w.to(dtype), x.to(dtype),
                                    stride=attrs["stride"], padding=0, dilation=attrs["dilation"],
                                    groups=attrs["groups"])
    return crop(yp, attrs["pad"], out_hw)
