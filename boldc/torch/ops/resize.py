"""``resize`` and ``resize_grad`` on torch tensors, with the taps the interpreter uses
(``boldc.ops.resize_ops.axis_taps``).

With ``exact`` both compute as the interpreter: the same float64 products and sums in the same
order (the gradient's sums one output position after the other); otherwise float32, the
gradient as two products with the dense interpolation matrices (within float32 rounding).
"""

from __future__ import annotations

import torch

from boldc.ops.resize_ops import AxisTaps, hw_taps
from boldc.torch.ops.common import F32, float_dtype
from boldc.torch.registry import implements


def _index(taps: AxisTaps, k: int, device) -> torch.Tensor:
    return torch.from_numpy(taps.index[:, k].copy()).to(device)


def _weight(taps: AxisTaps, k: int, dtype, device) -> torch.Tensor:
    return torch.from_numpy(taps.weight[:, k].copy()).to(device=device, dtype=dtype)


@implements("resize")
def resize(call, x):
    """nearest: a gather (the carrier's values, whatever the element type); linear: along W
    then along H, as ``resize_ops.interpolate``."""
    rows, cols = hw_taps(call.attrs, x.shape[2:])
    dev = x.device
    if call.attrs["mode"] == "nearest":
        return (x.index_select(2, _index(rows, 0, dev)).index_select(3, _index(cols, 0, dev)).contiguous(),)
    dtype = float_dtype(call)
    xd = x.to(dtype)
    r = (_weight(cols, 0, dtype, dev) * xd.index_select(3, _index(cols, 0, dev))
         + _weight(cols, 1, dtype, dev) * xd.index_select(3, _index(cols, 1, dev)))
    y = (_weight(rows, 0, dtype, dev)[:, None] * r.index_select(2, _index(rows, 0, dev))
         + _weight(rows, 1, dtype, dev)[:, None] * r.index_select(2, _index(rows, 1, dev)))
    return (y.to(F32),)


def _matrix(taps: AxisTaps, in_len: int, device) -> torch.Tensor:
    """[out, in] float32: the weights of each output position's taps (a tap twice: summed)."""
    m = torch.zeros((taps.index.shape[0], in_len), dtype=torch.float64)
    for k in range(taps.taps):
        m.index_put_((torch.arange(taps.index.shape[0]), torch.from_numpy(taps.index[:, k].copy())),
                     torch.from_numpy(taps.weight[:, k].copy()), accumulate=True)
    return m.to(device=device, dtype=F32)


@implements("resize_grad")
def resize_grad(call, dy):
    """The transpose of resize: with ``exact`` as ``resize_ops.scatter_back`` (float64, output
    positions in order), else dx = Mhᵀ · dy · Mw in float32."""
    h, w = call.attrs["input_hw"]
    rows, cols = hw_taps(call.attrs, (h, w))
    dev = dy.device
    if not call.rt.exact:
        t = dy.to(F32) @ _matrix(cols, w, dev)
        return ((_matrix(rows, h, dev).t() @ t).contiguous(),)
    d = dy.to(torch.float64)
    t = torch.zeros(d.shape[:3] + (w,), dtype=torch.float64, device=dev)
    for ow in range(d.shape[3]):
        for k in range(cols.taps):
            t[..., int(cols.index[ow, k])] += float(cols.weight[ow, k]) * d[..., ow]
    dx = torch.zeros(d.shape[:2] + (h, w), dtype=torch.float64, device=dev)
    for oh in range(d.shape[2]):
        for k in range(rows.taps):
            dx[:, :, int(rows.index[oh, k]), :] += float(rows.weight[oh, k]) * t[:, :, oh, :]
    return (dx.to(F32),)
