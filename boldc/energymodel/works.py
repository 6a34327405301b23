"""What an op's ``cost`` hook declares (SPEC §6): its operations and its data streams.

A hook receives a ``CostContext`` (its operands and results as ``TensorInfo``: concrete
shape, storage bits, and kind) and returns a list of works:

- ``ConvWork``: a convolution-shaped computation (a linear layer is the 1x1 case):
  forward, input signal or weight signal of SPEC §6.5. The generic model tiles it over
  the memory levels and counts its accesses (``boldc.energymodel.tiling``).
- ``StreamWork``: an elementwise op (activation, pooling, add, optimizer update, ...):
  it reads and writes its tensors once, at the level where their data lives (SPEC §6.7).
- ``NoWork``: an explicit zero, with the reason (a reshape is a view: no data moves).

Each work carries its operation counts (``Ops``: arithmetic and logic operations).
The counting rules live here, once:

- an arithmetic operation (add, multiply, compare, exp, ...) on real values is one
  arithmetic operation;
- an addition (or a comparison, a subtraction) of n-bit integers costs 2n - 1 logic
  operations (SPEC §6); backward signals of a Boolean model are n-bit fixed-point
  integers (``signal`` below), so their additions are logic operations too;
- XNOR/XOR, OR, NOT and a conditional negation (multiplying by e(w) = +-1) cost one
  logic operation each;
- a multiply-accumulate of two real values is 2 arithmetic operations.

Hooks of forward ops, asked with ``ctx.training``, also declare the backward works that
autodiff would insert for them (the same helpers the gradient ops' hooks call, so the
derived costs and those of a real ``@train_step`` agree by construction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

BIT, INT, REAL = "bit", "int", "real"
FORWARD, BACKWARD, UPDATE = "forward", "backward", "update"
PHASES = (FORWARD, BACKWARD, UPDATE)


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as the energy model sees it: static shape, storage bits per element,
    and kind ("bit": b1 read as +-1; "int": integers and fixed-point signals; "real")."""

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
    """One multiply-accumulate ``acc += a · b``. A b1 factor (+-1) makes the product one
    logic operation (XNOR of two bits, or a conditional negation); two numbers need a
    multiplication. The accumulation is ``add_op(acc)``."""
    if a.kind == BIT or b.kind == BIT:
        return LOGIC + add_op(acc)
    return ARITH + add_op(acc)


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


CONV_KINDS = ("forward", "input_signal", "weight_signal")


@dataclass(frozen=True)
class ConvWork:
    """A convolution in one of the SPEC §6.5 roles, with its three streams named as in
    the SPEC table: ``i`` the ifmaps (left operand, L0-A), ``f`` the filters (right
    operand, L0-B), ``o`` the outputs / partial sums (L0-C):

    - forward:       i = x,  f = W,  o = y
    - input_signal:  i = dy, f = W,  o = dx   (roles of C and M swap)
    - weight_signal: i = x,  f = dy, o = dW

    ``extra`` are small tensors read once from DRAM (a bias vector)."""

    label: str
    phase: str
    kind: str
    geom: ConvGeometry
    i: TensorInfo
    f: TensorInfo
    o: TensorInfo
    ops: Ops
    extra: tuple[TensorInfo, ...] = ()


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


@dataclass(frozen=True)
class SignalFormat:
    """How backward signals are stored and computed: a Boolean model trains with n-bit
    fixed-point signals (SPEC §6.6, W/A/G = 1/1/16), the float baseline with f32."""

    bits: int
    kind: str


@dataclass
class CostContext:
    """What a cost hook sees. ``phase``: "backward" when the op computes backward signals
    (a sum of gradients, a reshaped gradient), else "forward". ``training``: also declare
    the backward works of this forward op; ``needs[i]``: operand i needs a gradient."""

    operands: list[TensorInfo]
    results: list[TensorInfo]
    attrs: dict[str, Any]
    signal: SignalFormat
    training: bool = False
    needs: list[bool] = field(default_factory=list)
    phase: str = FORWARD

    def signal_like(self, t: TensorInfo) -> TensorInfo:
        """A backward signal with the shape of ``t``."""
        return TensorInfo(t.shape, self.signal.bits, self.signal.kind)

    def need(self, i: int) -> bool:
        return self.training and i < len(self.needs) and self.needs[i]


