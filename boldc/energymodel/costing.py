"""Walk a function of the IR and cost every op through its registry ``cost`` hook.

Two views of the same IR:

- the model as declared: element bits from the hardware description, b1 read as
  "bit", integers as "int", f32 as "real"; backward signals (values produced by
  gradient ops, and sums of them) in the model's ``SignalFormat``;
- the float baseline (SPEC §6, "the same network, float32 everywhere"): every tensor
  f32 and real, each Boolean or mixed op replaced by the float op whose
  ``boolean_counterpart`` / ``mixed_counterpart`` it is (an op with none stands for
  itself), signals f32, every trained param updated by Adam.

Three ways to walk:

- ``inference``: the ops of @forward;
- ``training`` on a module with @train_step: the ops of @train_step as they are;
- ``training`` on a forward-only module: the ops of @forward, each hook asked for its
  forward work and the backward works autodiff would insert for it (``ctx.training``,
  ``ctx.needs`` as autodiff computes them), plus what autodiff and insert-optimizer add
  around the ops: the loss and its signal, one ``add`` per extra gradient reaching a
  value used several times, one optimizer update per trained param (``flip_update``
  for b1, ``adam_update`` for f32), the learning-rate schedules and the step counter.
"""

from __future__ import annotations

from dataclasses import dataclass

from boldc.energymodel.evaluate import ItemCost, evaluate
from boldc.energymodel.hardware import Hardware
from boldc.energymodel.tiling import TilingError
from boldc.energymodel.works import (
    BACKWARD,
    BIT,
    FORWARD,
    INT,
    REAL,
    CostContext,
    SignalFormat,
    TensorInfo,
    gradient_sum,
)
from boldc.errors import BoldcError
from boldc.ir.core import Function, Module, Op, Param, Value
from boldc.ir.types import DType, TensorType
from boldc.ops.registry import Marker, all_ops, lookup

KIND_OF = {DType.b1: BIT, DType.i8: INT, DType.i16: INT, DType.i32: INT, DType.f32: REAL}

# What insert-optimizer inserts (boldc/passes/insert_optimizer.py): the update op of a
# trained param by how the model stores it, the schedule op, the step counter op.
UPDATE_OP = {BIT: "flip_update", "other": "adam_update"}
SCHEDULE_OP = "lr_schedule"
STEP_OP = "increment"
SUM_OP = "add"  # what autodiff sums gradient contributions with


class EnergyError(BoldcError):
    """A module the energy model cannot cost (symbolic sizes, missing hooks, ...)."""


@dataclass(frozen=True)
class CostedItem:
    """One cost item: the op it belongs to (None for the loss and the optimizer's
    bookkeeping), its reference in the report, the op name, and its cost."""

    owner: Op | None
    ref: str
    opname: str
    cost: ItemCost


class View:
    """How a model sees the IR's tensors (see the module docstring)."""

    def __init__(self, hw: Hardware, batch: int, signal: SignalFormat, baseline: bool):
        self.hw = hw
        self.batch = batch
        self.signal = signal
        self.baseline = baseline

    def shape(self, t: TensorType, where: str) -> tuple[int, ...]:
        out = []
        for d in t.shape:
            if isinstance(d, int):
                out.append(d)
            elif d == "N":
                out.append(self.batch)
            else:
                raise EnergyError(f"{where}: dimension '{d}' is symbolic; the energy model needs static sizes "
                                  "(only the batch N is bound, by --batch)")
        return tuple(out)

    def info(self, t: TensorType, where: str, signal: bool = False) -> TensorInfo:
        shape = self.shape(t, where)
        if signal:
            return TensorInfo(shape, self.signal.bits, self.signal.kind)
        if self.baseline:
            return TensorInfo(shape, self.hw.bits["f32"], REAL)
        return TensorInfo(shape, self.hw.bits_of(t.dtype), KIND_OF[t.dtype])

    def opdef(self, name: str):
        if self.baseline:
            name = float_counterpart(name)
        return lookup(name)


_FLOAT_OF: dict[str, str] | None = None


