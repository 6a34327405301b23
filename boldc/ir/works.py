"""The vocabulary in which an op declares its cost (docs/energy.md): operations and data streams.

An op's ``cost`` hook (boldc/ops/) receives a ``CostContext`` (its operands and results as
``TensorInfo``: concrete shape, storage bits, and kind) and returns a list of works:

- ``ConvWork``: a convolution-shaped computation (a linear layer is the 1x1 case): the
  forward pass, the input signal or the weight signal. The energy model tiles it over the
  memory levels and counts its accesses (``boldc.energymodel.tiling``).
- ``StreamWork``: an elementwise op (activation, pooling, add, optimizer update, ...): it
  reads and writes its tensors once, at the level where their data lives.
- ``NoWork``: an explicit zero, with the reason (a reshape is a view: no data moves).

Each work carries its operation counts (``Ops``: arithmetic and logic operations). The
counting rules live here, once:

- an arithmetic operation (add, multiply, compare, exp, ...) on real values is one
  arithmetic operation;
- an addition (or a comparison, a subtraction) of n-bit integers costs 2n - 1 logic
  operations; integer backward signals (``quantize_signal``) are n-bit integers, so
  their additions are logic operations too;
- XNOR/XOR, OR, NOT and a conditional negation (multiplying by e(w) = ±1) cost one logic
  operation each;
- a multiply-accumulate of two real values is 2 arithmetic operations.

Nothing here knows a particular op; the energy model (boldc/energymodel/) prices the works.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

BIT, INT, REAL = "bit", "int", "real"
FORWARD, BACKWARD, UPDATE = "forward", "backward", "update"
PHASES = (FORWARD, BACKWARD, UPDATE)


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as the energy model sees it: static shape, storage bits per element,
    and kind ("bit": b1 read as ±1; "int": integers and fixed-point signals; "real")."""

    shape: tuple[int, ...]
    bits: int
    kind: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> float:
        return self.numel * self.bits / 8

    def with_shape(self, shape) -> TensorInfo:
        return replace(self, shape=tuple(shape))


@dataclass(frozen=True)
class Ops:
    """Operation counts: arithmetic operations and logic operations."""

    arith: int = 0
    logic: int = 0

    def __add__(self, other: Ops) -> Ops:
        return Ops(self.arith + other.arith, self.logic + other.logic)

    def times(self, k: int) -> Ops:
        return Ops(self.arith * k, self.logic * k)


NO_OPS = Ops()
ARITH = Ops(arith=1)
LOGIC = Ops(logic=1)


def add_op(out: TensorInfo) -> Ops:
    """One addition (or subtraction, or comparison) whose result has ``out``'s kind:
    1 arithmetic operation on reals, 2n - 1 logic operations on n-bit integers."""
    return ARITH if out.kind == REAL else Ops(logic=2 * out.bits - 1)


def mac_op(a: TensorInfo, b: TensorInfo, acc: TensorInfo) -> Ops:
    """One multiply-accumulate ``acc += a · b``. A b1 factor (±1) makes the product one
    logic operation (XNOR of two bits, or a conditional negation); two numbers need a
    multiplication. The accumulation is ``add_op(acc)``."""
    if a.kind == BIT or b.kind == BIT:
        return LOGIC + add_op(acc)
    return ARITH + add_op(acc)


def window_ops(per_window: int, combine: Ops) -> Ops:
    """A reduction over a window of ``per_window`` elements: per_window - 1 combines."""
    return combine.times(max(per_window - 1, 0))