# --- layers (conv2d, linear and their Boolean / mixed forms) -----------------------------


def conv_geometry(x: TensorInfo, w: TensorInfo, y: TensorInfo, attrs: dict) -> ConvGeometry:
    n, c, h, wd = x.shape
    m, _, kh, kw = w.shape
    return ConvGeometry(n, c, m, h, wd, y.shape[2], y.shape[3], kh, kw, tuple(attrs["stride"]),
                        tuple(attrs["dilation"]), tuple(attrs["pad"]), attrs["groups"])


def linear_geometry(x: TensorInfo, w: TensorInfo) -> ConvGeometry:
    """x [..., c] (leading axes flattened into n) times W [m, c]."""
    return ConvGeometry(math.prod(x.shape[:-1]), x.shape[-1], w.shape[0], 1, 1, 1, 1)


def _geometry(x: TensorInfo, w: TensorInfo, y: TensorInfo, attrs: dict) -> ConvGeometry:
    return conv_geometry(x, w, y, attrs) if len(w.shape) == 4 else linear_geometry(x, w)


def layer_cost(ctx: CostContext) -> list[Work]:
    """A linear or convolution layer ``y = layer(x, W, bias?)``: the forward convolution;
    in training also the input signal (if x needs one), the weight signal and the bias
    signal, as autodiff inserts them."""
    x, w = ctx.operands[0], ctx.operands[1]
    y = ctx.results[0]
    bias = ctx.operands[2] if len(ctx.operands) > 2 else None
    geom = _geometry(x, w, y, ctx.attrs)
    works: list[Work] = [conv_forward(geom, x, w, y, bias)]
    dy = ctx.signal_like(y)
    if ctx.need(0):
        works.append(input_signal(geom, dy, w, ctx.signal_like(x)))
    if ctx.need(1):
        works.append(weight_signal(geom, dy, x, ctx.signal_like(w)))
    if bias is not None and ctx.need(2):
        works.append(channel_sum(dy, ctx.signal_like(bias), "bias signal"))
    return works


def conv_forward(geom: ConvGeometry, x: TensorInfo, w: TensorInfo, y: TensorInfo,
                 bias: TensorInfo | None = None) -> ConvWork:
    """y = conv(x, W) (+ bias: one addition per output, the bias read once)."""
    ops = mac_op(x, w, y).times(geom.macs)
    extra: tuple[TensorInfo, ...] = ()
    if bias is not None:
        ops = ops + add_op(y).times(y.numel)
        extra = (bias,)
    return ConvWork("forward", FORWARD, "forward", geom, x, w, y, ops, extra)


def input_signal(geom: ConvGeometry, dy: TensorInfo, w: TensorInfo, dx: TensorInfo) -> ConvWork:
    """dx = Conv(Rot180(W), dy) (SPEC §3: g = Σ_j z·e(W), additions only when W is b1)."""
    return ConvWork("input signal", BACKWARD, "input_signal", geom, dy, w, dx, mac_op(dy, w, dx).times(geom.macs))


def weight_signal(geom: ConvGeometry, dy: TensorInfo, x: TensorInfo, dw: TensorInfo) -> ConvWork:
    """dW = Conv(x, dy) (SPEC §3: q = Σ_k z·e(x), additions only when x is b1)."""
    return ConvWork("weight signal", BACKWARD, "weight_signal", geom, x, dy, dw, mac_op(dy, x, dw).times(geom.macs))


