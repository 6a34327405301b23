"""Backward plans: what each op's ``torch.autograd.Function`` computes in its backward pass.

In training the torch engine runs the forward part of @train_step op by op (@forward with
composite ops expanded and BatchNorm on batch statistics, as autodiff copied it); an op on a
path from a trained param to the loss runs as an autograd Function whose backward is its
backward rule from the registry. The rule
is the op's own ``backward`` hook (boldc/ops), called here exactly as autodiff calls it when it
builds @train_step, with autodiff's ``GradContext``: it emits the gradient ops (and the
``quantize_signal`` of integer signals), which the engine then runs with its implementations.
So the torch engine and @train_step share one definition of every rule, options included
(threshold-grad, alpha, rescale, signal-bits, rounding, seed).

Unlike @train_step, a value used several times is not summed with ``add`` ops: autograd
sums the gradients of its uses (two uses give the same float32 sum in either order).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from boldc.ir.builder import FunctionBuilder
from boldc.ir.core import Module, Op, Param, Value
from boldc.ir.types import DType, TensorType
from boldc.ops.registry import Marker, lookup
from boldc.ops.traits import Loss
from boldc.passes.autodiff import GradContext, gradient_sources, operand_needs, trained_params


@dataclass
class Plan:
    """The backward pass of ``op``: placeholders for the signals of its results (``dys``), the
    ops its backward rule emitted (``ops``) and, per operand, the value holding its gradient
    (``grads``; None where none is needed). ``saved_operands`` / ``saved_results`` are the
    positions of the op's values that the plan reads (autograd saves them)."""

    op: Op
    dys: list[Value | None]
    ops: list[Op]
    grads: list[Value | None]
    saved_operands: list[int] = field(default_factory=list)
    saved_results: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        produced = {r for o in self.ops for r in o.results}
        placeholders = {d for d in self.dys if d is not None}
        reads = [v for o in self.ops for v in o.operands] + [g for g in self.grads if g is not None]
        for v in reads:
            if v in produced or v in placeholders or isinstance(v, Param):
                continue
            if v in self.op.operands:
                pos = self.op.operands.index(v)
                if pos not in self.saved_operands:
                    self.saved_operands.append(pos)
            elif v in self.op.results:
                pos = self.op.results.index(v)
                if pos not in self.saved_results:
                    self.saved_results.append(pos)
            else:
                raise AssertionError(f"the backward rule of {self.op.describe()} reads %{v.name}, which is neither "
                                     "an operand nor a result of the op")


def training_program(step: Module) -> tuple[list[Op], Op]:
    """The forward part of @train_step (its ops before the loss: @forward's with composite ops
    expanded and BatchNorm in its training form) and the loss op."""
    ops = step.function("train_step").ops
    at = next(i for i, op in enumerate(ops) if lookup(op.name).has(Loss))
    return ops[:at], ops[at]


def build_plans(step: Module, options: dict) -> dict[Op, Plan]:
    """The plan of every op of @train_step's forward part that needs one, and of its loss op;
    ``options`` are autodiff's (``Autodiff(...).opts``). The ops are visited as autodiff visits
    them (the loss, then the forward ops in reverse), so the integer signals are numbered alike."""
    forward_ops, loss_op = training_program(step)
    scratch = FunctionBuilder(step, "torch_backward", [])  # never added to the module
    ops = forward_ops + [loss_op]
    trained = trained_params(ops, options["frozen"], options["freeze-float"])
    needed = gradient_sources(ops, trained)
    producers = {r: op for op in ops for r in op.results}
    ctx = GradContext(scratch, producers, options)
    plans: dict[Op, Plan] = {}
    has_signal: set[Value] = set()
    for op in reversed(ops):
        root = op is loss_op
        dys = [None if root or r not in has_signal else Value(f"d.{r.name}", TensorType(DType.f32, r.type.shape))
               for r in op.results]
        if not root and all(d is None for d in dys):
            continue
        opdef = lookup(op.name)
        needs = operand_needs(op, needed, trained)
        if not any(needs):
            continue
        if isinstance(opdef.backward, Marker):  # autodiff refused this module already; a clear message anyway
            raise ctx.error(op, f"a gradient must pass through it, but it has no backward rule "
                                f"({opdef.backward.reason})")
        ctx.needs = needs
        start = len(scratch.fn.ops)
        out = opdef.backward(ctx, op, dys)
        grads = [g if need else None for g, need in zip(out, needs)]
        plans[op] = Plan(op, dys, scratch.fn.ops[start:], grads)
        has_signal.update(o for o, g in zip(op.operands, grads) if g is not None and not isinstance(o, Param))
    return plans
