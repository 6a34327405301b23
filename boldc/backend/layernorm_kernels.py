"""C of layer normalization, its gradients and the reductions over axes
(boldc/ops/layernorm_ops.py, reduce_ops.py).

Every sum is a loop over the reduced positions in row-major order (the logical axes in
ascending order, the last fastest), in double from 0.0, as ``reduce_ops.ordered_sum``: the
interpreter's sequence of additions, so the sums have its bits. LayerNorm runs row by row
(a row: the dims axis..rank-1 for one index of the leading dims; the rows split over
threads): the mean, the variance, then the outputs, each a pass over the row. Operands are
read through their layouts (a rank-4 tensor is stored channels-last), so any axis works.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

from boldc.backend.cblock import Block
from boldc.backend.cexpr import Const, Expr, product
from boldc.backend.ckernel import CKernel, COp, CTensor, map_body, scalar_literal
from boldc.backend.kernels import _r

Lines = Callable[[list[Expr]], list[str]]


@contextmanager
def _each(b: Block, t: CTensor, axes, work=None) -> Iterator[list[Expr]]:
    """Loops over ``axes`` of ``t`` in ascending order (the outermost split over threads when
    ``work`` is given); yields the index, the other axes' entries 0 for the caller to fill."""
    idx: list[Expr] = [Const(0)] * t.rank
    with ExitStack() as loops:
        for a in axes:
            idx[a] = loops.enter_context(b.loop(f"i{a}", t.extent(a), work))
            work = work if isinstance(idx[a], Const) else None  # the pragma on the outermost loop
        yield idx


def _pass(b: Block, t: CTensor, axes, idx: list[Expr], lines: Lines) -> None:
    """One pass over the positions ``axes`` of ``t`` (row-major) from ``idx``: the statements
    ``lines(index)`` in a block of their own (their declarations are local to the pass)."""
    with ExitStack() as loops:
        at = list(idx)
        for a in axes:
            at[a] = loops.enter_context(b.loop(f"i{a}", t.extent(a)))
        b.decl("{", *("    " + line for line in lines(at)), "}")


def _dbl(t: CTensor, idx) -> str:
    return f"(double){t.load(idx)}"


def _row_statistics(b: Block, x: CTensor, axis: int, idx: list[Expr], count: str, eps: str) -> None:
    """Declares bd_mean and bd_inv = 1/sqrt(σ² + ε) of the row at ``idx`` (``layernorm_ops.normalized``)."""
    row = range(axis, x.rank)
    b.decl("double bd_s = 0.0, bd_q = 0.0;")
    _pass(b, x, row, idx, lambda r: [f"bd_s += {_dbl(x, r)};"])
    b.decl(f"const double bd_mean = bd_s / {count};")
    _pass(b, x, row, idx, lambda r: [f"const double bd_d = {_dbl(x, r)} - bd_mean;", "bd_q += bd_d * bd_d;"])
    b.decl(f"const double bd_inv = 1.0 / sqrt(bd_q / {count} + {eps});")


def _row_count(x: CTensor, axis: int) -> str:
    """K, the values of a row, as a double C expression."""
    return f"(double)({product(*(x.extent(a) for a in range(axis, x.rank)))})"


def layernorm(cop: COp) -> CKernel:
    """y = ((x - μ) · 1/sqrt(σ² + ε)) · scale + bias per row."""
    x, scale = cop.ins[0], cop.ins[1]
    bias = cop.ins[2] if len(cop.ins) > 2 else None
    y = cop.out
    axis = cop.attrs["axis"] % x.rank
    eps = scalar_literal(cop.attrs["epsilon"], "double")
    count = _row_count(x, axis)
    b = Block()
    with _each(b, x, range(axis), y.layout.count_expr()) as idx:
        _row_statistics(b, x, axis, idx, count, eps)

        def out(r):
            p = r[axis:]
            value = f"({_dbl(x, r)} - bd_mean) * bd_inv * {_dbl(scale, p)}"
            if bias is not None:
                value += f" + {_dbl(bias, p)}"
            return [f"{y.name}[{y.layout.offset(r)[0]}] = (float)({value});"]

        _pass(b, x, range(axis, x.rank), idx, out)
    return CKernel(b.text())