def grad_input_cost(ctx: CostContext) -> list[Work]:
    """Hook of the input-gradient ops (operands dy, W; result dx)."""
    dy, w = ctx.operands
    dx = ctx.results[0]
    return [input_signal(_geometry(dx, w, dy, ctx.attrs), dy, w, dx)]


def grad_weight_cost(ctx: CostContext) -> list[Work]:
    """Hook of the weight-gradient ops (operands dy, x; result dW)."""
    dy, x = ctx.operands
    dw = ctx.results[0]
    return [weight_signal(_geometry(x, dw, dy, ctx.attrs), dy, x, dw)]


def channel_sum(dy: TensorInfo, out: TensorInfo, label: str = "bias signal") -> StreamWork:
    """out[c] = Σ of dy over every other axis: numel(dy) - numel(out) additions."""
    return StreamWork(label, BACKWARD, (dy,), (out,), add_op(out).times(dy.numel - out.numel))


# --- elementwise ---------------------------------------------------------------------------


def pointwise(ctx: CostContext, per_output: Ops, label: str | None = None) -> StreamWork:
    """Reads every operand, writes every result, ``per_output`` operations per element
    of the (first) result; in the op's phase."""
    label = label or ("forward" if ctx.phase == FORWARD else "signal")
    return StreamWork(label, ctx.phase, tuple(ctx.operands), tuple(ctx.results), per_output.times(ctx.results[0].numel))


def stream(label: str, phase: str, reads, writes, ops: Ops) -> StreamWork:
    return StreamWork(label, phase, tuple(reads), tuple(writes), ops)


def view(ctx: CostContext, reason: str = "a view of its operand: no data moves") -> NoWork:
    return NoWork("forward" if ctx.phase == FORWARD else "signal", ctx.phase, reason)


def view_signal(reason: str = "a view of the signal: no data moves") -> NoWork:
    """The backward of a view (autodiff inserts a reshape of the signal)."""
    return NoWork("signal", BACKWARD, reason)


def view_cost(ctx: CostContext) -> list[Work]:
    """Hook of a view (flatten, reshape: row-major order is kept): nothing moves, and
    neither does its backward reshape."""
    return [view(ctx)] + ([view_signal()] if ctx.need(0) else [])


def max_pool(ctx: CostContext, window: int, combine: Ops) -> list[Work]:
    """A max over windows of ``window`` elements (``combine``: one comparison, or one OR
    on bits): window - 1 combines per output; backward: maxpool2d_grad."""
    x, y = ctx.operands[0], ctx.results[0]
    works: list[Work] = [pointwise(ctx, window_ops(window, combine))]
    if ctx.need(0):
        works.append(maxpool_grad(ctx.signal_like(y), x, ctx.signal_like(x), window))
    return works


class Nothing:
    """A cost hook that declares an explicit zero (for ops that compute nothing)."""

    def __init__(self, reason: str):
        self.reason = reason

    def __call__(self, ctx: CostContext) -> list[Work]:
        return [NoWork("nothing", ctx.phase, self.reason)]


def nothing(reason: str) -> Nothing:
    return Nothing(reason)


def unary(ctx: CostContext, forward: Ops, grad_reads: str, grad_per: Ops) -> list[Work]:
    """An elementwise activation y = f(x): ``forward`` operations per element; in training
    the gradient op autodiff inserts, reading δy and x (``grad_reads`` "x") or y ("y"),
    writing δx, ``grad_per`` operations per element."""
    x, y = ctx.operands[0], ctx.results[0]
    works: list[Work] = [pointwise(ctx, forward)]
    if ctx.need(0):
        other = x if grad_reads == "x" else y
        works.append(stream("signal", BACKWARD, (ctx.signal_like(y), other), (ctx.signal_like(x),),
                            grad_per.times(x.numel)))
    return works


def unary_grad(ctx: CostContext, per: Ops) -> StreamWork:
    """Hook of an activation's gradient op: reads its operands, writes δx."""
    return stream("signal", BACKWARD, ctx.operands, ctx.results, per.times(ctx.results[0].numel))


