"""Implementations of the attention ops, each mirroring its ``evaluate``
(boldc/ops/matmul_ops.py, embedding_ops.py, mask_ops.py): matmul in double in k order
(``exact``) or a float32 batched GEMM, the embedding gather and its scatter-add in index
order, and the mask ops on the engine's ±1 bits."""

from __future__ import annotations

import torch

from boldc.errors import InterpretError
from boldc.torch.numerics import F64
from boldc.torch.ops.common import F32, autocast
from boldc.torch.registry import implements


def _signs(bits: torch.Tensor) -> torch.Tensor:
    """A bool tensor as the engine holds b1: ±1.0."""
    return bits.to(F32) * 2.0 - 1.0


@implements("matmul")
def matmul(call, a, b):
    """y = a · b with broadcast batch dims: each sum in double in k order from 0, rounded once
    (``exact``, as ``matmul_in_order_nd``: a product of two float32 is exact in double), else a
    float32 batched GEMM."""
    if not call.rt.exact:
        with autocast(call):
            return (torch.matmul(a, b).to(F32),)
    a, b = a.to(F64), b.to(F64)
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    acc = torch.zeros(batch + (a.shape[-2], b.shape[-1]), dtype=F64, device=a.device)
    for k in range(a.shape[-1]):
        acc = acc + a[..., :, k:k + 1] * b[..., k:k + 1, :]
    return (acc.to(F32),)


def _rows(ids: torch.Tensor, rows: int, op: str) -> torch.Tensor:
    """The ids (integers in the float32 carrier) as row numbers in [0, rows), int64; an id
    outside [-rows, rows) is an error naming it (``embedding_ops.row_indices``)."""
    k = ids.to(torch.int64)
    bad = (k < -rows) | (k >= rows)
    if bool(bad.any()):
        raise InterpretError(f"{op}: id {int(k[bad].reshape(-1)[0])} is out of range for a table of {rows} rows "
                             f"(ids must be in [-{rows}, {rows}))")
    return torch.where(k < 0, k + rows, k)


@implements("embedding")
def embedding(call, table, ids):
    """y[i..., :] = table[r(ids[i...]), :]."""
    return (table[_rows(ids, table.shape[0], "embedding")].contiguous(),)


@implements("embedding_grad")
def embedding_grad(call, dy, ids):
    """d table = the rows of dy added onto the rows their ids select, in double in row-major
    order of the ids (``index_add_`` on the CPU adds in index order), rounded once; float32
    without ``exact``."""
    rows = call.attrs["rows"]
    dtype = F64 if call.rt.exact else F32
    flat = _rows(ids, rows, "embedding_grad").reshape(-1)
    acc = torch.zeros((rows, dy.shape[-1]), dtype=dtype, device=dy.device)
    acc.index_add_(0, flat, dy.reshape(-1, dy.shape[-1]).to(dtype))
    return (acc.to(F32),)


@implements("equal")
def equal(call, a, b):
    """y = (a == b): integers are exact in the carrier, so equality is the IR's."""
    return (_signs(a == b),)


@implements("not")
def logical_not(call, x):
    """e(¬x) = -e(x)."""
    return (-x,)


@implements("where")
def where(call, cond, a, b):
    """y = a where cond (e(cond) > 0), else b."""
    return (torch.where(cond > 0, a, b).contiguous(),)


@implements("where_grad")
def where_grad(call, dy, cond):
    """dy where cond (branch a) or where ¬cond (branch b), else 0."""
    zero = torch.zeros((), dtype=dy.dtype, device=dy.device)
    keep = cond > 0
    out = torch.where(keep, dy, zero) if call.attrs["branch"] == "a" else torch.where(keep, zero, dy)
    return (out.contiguous(),)
