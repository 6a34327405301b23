"""autodiff: build @train_step(%x..., %target) -> f32[] from @forward and a loss op.

@train_step repeats the ops of @forward, applies the loss op to the prediction, then
runs the backward rules of SPEC §3 in reverse op order, each emitted by the op's
``backward`` hook in the registry. Gradients reaching one value along several paths
are summed with explicit ``add`` ops, in the order the paths are met (reverse op
order). It ends with one ``param_grad(@p, %dp)`` per trained param (f32 and b1 params
reached by a gradient); insert-optimizer turns these into updates.

What needs a gradient: the trained params (not frozen, f32 or b1, at an operand that
is differentiable) and every value computed from one. Gradients nobody needs (inputs,
labels, integer thresholds, frozen params) are never asked for, so an op without a
backward rule is an error only when a gradient has to pass through it.
"""

from __future__ import annotations

import fnmatch
import math

from boldc.errors import BoldcError
from boldc.ir.builder import FunctionBuilder
from boldc.ir.core import Module, Op, Param, Value
from boldc.ir.types import DType
from boldc.ops.grad_ops import THRESHOLD_MODES
from boldc.ops.registry import Marker, TypeCheck, lookup
from boldc.passes.manager import Option, Pass, register_pass


def is_frozen(param: Param, patterns: list[str], freeze_float: bool) -> bool:
    """A param matched by a glob pattern of ``patterns``, or any f32 param with ``freeze_float``."""
    if freeze_float and param.type.dtype.is_float:
        return True
    return any(fnmatch.fnmatchcase(param.name, p) for p in patterns)


class GradContext:
    """What a backward hook sees: ``op(...)`` to emit ops, ``needs`` (per operand of the
    op being differentiated), ``fan_in(value)``, ``options`` and ``error(op, msg)``."""

    def __init__(self, builder: FunctionBuilder, producers: dict[int, Op], options: dict):
        self.builder = builder
        self.producers = producers
        self.options = options
        self.needs: list[bool] = []

    def op(self, name: str, operands: list[Value], attrs: dict | None = None, grad_of: Value | None = None) -> Value:
        """Emit an op; its result is named ``d.<name>`` after the value it is a gradient of."""
        hint = f"d.{grad_of.name}" if grad_of is not None else None
        try:
            return self.builder.op(name, operands, attrs or {}, name=hint)
        except TypeCheck as exc:
            raise AssertionError(f"backward rule emitted an ill-typed op: {exc}") from None

    def fan_in(self, value: Value) -> int | None:
        """The fan-in m of the layer that produced ``value`` (None if unknown)."""
        op = self.producers.get(id(value))
        if op is None:
            return None
        return lookup(op.name).fan_in(op, self.fan_in)

    @staticmethod
    def error(op: Op, message: str) -> BoldcError:
        return BoldcError(f"autodiff: op {op.describe()}{_at(op)}: {message}")


def _at(op: Op) -> str:
    return f" at {op.loc}" if op.loc else ""


