"""C emission of the pools and their gradients (``emitters/forward.py``, ``emitters/training.py``).

Maps are channels-last ``[N][H][W][C]`` (b1: C packed in words). One loop runs over the
output pixels ``p = (b*OH + oh)*OW + ow`` (split over threads where the pixels write
apart); the window taps of a pixel are ``ih = oh*sh - pt + i*dh``, ``iw = ow*sw - pl + j*dw``,
and taps outside the input are skipped: for max that is "padding never wins", for OR
"padding is F", for the average the sum of the positions inside. Bounds tests that the
ranges of the loop variables decide (cexpr) are not emitted, nor are counts that are
constants.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from boldc.backend.cblock import Block, loop_var
from boldc.backend.cexpr import Const, Expr, Var, div, inside, mod
from boldc.backend.ckernel import CKernel, COp, CTensor


@dataclass(frozen=True)
class Window:
    """Pooling geometry: batch N (``n`` or a number), input H x W, output OH x OW,
    kernel, stride, dilation, pads (top, left, bottom, right)."""

    N: Expr
    H: int
    W: int
    OH: int
    OW: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pt: int
    pl: int
    pb: int
    pr: int


def window(cop: COp, x_hw, y_hw) -> Window:
    a = cop.attrs
    dh, dw = a.get("dilation", [1, 1])
    return Window(cop.ins[0].lead, x_hw[0], x_hw[1], y_hw[0], y_hw[1], a["kernel"][0], a["kernel"][1],
                  a["stride"][0], a["stride"][1], dh, dw, *a["pad"])


@dataclass(frozen=True)
class Pixel:
    """One output pixel: its flat index p, batch b and position (oh, ow)."""

    p: Expr
    b: Expr
    oh: Expr
    ow: Expr


@contextmanager
def pixels(b: Block, g: Window, work: Expr | None) -> Iterator[Pixel]:
    """The loop over every output pixel (``work``: the elements it writes, for threads)."""
    with b.loop("bd_p", g.N * (g.OH * g.OW), work) as p:
        yield Pixel(p, b.let("bd_b", div(p, g.OH * g.OW)), b.let("bd_oh", mod(div(p, g.OW), g.OH)),
                    b.let("bd_ow", mod(p, g.OW)))


@contextmanager
def taps(b: Block, g: Window, px: Pixel) -> Iterator[tuple[Expr, Expr]]:
    """The loops over the pixel's window taps inside the input: yields (ih, iw)."""
    with b.loop("bd_i", g.kh) as i:
        ih = b.let("bd_ih", px.oh * g.sh - g.pt + i * g.dh)
        with b.when(inside(ih, 0, g.H)):
            with b.loop("bd_j", g.kw) as j:
                iw = b.let("bd_iw", px.ow * g.sw - g.pl + j * g.dw)
                with b.when(inside(iw, 0, g.W)):
                    yield ih, iw


def _count(b: Block, name: str, loop: str, taps_: int, position, lo: int, hi: int) -> Expr:
    """How many taps t in [0, taps_) have lo <= position(t) < hi: a constant when the
    ranges decide it for every tap, else a counting loop into ``name``."""
    test = inside(position(loop_var(loop, taps_)), lo, hi)
    if isinstance(test, bool):
        return Const(taps_ if test else 0)
    b.decl(f"long {name} = 0;")
    with b.loop(loop, taps_):  # its variable is the one the test was made of
        b(f"{name} += {test};")
    return Var(name, 0, taps_)


def window_count(b: Block, g: Window, px: Pixel, include_pad: bool) -> str:
    """The divisor of an average pool, a double C expression: the taps inside the input,
    or inside the padded input with ``include_pad``."""
    rows = _count(b, "bd_rows", "bd_i", g.kh, lambda i: px.oh * g.sh - g.pt + i * g.dh,
                  -g.pt if include_pad else 0, g.H + g.pb if include_pad else g.H)
    cols = _count(b, "bd_cols", "bd_j", g.kw, lambda j: px.ow * g.sw - g.pl + j * g.dw,
                  -g.pl if include_pad else 0, g.W + g.pr if include_pad else g.W)
    count = rows * cols
    return f"{count.value}.0" if isinstance(count, Const) else f"(double)({count})"


