"""C of the attention ops: the batched matmul, the embedding gather and its
scatter-add gradient, and the mask ops (equal, not, where and where's signal).

Every kernel addresses its tensors through their layouts (``Layout.offset``), so any rank,
channels-last storage of rank 4 and a symbolic batch (``n``) in any position are handled by
the same loops; broadcast operands are read through ``CTensor.at``.
"""

from __future__ import annotations

from contextlib import ExitStack

from boldc.backend.cblock import Block
from boldc.backend.cexpr import Const, Expr, Var, div
from boldc.backend.ckernel import CKernel, COp, CTensor, scalar_literal
from boldc.backend.kernels import _r, map_kernel

P_BLOCK = 64  # columns of y one row pass accumulates (a double each, on the stack)


def _outer_loops(b: Block, loops: ExitStack, t: CTensor, axes, work) -> list[Expr]:
    """Loops over the logical ``axes`` of ``t`` in order (the pragma on the outermost loop
    of more than one trip); returns the index, the other axes 0."""
    idx: list[Expr] = [Const(0)] * t.rank
    for axis in axes:
        idx[axis] = loops.enter_context(b.loop(f"i{axis}", t.extent(axis), work))
        work = work if isinstance(idx[axis], Const) else None
    return idx


def _block_width(b: Block, extent: Expr, start: Expr) -> Expr:
    """The columns of the block that starts at ``start`` of ``extent``: P_BLOCK, or fewer in
    the last block."""
    if isinstance(extent, Const) and (extent.value <= P_BLOCK or extent.value % P_BLOCK == 0):
        return Const(min(extent.value, P_BLOCK))
    rest = extent - start
    b.decl(f"const long bd_pn = {rest} < {P_BLOCK} ? {rest} : {P_BLOCK};")
    return Var("bd_pn", 1, P_BLOCK)


INNER_MAX = 64  # the longest innermost stored batch axis (attention's heads) the fast loop order takes


def _inner_batch_axis(a: CTensor, bm: CTensor, y: CTensor) -> int | None:
    """The batch axis of ``y`` that is stored innermost (rank-4 storage is channels-last,
    so [N, H, L, d] keeps the heads H innermost) when ``a`` and ``b`` store it the same way
    with the same static size: then the loops can walk it last, reading all three tensors
    contiguously. None otherwise."""
    r = y.rank
    inner = y.layout.perm[-1]
    if inner >= r - 2 or a.rank != r or bm.rank != r:
        return None
    if a.layout.perm != y.layout.perm or bm.layout.perm != y.layout.perm:
        return None
    size = y.extent(inner)
    if not isinstance(size, Const) or size.value > INNER_MAX:
        return None
    if any(not isinstance(t.extent(inner), Const) or t.extent(inner).value != size.value for t in (a, bm)):
        return None
    return inner


def _matmul_inner(cop: COp, inner: int) -> CKernel:
    """``matmul`` with the batch axis ``inner`` (of size H) walked innermost: for each row m
    and block of P_BLOCK columns, acc[j·H + h] += a[.., h, m, k] · b[.., h, k, p0 + j] for k
    ascending; the same sums in the same order as ``matmul``, so the same bits."""
    a, bm, y = cop.ins[0], cop.ins[1], cop.out
    r = y.rank
    kdim = a.extent(r - 1)
    pdim = y.extent(r - 1)
    heads = y.extent(inner).value
    b = Block()
    with ExitStack() as loops:
        outer = [ax for ax in range(r - 1) if ax != inner]
        idx = _outer_loops(b, loops, y, outer, y.layout.count_expr() * kdim)
        m = idx[r - 2]
        with b.loop("bd_pb", div(pdim + (P_BLOCK - 1), P_BLOCK)) as pb:
            p0 = pb * P_BLOCK
            pn = _block_width(b, pdim, p0)
            b.decl(f"double bd_acc[{P_BLOCK * heads}];")
            with b.loop("bd_j", pn * heads) as j:
                b(f"bd_acc[{j}] = 0.0;")
            with b.loop("bd_k", kdim) as k:
                with b.loop("bd_j", pn) as j:
                    with b.loop("bd_h", Const(heads)) as h:
                        at = list(idx)
                        at[inner] = h
                        av = a.load(a.at(at[:r - 2] + [m, k], r))
                        bv = bm.load(bm.at(at[:r - 2] + [k, p0 + j], r))
                        b(f"bd_acc[{j} * {heads} + {h}] += (double){av} * (double){bv};")
            with b.loop("bd_j", pn) as j:
                with b.loop("bd_h", Const(heads)) as h:
                    at = list(idx)
                    at[inner] = h
                    b(f"{y.name}[{y.layout.offset(at[:r - 2] + [m, p0 + j])[0]}] = (float)bd_acc[{j} * {heads} + {h}];")
    return CKernel(b.text())


