"""C emission of ``resize`` and ``resize_grad`` (``emitters/forward.py``, ``emitters/training.py``).

Maps are channels-last ``[N][H][W][C]`` (b1: C packed in words). The taps of each axis
(``boldc.ops.resize_ops.axis_taps``: source rows and columns with their float64 weights) are
computed at compile time and emitted as static tables; weights are hexadecimal double literals,
so the C multiplies by the interpreter's exact weights. With -ffp-contract=off every product and
sum is rounded as numpy rounds it, in the same order, so the results are the interpreter's bits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from boldc.backend.cblock import Block
from boldc.backend.cexpr import Expr, Var, div, mod
from boldc.backend.ckernel import CKernel, COp
from boldc.backend.kernels import _r
from boldc.backend.layout import BATCH
from boldc.ops.resize_ops import AxisTaps, hw_taps

PER_LINE = {"long": 16, "double": 4}  # table entries per line of C


def _table(b: Block, name: str, ctype: str, values: Sequence[str]) -> None:
    k = PER_LINE[ctype]
    lines = [", ".join(values[i:i + k]) for i in range(0, len(values), k)]
    b.decl(f"static const {ctype} {name}[{len(values)}] = {{", *(f"    {line}," for line in lines), "};")


def _tables(b: Block, axis: str, taps: AxisTaps, weights: bool) -> None:
    """bd_<axis>i<k>[o] (source positions) and, with ``weights``, bd_<axis>w<k>[o] for every tap k."""
    for k in range(taps.taps):
        _table(b, f"bd_{axis}i{k}", "long", [str(int(i)) for i in taps.index[:, k]])
        if weights:
            _table(b, f"bd_{axis}w{k}", "double", [float(w).hex() for w in taps.weight[:, k]])


def _at(axis: str, k: int, o: Expr, extent: int) -> Var:
    """The source position of tap k of output position ``o`` (a table read of range [0, extent))."""
    return Var(f"bd_{axis}i{k}[{o}]", 0, extent - 1)


def _weight(axis: str, k: int, o: Expr) -> str:
    return f"bd_{axis}w{k}[{o}]"


def resize(cop: COp) -> CKernel:
    """nearest: each output pixel a copy of its source pixel's channel run (words for b1);
    linear: per channel r0 = w0·x[i0, j0] + w1·x[i0, j1], r1 likewise on row i1, y = f32(v0·r0 + v1·r1)
    in double (``resize_ops.interpolate``)."""
    x, y = cop.ins[0], cop.out
    _, c, h, w = x.shape
    _, _, oh_len, ow_len = y.shape
    rows, cols = hw_taps(cop.attrs, (h, w))
    linear = cop.attrs["mode"] == "linear"
    units = y.layout.storage_dims[-1]  # channels (words for b1) per pixel
    b = Block()
    _tables(b, "h", rows, linear)
    _tables(b, "w", cols, linear)
    with b.loop("bd_p", y.lead * (oh_len * ow_len), y.lead * (oh_len * ow_len * units)) as p:
        n = b.let("bd_n", div(p, oh_len * ow_len))
        oh = b.let("bd_oh", mod(div(p, ow_len), oh_len))
        ow = b.let("bd_ow", mod(p, ow_len))
        b.decl(f"{y.ctype} *bd_o = {y.name} + {p * units};")

        def src(kh: int, kw: int) -> str:
            return f"{x.name} + {x.layout.offset([n, 0, _at('h', kh, oh, h), _at('w', kw, ow, w)])[0]}"

        if linear:
            _interpolate(b, c, [[src(kh, kw) for kw in range(2)] for kh in range(2)], oh, ow)
        else:
            b(f"memcpy(bd_o, {src(0, 0)}, sizeof({y.ctype}) * {units});")
    return CKernel(b.text())


def _interpolate(b: Block, c: int, sources: list[list[str]], oh: Expr, ow: Expr) -> None:
    """bd_o[ch] for every channel from the four source pixels ``sources[kh][kw]``."""
    b.decl(*(f"const float *bd_x{kh}{kw} = {sources[kh][kw]};" for kh in range(2) for kw in range(2)))
    with b.loop("bd_c", c) as ch:
        for kh in range(2):
            b.decl(f"const double bd_r{kh} = {_weight('w', 0, ow)} * (double)bd_x{kh}0[{ch}] + "
                   f"{_weight('w', 1, ow)} * (double)bd_x{kh}1[{ch}];")
        b(f"bd_o[{ch}] = (float)({_weight('h', 0, oh)} * bd_r0 + {_weight('h', 1, oh)} * bd_r1);")


def resize_grad(cop: COp) -> CKernel:
    """The transpose, in double and in the interpreter's order (``resize_ops.scatter_back``):
    t[n, oh, j] = Σ over ow ascending, taps in order, of ww·dy[n, oh, ow] (rows in parallel); then
    acc[n, i, j] = Σ over oh ascending, taps in order, of wh·t[n, oh, j] (columns in parallel);
    dx = f32(acc). Scratch: t and acc."""
    dy, dx = cop.ins[0], cop.out
    _, c, h, w = dx.shape
    _, _, oh_len, ow_len = dy.shape
    rows, cols = hw_taps(cop.attrs, (h, w))
    weighted = cop.attrs["mode"] == "linear"  # nearest taps have weight 1
    max_n = cop.max_batch if dy.shape[0] == BATCH else dy.shape[0]
    t_count, acc_count = max_n * oh_len * w * c, max_n * h * w * c
    b = Block()
    _tables(b, "h", rows, weighted)
    _tables(b, "w", cols, weighted)
    b.decl("double *bd_t = (double *)scratch;", f"double *bd_acc = (double *)(scratch + {_r(8 * t_count)});")
    with b.loop("bd_i", dy.lead * (oh_len * w * c)) as i:
        b(f"bd_t[{i}] = 0.0;")
    with b.loop("bd_i", dy.lead * (h * w * c)) as i:
        b(f"bd_acc[{i}] = 0.0;")

    with b.loop("bd_r", dy.lead * oh_len, dy.lead * (oh_len * ow_len * c)) as r:  # row r = n·OH + oh
        with b.loop("bd_ow", ow_len) as ow:
            b.decl(f"const float *bd_d = {dy.name} + {(r * ow_len + ow) * c};")
            _scatter(b, "w", cols, ow, c, weighted, "bd_t", lambda k: (r * w + _at("w", k, ow, w)) * c,
                     lambda ch: f"(double)bd_d[{ch}]")
    with b.loop("bd_q", dy.lead * w, dy.lead * (h * w * c)) as q:  # column q = n·W + j
        n = b.let("bd_n", div(q, w))
        j = b.let("bd_j", mod(q, w))
        with b.loop("bd_oh", oh_len) as oh:
            b.decl(f"const double *bd_s = bd_t + {((n * oh_len + oh) * w + j) * c};")
            _scatter(b, "h", rows, oh, c, weighted, "bd_acc", lambda k: ((n * h + _at("h", k, oh, h)) * w + j) * c,
                     lambda ch: f"bd_s[{ch}]")
    with b.loop("bd_i", dy.lead * (h * w * c)) as i:
        b(f"{dx.name}[{i}] = (float)bd_acc[{i}];")
    return CKernel(b.text(), scratch_bytes=_r(8 * t_count) + _r(8 * acc_count))


def _scatter(b: Block, axis: str, taps: AxisTaps, o: Expr, c: int, weighted: bool, dst: str,
             run: Callable[[int], Expr], value: Callable[[Expr], str]) -> None:
    """dst[run(k) + ch] += weight of tap k at ``o`` · value(ch), for every channel ch and tap k in
    order (nearest: weight 1, no product)."""
    for k in range(taps.taps):
        b.decl(f"double *{dst}{k} = {dst} + {run(k)};")
    with b.loop("bd_c", c) as ch:
        for k in range(taps.taps):
            term = f"{_weight(axis, k, o)} * {value(ch)}" if weighted else value(ch)
            b(f"{dst}{k}[{ch}] += {term};")