@register_pass
class Autodiff(Pass):
    name = "autodiff"
    options = {
        "loss": Option(str, "softmax_xent", "loss op (an op with the trait 'loss'): softmax_xent | mse | l1"),
        "reduction": Option(str, "mean", "mean | sum: how the loss reduces over the batch"),
        "threshold-grad": Option(str, "tanh", "threshold backward: tanh (SPEC default) | box | bireal"),
        "alpha": Option(float, 0.0, "scale α of the threshold backward; 0 = π/(2√(3m)), m the producer's fan-in"),
        "rescale": Option(bool, False, "multiply Boolean layers' input signal by √(2/m_out) (SPEC §3)"),
        "frozen": Option(list, [], "params (glob patterns) that are not trained"),
        "freeze-float": Option(bool, False, "do not train any f32 param"),
    }

    def run(self, module: Module) -> bool:
        opts = self.opts
        if "train_step" in module.functions:
            raise BoldcError("autodiff: the module already has @train_step")
        if opts["threshold-grad"] not in THRESHOLD_MODES:
            raise BoldcError(f"autodiff: threshold-grad={opts['threshold-grad']!r} is not one of "
                             f"{' | '.join(THRESHOLD_MODES)}")
        if opts["reduction"] not in ("mean", "sum"):
            raise BoldcError(f"autodiff: reduction={opts['reduction']!r} is not mean | sum")
        if opts["alpha"] < 0 or not math.isfinite(opts["alpha"]):
            raise BoldcError(f"autodiff: alpha={opts['alpha']} must be a finite number >= 0")
        loss_def = lookup(opts["loss"])
        if loss_def is None or "loss" not in loss_def.traits:
            raise BoldcError(f"autodiff: unknown loss {opts['loss']!r} (losses: {', '.join(_losses())})")
        forward = module.function("forward")
        if len(forward.returns) != 1:
            raise BoldcError(f"autodiff: @forward must return one value (the prediction), it returns "
                             f"{len(forward.returns)}")

        # @train_step's arguments: those of @forward, then the target.
        pred_type = forward.returns[0].type
        try:
            target_type = loss_def.target_type(pred_type)
        except TypeCheck as exc:
            raise BoldcError(f"autodiff: loss {loss_def.name} does not apply to the prediction: {exc}") from None
        taken = {a.name for a in forward.args}
        target_name = next(n for n in ("target", "labels", "y", "target.0") if n not in taken)
        fb = FunctionBuilder(module, "train_step", [(a.name, a.type) for a in forward.args] +
                             [(target_name, target_type)])
        mapping: dict[int, Value] = {id(a): b for a, b in zip(forward.args, fb.args)}
        for p in module.params.values():
            mapping[id(p)] = p
        for op in forward.ops:
            names = [r.name for r in op.results]
            new = fb.op(op.name, [mapping[id(o)] for o in op.operands], dict(op.attrs),
                        name=names if len(names) != 1 else names[0])
            fb.fn.ops[-1].loc = op.loc
            for old, value in zip(op.results, new if isinstance(new, list) else [new]):
                mapping[id(old)] = value
        prediction = mapping[id(forward.returns[0])]
        try:
            loss = fb.op(loss_def.name, [prediction, fb.args[-1]], {"reduction": opts["reduction"]}, name="loss")
        except TypeCheck as exc:
            raise BoldcError(f"autodiff: loss {loss_def.name} does not apply to @forward's prediction "
                             f"{prediction.type}: {exc}") from None

        trained = self._trained_params(module, fb.fn.ops)
        grads = self._backward(fb, trained)
        for p in module.params.values():
            if p.name in trained and id(p) in grads:
                fb.op("param_grad", [p, grads[id(p)]])
        fb.ret(loss)
        return True

    def _trained_params(self, module: Module, ops: list[Op]) -> set[str]:
        """f32/b1 params at a differentiable operand of some op, minus the frozen ones."""
        out = set()
        for op in ops:
            nondiff = lookup(op.name).nondiff_positions(len(op.operands))
            for pos, o in enumerate(op.operands):
                if isinstance(o, Param) and pos not in nondiff and o.type.dtype in (DType.f32, DType.b1):
                    if not is_frozen(o, self.opts["frozen"], self.opts["freeze-float"]):
                        out.add(o.name)
        return out

    def _backward(self, fb: FunctionBuilder, trained: set[str]) -> dict[int, Value]:
        """Emit the backward ops; returns the gradient of every value that got one."""
        ops = list(fb.fn.ops)  # the forward copy and the loss (the root, last)
        producers = {id(r): op for op in ops for r in op.results}
        # needed: values computed from a trained param through differentiable operands
        # (mapped to the name of one such param, for messages).
        needed: dict[int, str] = {}
        for op in ops:
            nondiff = lookup(op.name).nondiff_positions(len(op.operands))
            for pos, o in enumerate(op.operands):
                source = o.name if isinstance(o, Param) and o.name in trained else needed.get(id(o))
                if pos not in nondiff and source is not None:
                    needed.update((id(r), source) for r in op.results)
                    break
        ctx = GradContext(fb, producers, self.opts)
        grads: dict[int, Value] = {}
        root = ops[-1]
        for op in reversed(ops):
            dys = [grads.get(id(r)) for r in op.results]
            if op is not root and all(d is None for d in dys):
                continue
            opdef = lookup(op.name)
            nondiff = opdef.nondiff_positions(len(op.operands))
            needs = [pos not in nondiff and (id(o) in needed or (isinstance(o, Param) and o.name in trained))
                     for pos, o in enumerate(op.operands)]
            if not any(needs):
                continue
            if isinstance(opdef.backward, Marker):
                o = next(o for o, n in zip(op.operands, needs) if n)
                source = o.name if isinstance(o, Param) else needed[id(o)]
                raise ctx.error(op, f"a gradient must pass through it to reach @{source}, but it has no "
                                    f"backward rule ({opdef.backward.reason}); freeze the params before it")
            ctx.needs = needs
            out = opdef.backward(ctx, op, dys)
            for pos, (operand, need) in enumerate(zip(op.operands, needs)):
                if not need:
                    continue
                g = out[pos]
                if g is None or g.type.dtype is not DType.f32 or tuple(g.type.shape) != tuple(operand.type.shape):
                    got = "nothing" if g is None else str(g.type)
                    raise AssertionError(f"backward rule of {op.describe()} gave {got} for operand {pos} "
                                         f"({operand.type}); it must give f32 of the operand's shape")
                old = grads.get(id(operand))
                grads[id(operand)] = g if old is None else ctx.op("add", [old, g], grad_of=operand)
        return grads


def _losses() -> list[str]:
    from boldc.ops.registry import with_trait

    return sorted(d.name for d in with_trait("loss") if hasattr(d, "target_type"))