def matmul(cop: COp) -> CKernel:
    """y[..., m, p] = Σ_k a[..., m, k] · b[..., k, p] in double, k ascending from 0.0, rounded
    once to f32 (the interpreter's order, so the same bits: a product of two f32 is exact in
    double, fused or not). One pass per row (batch index, m) of y, split over threads; within
    it blocks of P_BLOCK columns accumulate on the stack while k walks the rows of b, so the
    innermost loop reads a row of b and writes the accumulators in order."""
    a, bm, y = cop.ins[0], cop.ins[1], cop.out
    inner = _inner_batch_axis(a, bm, y)
    if inner is not None:
        return _matmul_inner(cop, inner)
    r = y.rank
    kdim = a.extent(a.rank - 1)
    pdim = y.extent(r - 1)
    b = Block()
    with ExitStack() as loops:
        idx = _outer_loops(b, loops, y, range(r - 1), y.layout.count_expr() * kdim)
        lead, m = idx[:r - 2], idx[r - 2]
        with b.loop("bd_pb", div(pdim + (P_BLOCK - 1), P_BLOCK)) as pb:
            p0 = pb * P_BLOCK
            pn = _block_width(b, pdim, p0)
            b.decl(f"double bd_acc[{P_BLOCK}];")
            with b.loop("bd_j", pn) as j:
                b(f"bd_acc[{j}] = 0.0;")
            with b.loop("bd_k", kdim) as k:
                b.decl(f"const double bd_a = (double){a.load(a.at(lead + [m, k], r))};")
                with b.loop("bd_j", pn) as j:
                    b(f"bd_acc[{j}] += bd_a * (double){bm.load(bm.at(lead + [k, p0 + j], r))};")
            with b.loop("bd_j", pn) as j:
                b(f"{y.name}[{y.layout.offset(lead + [m, p0 + j])[0]}] = (float)bd_acc[{j}];")
    return CKernel(b.text())


# --- embedding --------------------------------------------------------------------------------


def _row_of(b: Block, ids: CTensor, idx: list[Expr], rows: Expr) -> Var:
    """``bd_id``: the row id ``ids[idx]`` selects (a negative id counts from the end); it is
    outside [0, rows) when the id is out of range, and the kernels never read or write there."""
    b.decl(f"long bd_id = (long){ids.load(idx)};")
    b(f"if (bd_id < 0) bd_id += {rows};")
    return Var("bd_id", 0, rows.value - 1 if isinstance(rows, Const) else None)


def _ids_check(ids: CTensor, rows: Expr) -> str:
    """An input check: nonzero when an id of ``ids`` is outside [-rows, rows)."""
    b = Block()
    with b.loop("bd_i", ids.layout.count_expr()) as i:
        b(f"if ((long){ids.name}[{i}] < -(long)({rows}) || (long){ids.name}[{i}] >= (long)({rows})) return 1;")
    return b.text()