def prelu_slope_grad(dy: TensorInfo, x: TensorInfo, slope: TensorInfo, out: TensorInfo) -> StreamWork:
    """δslope = Σ δy·x over x < 0: a comparison, a multiplication and an accumulation per element."""
    return stream("slope signal", BACKWARD, (dy, x, slope), (out,), (ARITH.times(2) + add_op(out)).times(dy.numel))


def window_ops(per_window: int, combine: Ops) -> Ops:
    """A reduction over a window of ``per_window`` elements: per_window - 1 combines."""
    return combine.times(max(per_window - 1, 0))


def threshold_grad(dy: TensorInfo, x: TensorInfo, extras, dx: TensorInfo) -> StreamWork:
    """δx = δy · d(α(x - τ)) (SPEC §3): per element one subtraction x - τ at x's kind,
    the derivative by table lookup on the integer difference (not charged), and one
    multiplication by δy. Reads δy, x and the per-channel τ / ge."""
    return stream("signal", BACKWARD, (dy, x, *extras), (dx,), (add_op(x) + ARITH).times(dx.numel))


def relu_grad(dy: TensorInfo, x: TensorInfo, dx: TensorInfo) -> StreamWork:
    """δx = δy where x > 0: one comparison per element."""
    return stream("signal", BACKWARD, (dy, x), (dx,), add_op(x).times(dx.numel))


def maxpool_grad(dy: TensorInfo, x: TensorInfo, dx: TensorInfo, window: int) -> StreamWork:
    """Each δy goes to the maximum of its window: window - 1 comparisons on x to find
    it (one logic OR-tree step on b1) and one accumulation into δx."""
    find = window_ops(window, LOGIC if x.kind == BIT else add_op(x))
    return stream("signal", BACKWARD, (dy, x), (dx,), (find + add_op(dx)).times(dy.numel))


def avgpool_grad(dy: TensorInfo, dx: TensorInfo, window: int) -> StreamWork:
    """Each δy, scaled by 1/window (one multiplication), is added into its window."""
    return stream("signal", BACKWARD, (dy,), (dx,), (ARITH + add_op(dx).times(window)).times(dy.numel))


def global_avgpool_grad(dy: TensorInfo, dx: TensorInfo) -> StreamWork:
    """δx[n, c, h, w] = δy[n, c] / (H·W): one multiplication per element of δx."""
    return stream("signal", BACKWARD, (dy,), (dx,), ARITH.times(dx.numel))


def softmax_grad(dy: TensorInfo, y: TensorInfo, dx: TensorInfo) -> StreamWork:
    """δx = y·(δy - Σ δy·y): per element two multiplications, one accumulation and one
    subtraction."""
    return stream("signal", BACKWARD, (dy, y), (dx,), (ARITH.times(2) + add_op(dx).times(2)).times(dx.numel))


def batchnorm_grad_x(dy: TensorInfo, scale: TensorInfo, var: TensorInfo, dx: TensorInfo) -> StreamWork:
    """δx = δy · scale / sqrt(var + ε) (per-channel factor): one multiplication per element."""
    return stream("signal", BACKWARD, (dy, scale, var), (dx,), ARITH.times(dx.numel))


def batchnorm_grad_scale(dy: TensorInfo, x: TensorInfo, mean: TensorInfo, var: TensorInfo,
                         out: TensorInfo) -> StreamWork:
    """δscale[c] = Σ δy·(x - mean)/sqrt(var + ε): per element a subtraction, two
    multiplications and an accumulation."""
    per = add_op(x) + ARITH.times(2) + add_op(out)
    return stream("bn scale signal", BACKWARD, (dy, x, mean, var), (out,), per.times(dy.numel))


