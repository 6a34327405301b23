"""C emission of the pixel shuffles (depth_to_space, space_to_depth: boldc/ops/depth_space_ops.py):
a copy whose source index is the block arithmetic of the op's mode, for any element type
(b1 bits are read and packed by ``copy_body`` as in a transpose)."""

from __future__ import annotations

from boldc.backend.cexpr import Expr, div, mod
from boldc.backend.ckernel import CKernel, COp, copy_body
from boldc.ops.depth_space_ops import block_of, deep_channel


def depth_to_space(cop: COp) -> CKernel:
    """y[n, c, h, w] = x[n, deep_channel(c, h % b, w % b), h / b, w / b]."""
    b, mode = cop.attrs["blocksize"], cop.attrs["mode"]
    shallow = cop.out.shape[1]

    def source(idx: list[Expr]) -> list[Expr]:
        n, c, h, w = idx
        return [n, deep_channel(c, mod(h, b), mod(w, b), shallow, b, mode), div(h, b), div(w, b)]

    return CKernel(copy_body(cop.out, cop.ins[0], source))


def space_to_depth(cop: COp) -> CKernel:
    """y[n, k, h, w] = x[n, c, h·b + i, w·b + j] with (c, i, j) the block of deep channel k."""
    b, mode = cop.attrs["blocksize"], cop.attrs["mode"]
    shallow = cop.ins[0].shape[1]

    def source(idx: list[Expr]) -> list[Expr]:
        n, k, h, w = idx
        c, i, j = block_of(k, shallow, b, mode, div, mod)
        return [n, c, h * b + i, w * b + j]

    return CKernel(copy_body(cop.out, cop.ins[0], source))