def float_counterpart(name: str) -> str:
    """The float op whose Boolean or mixed counterpart is ``name``, else ``name``."""
    global _FLOAT_OF
    if _FLOAT_OF is None:
        _FLOAT_OF = {}
        for d in all_ops().values():
            for key in ("boolean_counterpart", "mixed_counterpart"):
                other = getattr(d, key, None)
                if other is not None:
                    _FLOAT_OF.setdefault(other, d.name)
    return _FLOAT_OF.get(name, name)


def ref_of(op: Op) -> str:
    """How the report names an op: its first result, or for an op without results (an
    update) the param it updates."""
    if op.results:
        return op.results[0].ref
    for v in op.operands:
        if isinstance(v, Param):
            return v.ref
    return op.name


def _call_hook(opdef, ctx: CostContext, where: str) -> list:
    hook = opdef.cost
    if isinstance(hook, Marker):
        raise EnergyError(f"{where}: op '{opdef.name}' declares no energy cost ({hook.reason})")
    return hook(ctx)


def _where(op: Op) -> str:
    return f"op {op.describe()}" + (f" at {op.loc}" if op.loc else "")


def _items(op: Op | None, ref: str, opname: str, works: list, hw: Hardware, where: str) -> list[CostedItem]:
    try:
        return [CostedItem(op, ref, opname, evaluate(w, hw)) for w in works]
    except TilingError as exc:
        raise EnergyError(f"{where}: {exc}") from None


# --- walking a function as it is ------------------------------------------------------------


def signal_values(fn: Function) -> set[int]:
    """ids of the backward signals of a function: results of ops with the trait
    "gradient", and results of ops whose value operands are all signals (a sum of two
    gradients, a reshaped gradient)."""
    signals: set[int] = set()
    for op in fn.ops:
        values = [v for v in op.operands if not isinstance(v, Param)]
        if "gradient" in lookup(op.name).traits or (values and all(id(v) in signals for v in values)):
            signals.update(id(r) for r in op.results)
    return signals


def cost_function(module: Module, fn_name: str, view: View) -> list[CostedItem]:
    """Every op of the function as it is, each costing itself."""
    fn = module.function(fn_name)
    signals = signal_values(fn)
    items: list[CostedItem] = []
    for op in fn.ops:
        where = _where(op)
        opdef = view.opdef(op.name)
        phase = BACKWARD if any(id(r) in signals for r in op.results) else FORWARD
        ctx = CostContext([view.info(v.type, where, id(v) in signals) for v in op.operands],
                          [view.info(v.type, where, id(v) in signals) for v in op.results],
                          dict(op.attrs), view.signal, phase=phase)
        items += _items(op, ref_of(op), opdef.name, _call_hook(opdef, ctx, where), view.hw, where)
    return items


# --- deriving the training step from @forward -----------------------------------------------


def _trainable(v: Value) -> bool:
    return isinstance(v, Param) and (v.type.dtype.is_bool or v.type.dtype.is_float)


def gradient_flow(fn: Function) -> tuple[dict[int, list[bool]], list[Param]]:
    """As autodiff: which operands of each op need a gradient (trained params at a
    differentiable operand, and values computed from one), and the trained params."""
    requires: set[int] = set()
    needs: dict[int, list[bool]] = {}
    trained: dict[str, Param] = {}
    for op in fn.ops:
        nondiff = lookup(op.name).nondiff_positions(len(op.operands))
        flags = []
        for i, v in enumerate(op.operands):
            need = i not in nondiff and (id(v) in requires or _trainable(v))
            if need and isinstance(v, Param):
                trained.setdefault(v.name, v)
            flags.append(need)
        needs[id(op)] = flags
        if any(flags):
            requires.update(id(r) for r in op.results)
    return needs, list(trained.values())