def _bit_or_value(x: CTensor, idx: list) -> str:
    """A tap's value as a double: the number, or +-1 for b1."""
    v = x.load(idx)
    return f"({v} ? 1.0 : -1.0)" if x.dtype.is_bool else f"(double){v}"


# --- forward -----------------------------------------------------------------------------------


def pool(cop: COp, mode: str) -> CKernel:
    """Windowed pooling: ``mode`` "max" (float/int; padding never wins, a NaN once seen
    stays, as numpy's max), "or" (b1: OR of the words) or "avg" (numbers, b1 read as
    +-1, sum in double over the taps inside the input, divided by the count the
    ``count_include_pad`` rule gives)."""
    x, y = cop.ins[0], cop.out
    g = window(cop, x.shape[2:], y.shape[2:])
    units = y.layout.storage_dims[-1]  # channels (words for b1) per pixel
    b = Block()
    with pixels(b, g, g.N * (g.OH * g.OW * units)) as px:
        b.decl(f"{y.ctype} *bd_o = {y.name} + {px.p * units};")
        if mode == "avg":
            count = window_count(b, g, px, bool(cop.attrs.get("count_include_pad", False)))
            with b.loop("bd_c", x.shape[1]) as c:
                b.decl("double bd_acc = 0.0;")
                with taps(b, g, px) as (ih, iw):
                    b(f"bd_acc += {_bit_or_value(x, [px.b, c, ih, iw])};")
                b(f"bd_o[{c}] = (float)(bd_acc / {count});")
        else:
            init = "0" if mode == "or" else _lowest(x)
            with b.loop("bd_c", units) as c:
                b(f"bd_o[{c}] = {init};")
            with taps(b, g, px) as (ih, iw):
                b.decl(f"const {x.ctype} *bd_v = {x.name} + {x.layout.offset([px.b, 0, ih, iw])[0]};")
                with b.loop("bd_c", units) as c:
                    o, v = f"bd_o[{c}]", f"bd_v[{c}]"
                    b(f"{o} |= {v};" if mode == "or" else f"if ({_keeps_nan(x, o)}!({v} <= {o})) {o} = {v};")
    return CKernel(b.text())


def _keeps_nan(x: CTensor, best: str) -> str:
    """The test that keeps a NaN once it is the max (floats only: an integer is never NaN)."""
    return f"{best} == {best} && " if x.dtype.is_float else ""


def _lowest(x: CTensor) -> str:
    """Where a max starts: -inf, or the integer type's minimum."""
    return "-HUGE_VALF" if x.dtype.is_float else f"({x.ctype}){x.dtype.int_range[0]}"


def global_pool(cop: COp, mode: str) -> CKernel:
    """Mean ("avg", in double, summed in row-major order) or max over H, W of a
    channels-last map; the max of a b1 map is the OR of its words."""
    x, y = cop.ins[0], cop.out
    _, c, h, w = x.shape
    b = Block()
    with b.loop("bd_b", x.lead) as bb:
        if mode == "max" and x.dtype.is_bool:
            with b.loop("bd_c", x.layout.storage_dims[-1]) as ch:
                b.decl("uint64_t bd_m = 0;")
                with _spatial(b, h, w) as (hh, ww):
                    b(f"bd_m |= {x.name}[{x.layout.offset([bb, 0, hh, ww])[0] + ch}];")
                b(f"{y.name}[{y.layout.offset([bb, 0, 0, 0])[0] + ch}] = bd_m;")
        else:
            _global_channels(b, x, y, bb, mode)
    return CKernel(b.text())


def _global_channels(b: Block, x: CTensor, y: CTensor, bb: Expr, mode: str) -> None:
    """Each channel's mean or max over the map of sample ``bb``."""
    _, c, h, w = x.shape
    with b.loop("bd_c", c) as ch:
        if mode == "avg":
            b.decl("double bd_acc = 0.0;")
            with _spatial(b, h, w) as (hh, ww):
                b(f"bd_acc += {_bit_or_value(x, [bb, ch, hh, ww])};")
            b(f"{y.name}[{y.layout.offset([bb, ch, 0, 0])[0]}] = (float)(bd_acc / {h * w}.0);")
        else:
            b.decl(f"{y.ctype} bd_m = {_lowest(x)};")
            with _spatial(b, h, w) as (hh, ww):
                b.decl(f"const {x.ctype} bd_v = {x.load([bb, ch, hh, ww])};")
                b(f"if ({_keeps_nan(x, 'bd_m')}!(bd_v <= bd_m)) bd_m = bd_v;")
            b(f"{y.name}[{y.layout.offset([bb, ch, 0, 0])[0]}] = bd_m;")