def batchnorm_backward(ctx: CostContext) -> list[Work]:
    """The backward works autodiff inserts for batchnorm(x, scale, bias, mean, var)."""
    x, scale, bias, mean, var = ctx.operands
    dy = ctx.signal_like(ctx.results[0])
    works: list[Work] = []
    if ctx.need(0):
        works.append(batchnorm_grad_x(dy, scale, var, ctx.signal_like(x)))
    if ctx.need(1):
        works.append(batchnorm_grad_scale(dy, x, mean, var, ctx.signal_like(scale)))
    if ctx.need(2):
        works.append(channel_sum(dy, ctx.signal_like(bias)))
    return works


def sum_to(dy: TensorInfo, out: TensorInfo) -> StreamWork:
    """A signal summed over the axes along which a forward operand was broadcast."""
    return stream("signal", BACKWARD, (dy,), (out,), add_op(out).times(dy.numel - out.numel))


def copy(src: TensorInfo, out: TensorInfo, label: str, phase: str) -> StreamWork:
    """A data copy (concat, slice, transpose, pad): reads the elements it keeps, writes
    the result; no operation."""
    return stream(label, phase, (src,), (out,), NO_OPS)


def gradient_sum(a: TensorInfo, b: TensorInfo, out: TensorInfo) -> StreamWork:
    """Two gradient contributions to one value added (the ``add`` autodiff inserts at
    a fan-out)."""
    return stream("gradient sum", BACKWARD, (a, b), (out,), add_op(out).times(out.numel))


# --- losses and optimizer -------------------------------------------------------------------


def loss(pred: TensorInfo, target: TensorInfo, out: TensorInfo, per_element: int) -> StreamWork:
    """A loss: ``per_element`` arithmetic operations per element of the prediction."""
    return stream("loss", FORWARD, (pred, target), (out,), ARITH.times(per_element * pred.numel))


def loss_grad(pred: TensorInfo, target: TensorInfo, dpred: TensorInfo, per_element: int) -> StreamWork:
    return stream("loss signal", BACKWARD, (pred, target), (dpred,), ARITH.times(per_element * pred.numel))


def flip_update(w: TensorInfo, acc: TensorInfo, q: TensorInfo, scalars) -> StreamWork:
    """The Boolean optimizer step of SPEC §4 on a b1 tensor W with accumulator M and
    weight signal q (M and q at the signal width). Per element:
    M <- β·M + η·q: two multiplications and one addition; flip = M·e(W) >= 1: one
    conditional negation and one comparison; W <- ¬W where flip and M <- 0 where flip:
    one logic operation each; counting the kept entries for β: an adder tree over the
    flip bits, below 3 logic operations per bit (Σ_k (2k-1)/2^k = 3)."""
    per = ARITH.times(2) + add_op(acc) + LOGIC + add_op(acc) + LOGIC.times(2) + LOGIC.times(3)
    return stream("update", UPDATE, (w, acc, q, *scalars), (w, acc, *scalars[:1]), per.times(w.numel))


ADAM_OPS_PER_ELEMENT = 14


def adam_update(p: TensorInfo, m: TensorInfo, v: TensorInfo, g: TensorInfo, scalars) -> StreamWork:
    """Adam on an f32 tensor: m and v updates (3 + 4 operations), bias corrections (2),
    square root, ε, division, learning rate and subtraction (5): 14 arithmetic
    operations per element; reads p, m, v, g, writes p, m, v."""
    return stream("update", UPDATE, (p, m, v, g, *scalars), (p, m, v), ARITH.times(ADAM_OPS_PER_ELEMENT * p.numel))


SCHEDULE_OPS = 10


def schedule(step: TensorInfo, out: TensorInfo) -> StreamWork:
    """A learning-rate schedule on the step counter: a scalar formula (cosine, power),
    charged 10 arithmetic operations."""
    return stream("schedule", UPDATE, (step,), (out,), ARITH.times(SCHEDULE_OPS))


def increment(step: TensorInfo) -> StreamWork:
    """step <- step + 1: one integer addition."""
    return stream("step", UPDATE, (step,), (step,), add_op(step))