# --- works -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvGeometry:
    """A convolution of ifmaps [n, c, h, w] with filters [m, c/groups, kh, kw] into
    ofmaps [n, m, ho, wo] (stride, dilation, pad = [top, left, bottom, right]).
    A linear layer [n, c] x [m, c] is the 1x1 case with h = w = ho = wo = 1."""

    n: int
    c: int
    m: int
    h: int
    w: int
    ho: int
    wo: int
    kh: int = 1
    kw: int = 1
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    groups: int = 1

    @property
    def macs(self) -> int:
        """Multiply-accumulates: n·m·ho·wo·(c/groups)·kh·kw (the same for the forward
        pass and both backward convolutions)."""
        return self.n * self.m * self.ho * self.wo * (self.c // self.groups) * self.kh * self.kw


@dataclass(frozen=True)
class ConvWork:
    """A convolution in one of three roles, with its three streams named ``i`` the
    ifmaps (left operand, L0-A), ``f`` the filters (right operand, L0-B), ``o`` the
    outputs / partial sums (L0-C):

    - forward:       i = x,  f = W,  o = y
    - input_signal:  i = dy, f = W,  o = dx   (roles of C and M swap)
    - weight_signal: i = x,  f = dy, o = dW

    ``extra`` are tensors read once from DRAM (a bias vector; a fused epilogue's operands).
    ``results``: what leaves the output buffer instead of ``o`` when epilogues are fused
    (docs/energy.md, "Fusion": the partial sums stay at o's width in L0-C, the results
    move up the hierarchy at theirs); empty when nothing is fused."""

    label: str
    phase: str
    kind: str
    geom: ConvGeometry
    i: TensorInfo
    f: TensorInfo
    o: TensorInfo
    ops: Ops
    extra: tuple[TensorInfo, ...] = ()
    results: tuple[TensorInfo, ...] = ()
    epilogues: tuple[str, ...] = ()  # the ops fused after it, in order (for the report)


@dataclass(frozen=True)
class StreamWork:
    """An elementwise op: reads ``reads`` and writes ``writes`` once each."""

    label: str
    phase: str
    reads: tuple[TensorInfo, ...]
    writes: tuple[TensorInfo, ...]
    ops: Ops


@dataclass(frozen=True)
class NoWork:
    """An explicit zero cost."""

    label: str
    phase: str
    reason: str


Work = ConvWork | StreamWork | NoWork


@dataclass
class CostContext:
    """What a cost hook sees: its operands and results (each at the width its IR type
    declares), its attributes, and ``phase``: "backward" when the op computes backward
    signals (a gradient op, a sum of gradients, a reshaped gradient), else "forward".
    ``operand_types``/``result_types`` are the IR types and ``info(type)`` sees another
    tensor the same way (a fused op costs its parts with them)."""

    operands: list[TensorInfo]
    results: list[TensorInfo]
    attrs: dict[str, Any]
    phase: str = FORWARD
    operand_types: list = field(default_factory=list)
    result_types: list = field(default_factory=list)
    info: Callable[[Any], TensorInfo] | None = None

    def part(self, operands: list, results: list, attrs: dict[str, Any]) -> CostContext:
        """The context of a part of this op (a fused op's head or epilogue), by IR types."""
        return CostContext([self.info(t) for t in operands], [self.info(t) for t in results], attrs, self.phase,
                           list(operands), list(results), self.info)

    @property
    def label(self) -> str:
        """The item label of an op's own work: "forward", or "signal" in the backward pass."""
        return "forward" if self.phase == FORWARD else "signal"


# --- the shapes of work most ops have ---------------------------------------------------------


def conv_forward(geom: ConvGeometry, x: TensorInfo, w: TensorInfo, y: TensorInfo,
                 bias: TensorInfo | None = None) -> ConvWork:
    """y = conv(x, W) (+ bias: one addition per output, the bias read once)."""
    ops = mac_op(x, w, y).times(geom.macs)
    extra: tuple[TensorInfo, ...] = ()
    if bias is not None:
        ops = ops + add_op(y).times(y.numel)
        extra = (bias,)
    return ConvWork("forward", FORWARD, "forward", geom, x, w, y, ops, extra)


def input_signal(geom: ConvGeometry, dy: TensorInfo, w: TensorInfo, dx: TensorInfo, acc: TensorInfo | None = None,
                 extra: tuple[TensorInfo, ...] = ()) -> ConvWork:
    """dx = Conv(Rot180(W), dy) (g = Σ_j z·e(W): additions only when W is b1), accumulated
    at ``acc``'s kind and width (default dx's)."""
    ops = mac_op(dy, w, acc or dx).times(geom.macs)
    return ConvWork("input signal", BACKWARD, "input_signal", geom, dy, w, dx, ops, extra)


def weight_signal(geom: ConvGeometry, dy: TensorInfo, x: TensorInfo, dw: TensorInfo, acc: TensorInfo | None = None,
                  extra: tuple[TensorInfo, ...] = ()) -> ConvWork:
    """dW = Conv(x, dy) (q = Σ_k z·e(x): additions only when x is b1), accumulated at
    ``acc``'s kind and width (default dW's)."""
    ops = mac_op(dy, x, acc or dw).times(geom.macs)
    return ConvWork("weight signal", BACKWARD, "weight_signal", geom, x, dy, dw, ops, extra)


def conv_geometry(x: TensorInfo, w: TensorInfo, y: TensorInfo, attrs: dict) -> ConvGeometry:
    """The geometry of x [n, c, h, w] convolved with W [m, c/g, kh, kw] into y [n, m, ho, wo]."""
    n, c, h, wd = x.shape
    m, _, kh, kw = w.shape
    return ConvGeometry(n, c, m, h, wd, y.shape[2], y.shape[3], kh, kw, tuple(attrs["stride"]),
                        tuple(attrs["dilation"]), tuple(attrs["pad"]), attrs["groups"])


def linear_geometry(x: TensorInfo, w: TensorInfo) -> ConvGeometry:
    """x [..., c] (leading axes flattened into n) times W [m, c]."""
    return ConvGeometry(math.prod(x.shape[:-1]), x.shape[-1], w.shape[0], 1, 1, 1, 1)


def layer_geometry(x: TensorInfo, w: TensorInfo, y: TensorInfo, attrs: dict) -> ConvGeometry:
    """A convolution's geometry for rank-4 weights, else a linear layer's."""
    return conv_geometry(x, w, y, attrs) if len(w.shape) == 4 else linear_geometry(x, w)


def layer_forward(ctx: CostContext) -> list[Work]:
    """A layer ``y = layer(x, W, bias?)`` (convolution, or linear as the 1x1 case): its
    forward convolution. In a backward pass (the convolution that is the input signal of
    a transposed convolution) the same loop nest, labelled the input signal."""
    x, w, y = ctx.operands[0], ctx.operands[1], ctx.results[0]
    bias = ctx.operands[2] if len(ctx.operands) > 2 else None
    work = conv_forward(layer_geometry(x, w, y, ctx.attrs), x, w, y, bias)
    return [work if ctx.phase == FORWARD else replace(work, label="input signal", phase=ctx.phase)]


def transposed_forward(ctx: CostContext) -> list[Work]:
    """A transposed convolution ``y = convᵀ(x, W) (+ bias)``, W [c_in, c_out/g, kh, kw]: the
    loop nest of a convolution's input signal (x in the role of dy, y in that of dx), two
    arithmetic operations per multiply-accumulate, one addition per output for the bias."""
    x, w, y = ctx.operands[0], ctx.operands[1], ctx.results[0]
    work = input_signal(conv_geometry(y, w, x, ctx.attrs), x, w, y)
    ops, extra = work.ops, ()
    if len(ctx.operands) > 2:
        ops, extra = ops + add_op(y).times(y.numel), (ctx.operands[2],)
    return [replace(work, label=ctx.label, phase=ctx.phase, ops=ops, extra=extra)]


def stream(label: str, phase: str, reads, writes, ops: Ops) -> StreamWork:
    return StreamWork(label, phase, tuple(reads), tuple(writes), ops)


def pointwise(ctx: CostContext, per_output: Ops, label: str | None = None) -> StreamWork:
    """Reads every operand, writes every result, ``per_output`` operations per element of
    the (first) result; in the op's phase."""
    return StreamWork(label or ctx.label, ctx.phase, tuple(ctx.operands), tuple(ctx.results),
                      per_output.times(ctx.results[0].numel))


def per_element(ctx: CostContext, per: Ops) -> list[Work]:
    """A hook's answer for an op that reads its operands, writes its result and does
    ``per`` operations per element of the result."""
    return [pointwise(ctx, per)]


def copy(src: TensorInfo, out: TensorInfo, label: str, phase: str) -> StreamWork:
    """A data copy (concat, slice, transpose, pad): reads the elements it keeps, writes
    the result; no operation."""
    return stream(label, phase, (src,), (out,), NO_OPS)


def view(ctx: CostContext, reason: str = "a view of its operand: no data moves") -> list[Work]:
    """A hook's answer for a view (reshape, flatten): nothing moves."""
    return [NoWork(ctx.label, ctx.phase, reason)]


class Nothing:
    """A cost hook that declares an explicit zero (for ops that compute nothing)."""

    def __init__(self, reason: str):
        self.reason = reason

    def __call__(self, ctx: CostContext) -> list[Work]:
        return [NoWork("nothing", ctx.phase, self.reason)]
