"""Walk a function of the IR and cost every op through its registry ``cost`` hook.

What is walked:

- inference: the ops of @forward;
- training: the ops of @train_step. A module without one gets the training step that
  ``autodiff`` and ``insert-optimizer`` build (``training_step``, on a copy): the energy
  model costs exactly what those passes insert, with no second description of autodiff.
  Each op of a derived step is reported under the @forward op it derives from (its
  backward rule's ops, the sums of its result's gradients); the loss and the optimizer's
  ops under their own names.

How a tensor is seen (``View``): its static shape (the batch N bound), its storage bits
from the hardware description and its kind, both by its IR element type (b1 "bit",
integers "int", f32 "real"): an integer backward signal (``quantize_signal``) is charged
at its width, an f32 one at 32 bits. Values computed by gradient ops (and sums of them)
are the backward phase. The float baseline is a module of its own (``baseline.py``),
walked the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from boldc.energymodel.evaluate import ItemCost, evaluate
from boldc.energymodel.hardware import Hardware
from boldc.energymodel.tiling import TilingError
from boldc.errors import BoldcError
from boldc.ir.core import Function, Module, Op, Param
from boldc.ir.types import DType, TensorType
from boldc.ir.works import BACKWARD, BIT, FORWARD, INT, REAL, CostContext, TensorInfo
from boldc.ops.registry import Marker, lookup
from boldc.ops.traits import Gradient, GradientSink, Loss
from boldc.passes.autodiff import Autodiff
from boldc.passes.insert_optimizer import InsertOptimizer

KIND_OF = {DType.b1: BIT, DType.i8: INT, DType.i16: INT, DType.i32: INT, DType.f32: REAL}


class EnergyError(BoldcError):
    """A module the energy model cannot cost (symbolic sizes, missing hooks, ...)."""


@dataclass(frozen=True)
class CostedItem:
    """One cost item: the op it is reported under (None for the loss and the optimizer of
    a derived training step), its reference in the report, the op name, and its cost."""

    owner: Op | None
    ref: str
    opname: str
    cost: ItemCost


class View:
    """How a model sees the IR's tensors (see the module docstring)."""

    def __init__(self, hw: Hardware, batch: int):
        self.hw = hw
        self.batch = batch

    def shape(self, t: TensorType, where: str) -> tuple[int, ...]:
        out = []
        for d in t.shape:
            if isinstance(d, int):
                out.append(d)
            elif d == "N":
                out.append(self.batch)
            else:
                raise EnergyError(f"{where}: dimension '{d}' is symbolic; the energy model needs static sizes "
                                  f"(the batch N is bound by --batch, others by --dim {d}=SIZE)")
        return tuple(out)

    def info(self, t: TensorType, where: str) -> TensorInfo:
        return TensorInfo(self.shape(t, where), self.hw.bits_of(t.dtype), KIND_OF[t.dtype])


def ref_of(op: Op) -> str:
    """How the report names an op: its first result, or for an op without results (an
    update) the param it updates."""
    if op.results:
        return op.results[0].ref
    for v in op.operands:
        if isinstance(v, Param):
            return v.ref
    return op.name


def _where(op: Op) -> str:
    return f"op {op.describe()}" + (f" at {op.loc}" if op.loc else "")


def signal_values(fn: Function) -> set:
    """The backward signals of a function: results of ops with the trait ``Gradient``, and
    results of ops whose value operands are all signals (a sum of two gradients, a
    reshaped gradient)."""
    signals: set = set()
    for op in fn.ops:
        values = [v for v in op.operands if not isinstance(v, Param)]
        if lookup(op.name).has(Gradient) or (values and all(v in signals for v in values)):
            signals.update(op.results)
    return signals


def cost_function(module: Module, fn_name: str, view: View, owners: dict[Op, Op | None] | None = None
                  ) -> list[CostedItem]:
    """Every op of the function, each costing itself; ``owners`` names the op each one is
    reported under, and named after (default: itself)."""
    fn = module.function(fn_name)
    signals = signal_values(fn)
    items: list[CostedItem] = []
    for op in fn.ops:
        where = _where(op)
        opdef = lookup(op.name)
        if isinstance(opdef.cost, Marker):
            raise EnergyError(f"{where}: op '{opdef.name}' declares no energy cost ({opdef.cost.reason})")
        phase = BACKWARD if any(r in signals for r in op.results) else FORWARD
        ctx = CostContext([view.info(v.type, where) for v in op.operands],
                          [view.info(v.type, where) for v in op.results], dict(op.attrs), phase,
                          [v.type for v in op.operands], [v.type for v in op.results],
                          lambda t, where=where: view.info(t, where))
        owner = op if owners is None else owners.get(op)
        shown = owner if owner is not None else op  # an item is named after the op it is reported under
        try:
            items += [CostedItem(owner, ref_of(shown), shown.name, evaluate(w, view.hw)) for w in opdef.cost(ctx)]
        except TilingError as exc:
            raise EnergyError(f"{where}: {exc}") from None
    return items


def training_step(module: Module, loss: str, signal_bits: str) -> tuple[Module, dict[Op, Op | None]]:
    """A copy of the forward-only ``module`` with the @train_step that autodiff (loss
    ``loss``, backward signals ``signal_bits``) and insert-optimizer build, and the @forward
    op of ``module`` each of its ops is reported under (None for the loss and the optimizer)."""
    loss_def = lookup(loss)
    if loss_def is None or not loss_def.has(Loss):
        raise EnergyError(f"'{loss}' is not a loss op")
    forward = module.function("forward")
    if len(forward.returns) != 1:
        raise EnergyError(f"a training report needs @forward to return one value (the prediction), it returns "
                          f"{len(forward.returns)}")
    copy = module.copy()
    autodiff = Autodiff(loss=loss, signal_bits=signal_bits)
    try:
        autodiff.run(copy)
        if any(lookup(op.name).has(GradientSink) for op in copy.function("train_step").ops):
            InsertOptimizer().run(copy)
    except BoldcError as exc:
        raise EnergyError(str(exc)) from None
    original = dict(zip(copy.function("forward").ops, forward.ops))
    owners = {op: original.get(autodiff.origins.get(op)) for op in copy.function("train_step").ops}
    return copy, owners