def layernorm_grad_x(cop: COp) -> CKernel:
    """dx = (bd_inv / K) · ((K·g - Σg) - x̂·Σg·x̂) per row, g = dy · scale (``LayerNormGradX``)."""
    dy, x, scale = cop.ins
    dx = cop.out
    axis = cop.attrs["axis"] % x.rank
    eps = scalar_literal(cop.attrs["epsilon"], "double")
    count = _row_count(x, axis)
    row = range(axis, x.rank)

    def g_and_xhat(r):
        return [f"const double bd_g = {_dbl(dy, r)} * {_dbl(scale, r[axis:])};",
                f"const double bd_h = ({_dbl(x, r)} - bd_mean) * bd_inv;"]

    b = Block()
    with _each(b, x, range(axis), dx.layout.count_expr()) as idx:
        _row_statistics(b, x, axis, idx, count, eps)
        b.decl("double bd_sg = 0.0, bd_sgh = 0.0;")
        _pass(b, x, row, idx, lambda r: [*g_and_xhat(r), "bd_sg += bd_g;", "bd_sgh += bd_g * bd_h;"])
        b.decl(f"const double bd_k = bd_inv / {count};")
        _pass(b, x, row, idx, lambda r: [
            *g_and_xhat(r),
            f"{dx.name}[{dx.layout.offset(r)[0]}] = (float)(bd_k * (({count} * bd_g - bd_sg) - bd_h * bd_sgh));"])
    return CKernel(b.text())


def layernorm_grad_scale(cop: COp) -> CKernel:
    """dscale = Σ over the rows of dy · x̂, the rows in row-major order (one thread: the sums
    have the interpreter's order), accumulated in double (scratch), rounded once."""
    dy, x = cop.ins
    out = cop.out
    axis = cop.attrs["axis"] % x.rank
    eps = scalar_literal(cop.attrs["epsilon"], "double")
    count = _row_count(x, axis)
    size = out.layout.count_expr()
    b = Block()
    b.decl("double *bd_acc = (double *)scratch;")
    with b.loop("bd_i", size) as i:
        b(f"bd_acc[{i}] = 0.0;")
    with _each(b, x, range(axis)) as idx:
        _row_statistics(b, x, axis, idx, count, eps)
        _pass(b, x, range(axis, x.rank), idx, lambda r: [
            f"bd_acc[{out.layout.offset(r[axis:])[0]}] += {_dbl(dy, r)} * (({_dbl(x, r)} - bd_mean) * bd_inv);"])
    with b.loop("bd_i", size) as i:
        b(f"{out.name}[{i}] = (float)bd_acc[{i}];")
    return CKernel(b.text(), scratch_bytes=_r(8 * out.layout.count(cop.max_batch)))


# --- reductions over axes ----------------------------------------------------------------------


def _reduced_index(idx: list[Expr], axes, keepdims: bool) -> list[Expr]:
    """The index of the reduction's result (or of its signal) for an index of x."""
    if keepdims:
        return [Const(0) if a in axes else i for a, i in enumerate(idx)]
    return [i for a, i in enumerate(idx) if a not in axes]


def reduce(cop: COp, axes, mean: bool) -> CKernel:
    """y = Σ (or the mean) of x over ``axes``: per result, a loop over its reduced positions."""
    x, y = cop.ins[0], cop.out
    keepdims = cop.attrs["keepdims"]
    count = f"(double)({product(*(x.extent(a) for a in axes))})"
    b = Block()
    with _each(b, x, [a for a in range(x.rank) if a not in axes], y.layout.count_expr()) as idx:
        b.decl("double bd_s = 0.0;")
        _pass(b, x, axes, idx, lambda r: [f"bd_s += {_dbl(x, r)};"])
        total = f"bd_s / {count}" if mean else "bd_s"
        b(f"{y.name}[{y.layout.offset(_reduced_index(idx, axes, keepdims))[0]}] = (float)({total});")
    return CKernel(b.text())


def reduce_mean_grad(cop: COp, axes) -> CKernel:
    """dx[idx] = dy[the result idx was reduced into] / K."""
    dy, dx = cop.ins[0], cop.out
    keepdims = cop.attrs["keepdims"]
    count = f"(double)({product(*(dx.extent(a) for a in axes))})"
    return CKernel(map_body(dx, lambda idx: f"{_dbl(dy, _reduced_index(idx, axes, keepdims))} / {count}"))