def embedding(cop: COp) -> CKernel:
    """y[i..., d] = table[r(ids[i...]), d]. When ids is a function argument or a param, an input
    check refuses the call (ERR_INPUT) before any op runs if an id is outside [-V, V); an
    out-of-range id computed inside the function (no check possible before the call) gives a
    row of NaN: the kernel never reads outside the table."""
    table, ids, y = cop.ins[0], cop.ins[1], cop.out
    rows, width = table.extent(0), table.shape[1]
    nan = scalar_literal(float("nan"), "float")
    b = Block()
    with ExitStack() as loops:
        idx = _outer_loops(b, loops, ids, range(ids.rank), ids.layout.count_expr() * width)
        row = _row_of(b, ids, idx, rows)
        with b.loop("bd_d", width) as d:  # the table is read only where the id is in range
            b(f"{y.name}[{y.layout.offset(idx + [d])[0]}] = (bd_id >= 0 && bd_id < {rows}) ? "
              f"{table.load([row, d])} : {nan};")
    kernel = CKernel(b.text())
    if ids.is_arg or ids.is_param:
        kernel.input_check = _ids_check(ids, rows)
        v = table.shape[0] if isinstance(table.shape[0], int) else "V"
        kernel.input_check_message = f"an id is out of range for the table of {v} rows (ids must be in [-{v}, {v}))"
        kernel.input_check_operands = (1,)
    return kernel


def embedding_grad(cop: COp) -> CKernel:
    """d table[v, d] = Σ dy[i, d] over the ids i selecting row v, added in double in row-major
    order of the ids (sequentially: the interpreter's order, the same bits), rounded once to
    f32. Out-of-range ids (refused by the forward op's check) add nothing."""
    dy, ids, y = cop.ins[0], cop.ins[1], cop.out
    rows, width = y.shape
    rows_expr = Const(rows)
    b = Block()
    b.decl("double *bd_acc = (double *)scratch;")
    with b.loop("bd_i", rows * width) as i:
        b(f"bd_acc[{i}] = 0.0;")
    with ExitStack() as loops:
        idx = _outer_loops(b, loops, ids, range(ids.rank), None)
        row = _row_of(b, ids, idx, rows_expr)
        with b.when(f"bd_id >= 0 && bd_id < {rows}"), b.loop("bd_d", width) as d:
            b(f"bd_acc[{row * width + d}] += (double){dy.load(idx + [d])};")
    with b.loop("bd_i", rows * width) as i:
        b(f"{y.name}[{i}] = (float)bd_acc[{i}];")
    return CKernel(b.text(), scratch_bytes=_r(8 * rows * width))


# --- masks ------------------------------------------------------------------------------------


def _at(t: CTensor, out: CTensor, idx: list[Expr]) -> str:
    return t.load(t.at(idx, out.rank))


def equal(cop: COp) -> CKernel:
    """y = (a == b) in the operands' own type (f32 or integers: C's == is numpy's)."""
    a, b = cop.ins
    return map_kernel(cop, lambda idx: f"{_at(a, cop.out, idx)} == {_at(b, cop.out, idx)}")


def logical_not(cop: COp) -> CKernel:
    """y = ¬x on bits."""
    x = cop.ins[0]
    return map_kernel(cop, lambda idx: f"!{_at(x, cop.out, idx)}")


def where(cop: COp) -> CKernel:
    """y = cond ? a : b, each read under broadcasting (bits as 0/1, a condition for a b1 y)."""
    cond, a, b = cop.ins
    return map_kernel(cop, lambda idx: f"({_at(cond, cop.out, idx)} ? {_at(a, cop.out, idx)} : "
                                       f"{_at(b, cop.out, idx)})")


def where_grad(cop: COp) -> CKernel:
    """dx = dy where cond (branch a) or where ¬cond (branch b), else 0."""
    dy, cond = cop.ins
    take_a = cop.attrs["branch"] == "a"

    def expr(idx: list[Expr]) -> str:
        c, g = _at(cond, cop.out, idx), _at(dy, cop.out, idx)
        return f"({c} ? {g} : 0.0f)" if take_a else f"({c} ? 0.0f : {g})"

    return map_kernel(cop, expr)