def derive_training(module: Module, view: View, loss: str = "softmax_xent") -> list[CostedItem]:
    """The training step of a forward-only module, derived op by op (module docstring)."""
    fn = module.function("forward")
    hw = view.hw
    needs, trained = gradient_flow(fn)
    if len(fn.returns) != 1:
        raise EnergyError(f"a training report needs @forward to return one value (the prediction), it returns "
                          f"{len(fn.returns)}")
    pred = fn.returns[0]
    items: list[CostedItem] = []
    contributions: dict[int, int] = {id(pred): 1}
    producers: dict[int, Op] = {}
    for op in fn.ops:
        where = _where(op)
        opdef = view.opdef(op.name)
        flags = needs[id(op)]
        if any(flags) and isinstance(lookup(op.name).backward, Marker):
            raise EnergyError(f"{where}: a gradient must pass through this op but it has no backward rule "
                              f"({lookup(op.name).backward.reason})")
        ctx = CostContext([view.info(v.type, where) for v in op.operands],
                          [view.info(v.type, where) for v in op.results],
                          dict(op.attrs), view.signal, training=True, needs=list(flags))
        items += _items(op, ref_of(op), opdef.name, _call_hook(opdef, ctx, where), hw, where)
        for v, need in zip(op.operands, flags):
            if need:
                contributions[id(v)] = contributions.get(id(v), 0) + 1
        for r in op.results:
            producers[id(r)] = op
    items += _derive_loss(pred, view, loss)
    items += _derive_gradient_sums(fn, trained, contributions, producers, view)
    items += _derive_updates(trained, view)
    return items


def _derive_loss(pred: Value, view: View, loss: str) -> list[CostedItem]:
    opdef = lookup(loss)
    if opdef is None or "loss" not in opdef.traits:
        raise EnergyError(f"'{loss}' is not a loss op")
    where = f"loss '{loss}' on {pred.ref}"
    p = view.info(pred.type, where)
    target = view.info(opdef.target_type(pred.type), where)
    scalar = view.info(TensorType(DType.f32, ()), where)
    fwd = CostContext([p, target], [scalar], {}, view.signal)
    grad_def = lookup(opdef.grad_op)
    bwd = CostContext([p, target], [view.info(pred.type, where, signal=True)], {}, view.signal)
    return (_items(None, "loss", opdef.name, _call_hook(opdef, fwd, where), view.hw, where)
            + _items(None, "loss", grad_def.name, _call_hook(grad_def, bwd, where), view.hw, where))


def _derive_gradient_sums(fn: Function, trained: list[Param], contributions: dict[int, int],
                          producers: dict[int, Op], view: View) -> list[CostedItem]:
    values: dict[int, Value] = {id(p): p for p in trained}
    for op in fn.ops:
        for r in op.results:
            values[id(r)] = r
    items = []
    for key, count in contributions.items():
        if count < 2 or key not in values:
            continue
        v = values[key]
        g = view.info(v.type, f"gradient of {v.ref}", signal=True)
        owner = producers.get(key)
        works = [gradient_sum(g, g, g) for _ in range(count - 1)]
        items += _items(owner, v.ref, SUM_OP, works, view.hw, f"gradient sum of {v.ref}")
    return items


def _derive_updates(trained: list[Param], view: View) -> list[CostedItem]:
    hw = view.hw
    items = []
    scalar_f32 = view.info(TensorType(DType.f32, ()), "optimizer")
    step = TensorInfo((), hw.bits["i32"], INT)  # the step counter is an integer in both networks
    kinds_used = []
    for p in trained:
        w = view.info(p.type, p.ref)
        q = view.info(p.type, p.ref, signal=True)
        kind = BIT if w.kind == BIT else "other"
        if kind not in kinds_used:
            kinds_used.append(kind)
        opdef = lookup(UPDATE_OP[kind])
        state = TensorInfo(w.shape, hw.bits["f32"], REAL)
        if kind == BIT:  # flip_update(w, m, beta, q, eta)
            operands = [w, state, scalar_f32, q, scalar_f32]
        else:  # adam_update(p, m, v, g, lr, step)
            operands = [w, state, state, q, scalar_f32, step]
        ctx = CostContext(operands, [], {}, view.signal)
        where = f"update of {p.ref}"
        items += _items(None, p.ref, opdef.name, _call_hook(opdef, ctx, where), hw, where)
    for _ in kinds_used:
        opdef = lookup(SCHEDULE_OP)
        ctx = CostContext([step], [scalar_f32], {}, view.signal)
        where = "learning-rate schedule"
        items += _items(None, "@opt.step", opdef.name, _call_hook(opdef, ctx, where), hw, where)
    if trained:
        opdef = lookup(STEP_OP)
        ctx = CostContext([step], [], {}, view.signal)
        items += _items(None, "@opt.step", opdef.name, _call_hook(opdef, ctx, "step counter"), hw, "step counter")
    return items
