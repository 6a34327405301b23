"""Helpers the implementations share: the compute dtype, autocast, pooling geometry."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from boldc.ir.types import DType, TensorType
from boldc.ops.common import count_inside, window_out_hw
from boldc.torch.numerics import F64
from boldc.torch.registry import OpCall

F32 = torch.float32


def float_dtype(call: OpCall):
    """float64 when the engine is exact (the interpreter's double), else float32."""
    return F64 if call.rt.exact else F32


def autocast(call: OpCall):
    """bfloat16 autocast of a float layer with ``amp`` (CUDA, not exact), else nothing."""
    if call.rt.amp and not call.rt.exact:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def logic_sign(call: OpCall) -> float:
    """+1 for xnor, -1 for xor (e(xor(a, b)) = -e(xnor(a, b)))."""
    return 1.0 if call.attrs["logic"] == "xnor" else -1.0


def channel_shape(ndim: int) -> tuple:
    """Broadcast shape of a per-channel vector (axis 1) against a rank-``ndim`` value."""
    return (1, -1) + (1,) * (ndim - 2)


def pool_geometry(shape, attrs) -> tuple[tuple[int, int], list[int]]:
    """((OH, OW), padding [left, right, top, bottom] for F.pad) of a pooling window over an NCHW
    ``shape``: the op's pads plus the trailing rows and columns ceil_mode's last windows need
    (``common.pool_nchw``)."""
    kh, kw = attrs["kernel"]
    dil = attrs.get("dilation", [1, 1])
    oh, ow = window_out_hw(TensorType(DType.f32, tuple(shape)), (kh, kw), attrs, attrs["ceil_mode"])
    pt, pl, pb, pr = attrs["pad"]
    sh, sw = attrs["stride"]
    h, w = shape[2], shape[3]
    extra_h = max(0, (oh - 1) * sh + dil[0] * (kh - 1) + 1 - (h + pt + pb))
    extra_w = max(0, (ow - 1) * sw + dil[1] * (kw - 1) + 1 - (w + pl + pr))
    return (oh, ow), [pl, pr + extra_w, pt, pb + extra_h]


def window_counts(attrs, hw, out_hw, device) -> torch.Tensor:
    """[OH, OW] float64: the positions of each average-pool window that count (inside the
    input, or the padded input with count_include_pad), as ``common.pool_nchw``."""
    kh, kw = attrs["kernel"]
    h, w = hw
    oh, ow = out_hw
    pt, pl, pb, pr = attrs["pad"]
    sh, sw = attrs["stride"]
    lo_h, hi_h = (-pt, h + pb) if attrs["count_include_pad"] else (0, h)
    lo_w, hi_w = (-pl, w + pr) if attrs["count_include_pad"] else (0, w)
    count = np.outer(count_inside(oh, kh, sh, 1, -pt, lo_h, hi_h), count_inside(ow, kw, sw, 1, -pl, lo_w, hi_w))
    return torch.from_numpy(count.astype(np.float64)).to(device)