@contextmanager
def _spatial(b: Block, h: int, w: int) -> Iterator[tuple[Expr, Expr]]:
    """Loops over the rows and columns of a map."""
    with b.loop("bd_h", h) as hh, b.loop("bd_x", w) as ww:
        yield hh, ww


# --- gradients ---------------------------------------------------------------------------------


def _zero(b: Block, dx: CTensor) -> None:
    with b.loop("bd_i", dx.layout.count_expr()) as i:
        b(f"{dx.name}[{i}] = 0.0f;")


_CHUNK = 256  # channels per pass of maxpool2d_grad: its per-channel arrays stay a few KiB of stack


def maxpool2d_grad(cop: COp) -> CKernel:
    """dx = 0, then each dy to the first maximal element of its window (row-major; b1
    read as +-1; taps outside the input never win; a NaN, once met, wins); overlapping
    windows add up, so the pixels run in parallel only when the windows are disjoint.

    Per pixel, the input pixels of the taps inside the input are listed in row-major
    order (``bd_q``, ``bd_n`` of them); then, per chunk of channels, each listed tap runs
    over the chunk with the channel innermost (contiguous: the compare and select
    vectorise): the first sets each channel's running ``best`` and ``at`` (its place in
    the list), a later one takes them where ``best == best && !(v <= best)`` (larger, or
    NaN while no NaN was met; b1 compares its bits, ordered as +-1); then each listed tap
    gives dy to the channels where it is ``at``. A window of one tap gives dy to it."""
    dy, x = cop.ins
    dx = cop.out
    g = window(cop, x.shape[2:], dy.shape[2:])
    c = dx.shape[1]
    disjoint = g.sh >= (g.kh - 1) * g.dh + 1 and g.sw >= (g.kw - 1) * g.dw + 1
    ntaps = g.kh * g.kw
    b = Block()
    if not (disjoint and _covered(g)):  # else each element of dx is a tap of one window: written once
        _zero(b, dx)
    with pixels(b, g, g.N * (g.OH * g.OW * c) if disjoint else None) as px:
        width = min(c, _CHUNK)
        b.decl(f"long bd_n = 0, bd_q[{ntaps}];", f"const float *bd_g = {dy.name} + {px.p * c};")
        if ntaps > 1:
            value = _max_value_type(x)
            b.decl(f"{value} bd_best[{width}];", f"{_tap_type(value, ntaps)} bd_at[{width}];")
            if disjoint:
                b.decl(f"float bd_d[{width}];")
        with taps(b, g, px) as (ih, iw):
            b(f"bd_q[bd_n++] = {(px.b * g.H + ih) * g.W + iw};")
        full, rest = divmod(c, _CHUNK)
        if full:
            with b.loop("bd_k", full) as k:
                _max_chunk(b, x, dx, ntaps, k * _CHUNK, _CHUNK, disjoint)
        if rest:
            _max_chunk(b, x, dx, ntaps, Const(full * _CHUNK), rest, disjoint)
    return CKernel(b.text())


