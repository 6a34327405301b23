"""C of local response normalization and its gradient (boldc/ops/lrn_ops.py).

A loop over the positions of the other axes (split over threads), then over the channels;
each window sum is a loop over the window's channels in ascending order, from 0.0 in
double, as ``lrn_ops.window_sums``, so the sums have the interpreter's bits; d^β is the C
library's ``pow``. The gradient computes each d[c] of its transposed window again (size²
squares per element instead of a scratch row per thread: the values are the same).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from boldc.backend.cblock import Block
from boldc.backend.cexpr import Const, Expr, Var
from boldc.backend.ckernel import CKernel, COp, CTensor, scalar_literal
from boldc.ops.lrn_ops import window


def _value(t: CTensor, idx: list[Expr]) -> str:
    """The element as a double (b1 as e(b) = ±1)."""
    v = t.load(idx)
    return f"(double)(2 * {v} - 1)" if t.dtype.is_bool else f"(double){v}"


def _at(idx: list[Expr], channel: Expr) -> list[Expr]:
    at = list(idx)
    at[1] = channel
    return at


def _window_head(var: str, center: str, lo: int, hi: int, channels: int) -> str:
    """The loop over [center - lo, center + hi] clipped to [0, channels - 1]."""
    first = f"({center} > {lo} ? {center} - {lo} : 0)" if lo else center
    last = f"({center} + {hi} < {channels - 1} ? {center} + {hi} : {channels - 1})" if hi else center
    return f"for (long {var} = {first}; {var} <= {last}; ++{var}) {{"


def _denominator(x: CTensor, idx: list[Expr], center: str, name: str, attrs) -> list[str]:
    """Lines declaring ``double name = bias + alpha/size · Σ_window(center) x²``."""
    lo, hi = window(attrs)
    channels = x.shape[1]
    k = f"{name}_k"
    v = _value(x, _at(idx, Var(k, 0, channels - 1)))
    aos = scalar_literal(attrs["alpha"] / attrs["size"], "double")
    return [f"double {name}_s = 0.0;", _window_head(k, center, lo, hi, channels),
            f"    const double {name}_v = {v};", f"    {name}_s += {name}_v * {name}_v;", "}",
            f"const double {name} = {scalar_literal(attrs['bias'], 'double')} + {aos} * {name}_s;"]


@contextmanager
def _each_channel(b: Block, out: CTensor) -> Iterator[tuple[list[Expr], Var]]:
    """Loops over the positions of every axis but 1 (storage order, the outermost split over
    threads), then over the channels; yields (the index, the channel variable)."""
    lay = out.layout
    idx: list[Expr] = [Const(0)] * lay.rank
    work = lay.count_expr()
    with ExitStack() as loops:
        for axis in (a for a in lay.perm if a != 1):
            idx[axis] = loops.enter_context(b.loop(f"i{axis}", out.extent(axis), work))
            work = work if isinstance(idx[axis], Const) else None  # the pragma on the outermost loop
        c = Var("bd_c", 0, out.shape[1] - 1)
        b.decl(f"for (long bd_c = 0; bd_c < {out.shape[1]}; ++bd_c) {{")
        idx[1] = c
        yield idx, c
        b.decl("}")


def lrn(cop: COp) -> CKernel:
    """y = x / pow(d, beta) per element (``lrn_ops.LRN``)."""
    x, y = cop.ins[0], cop.out
    beta = scalar_literal(cop.attrs["beta"], "double")
    b = Block()
    with _each_channel(b, y) as (idx, c):
        b.decl(*("    " + line for line in _denominator(x, idx, str(c), "bd_d", cop.attrs)))
        b(f"    {y.name}[{y.layout.offset(idx)[0]}] = (float)({_value(x, idx)} / pow(bd_d, {beta}));")
    return CKernel(b.text())


def lrn_grad(cop: COp) -> CKernel:
    """dx[j] = dy[j]/p[j] - (2·alpha·beta/size)·x[j]·Σ_{c in [j-hi, j+lo]} dy[c]·x[c]/(p[c]·d[c])
    (``lrn_ops.LRNGrad``)."""
    dy, x = cop.ins
    dx = cop.out
    lo, hi = window(cop.attrs)
    beta = scalar_literal(cop.attrs["beta"], "double")
    k2 = scalar_literal(2.0 * cop.attrs["alpha"] * cop.attrs["beta"] / cop.attrs["size"], "double")
    channels = x.shape[1]
    b = Block()
    with _each_channel(b, dx) as (idx, c):
        at = _at(idx, Var("bd_m", 0, channels - 1))
        inner = _denominator(x, at, "bd_m", "bd_e", cop.attrs)
        term = f"({_value(dy, at)} * {_value(x, at)}) / (pow(bd_e, {beta}) * bd_e)"
        lines = ["double bd_t = 0.0;", _window_head("bd_m", str(c), hi, lo, channels),
                 *("    " + line for line in inner), f"    bd_t += {term};", "}",
                 *_denominator(x, idx, str(c), "bd_d", cop.attrs),
                 f"{dx.name}[{dx.layout.offset(idx)[0]}] = (float)({_value(dy, idx)} / pow(bd_d, {beta}) - "
                 f"{k2} * {_value(x, idx)} * bd_t);"]
        b.decl(*("    " + line for line in lines))
    return CKernel(b.text())