def _max_chunk(b: Block, x: CTensor, dx: CTensor, ntaps: int, c0: Expr, width: int, disjoint: bool) -> None:
    """maxpool2d_grad on channels [c0, c0 + width) of a pixel whose taps are listed.
    Every declaration is inside a loop's braces: the text may stand twice in one scope."""
    value = _max_value_type(x)
    at = _tap_type(value, ntaps)
    if ntaps > 1:
        units = x.layout.storage_dims[-1]  # per input pixel (b1: words; c0 % 64 == 0)
        # The first tap and the later ones are two loops under tests of bd_s: an inner
        # loop alone in the loop over the taps is unrolled and jammed by gcc -O3 into one
        # that does not vectorise.
        with b.loop("bd_s", Var("bd_n", 0, ntaps)) as s:
            q = Var(f"bd_q[{s}]", 0, None)
            b.decl(f"const {x.ctype} *bd_v = {x.name} + {q * units + x.layout.offset([0, c0, 0, 0])[0]};",
                   f"const {at} bd_t = {s};")
            with b.when("bd_s == 0"), b.loop("bd_c", width) as ch:
                b(f"bd_best[{ch}] = {x.layout.load('bd_v', [0, ch, 0, 0])};", f"bd_at[{ch}] = 0;")
            with b.when("bd_s > 0"), b.loop("bd_c", width) as ch:
                b.decl(f"const {value} bd_u = {x.layout.load('bd_v', [0, ch, 0, 0])}, bd_m = bd_best[{ch}];",
                       f"const {at} bd_a = bd_at[{ch}];",
                       f"const int bd_win = {_keeps_nan(x, 'bd_m')}!(bd_u <= bd_m);")
                b(f"bd_best[{ch}] = bd_win ? bd_u : bd_m;", f"bd_at[{ch}] = bd_win ? bd_t : bd_a;")
        if disjoint:
            # dx = 0; dx += dy is 0.0f + dy (a -0 becomes +0), added here for every
            # channel: an add under the select stops the vectorisation without masks (AVX2)
            with b.loop("bd_c", width) as ch:
                b(f"bd_d[{ch}] = 0.0f + bd_g[{c0 + ch}];")
    with b.loop("bd_s", Var("bd_n", 0, ntaps)) as s:
        b.decl(f"float *bd_o = {dx.name} + {Var(f'bd_q[{s}]', 0, None) * dx.shape[1] + c0};")
        if ntaps > 1:
            b.decl(f"const {at} bd_t = {s};")
        with b.loop("bd_c", width) as ch:
            dy = f"bd_g[{c0 + ch}]"
            if ntaps == 1:  # windows of one tap are disjoint
                b(f"bd_o[{ch}] = 0.0f + {dy};")
            elif disjoint:  # this pixel alone writes the tap
                b(f"bd_o[{ch}] = bd_at[{ch}] == bd_t ? bd_d[{ch}] : 0.0f;")
            else:  # dx is never -0 (it starts +0; sums round to nearest): adding +0 leaves it
                b(f"bd_o[{ch}] += bd_at[{ch}] == bd_t ? {dy} : 0.0f;")


def _max_value_type(x: CTensor) -> str:
    """The C type maxpool2d_grad compares x in: its own, or 0/1 bytes for b1."""
    return "uint8_t" if x.dtype.is_bool else x.ctype


def _tap_type(value: str, ntaps: int) -> str:
    """The C type of a tap's place in its list: as wide as the values compared (the
    select vectorises lane for lane) when it holds ntaps - 1."""
    width = {"float": 32, "int32_t": 32, "int16_t": 16}.get(value, 8)
    return f"int{width}_t" if ntaps <= 1 << (width - 1) else "int32_t"


def _covered(g: Window) -> bool:
    """Whether every input position is a tap of some window."""
    rows = {oh * g.sh - g.pt + i * g.dh for oh in range(g.OH) for i in range(g.kh)}
    cols = {ow * g.sw - g.pl + j * g.dw for ow in range(g.OW) for j in range(g.kw)}
    return rows >= set(range(g.H)) and cols >= set(range(g.W))


def avgpool2d_grad(cop: COp) -> CKernel:
    """dx = 0, then each dy / count (the forward's count) added to the counted taps of
    its window, in double."""
    dy, dx = cop.ins[0], cop.out
    g = window(cop, dx.shape[2:], dy.shape[2:])
    c = dx.shape[1]
    b = Block()
    _zero(b, dx)
    with pixels(b, g, None) as px:  # overlapping windows: one thread
        count = window_count(b, g, px, bool(cop.attrs["count_include_pad"]))
        with taps(b, g, px) as (ih, iw):
            b.decl(f"float *bd_o = {dx.name} + {((px.b * g.H + ih) * g.W + iw) * c};")
            with b.loop("bd_c", c) as ch:
                b(f"bd_o[{ch}] += (float)((double){dy.name}[{px.p * c + ch}] / {count});")
    return CKernel(b.text())
