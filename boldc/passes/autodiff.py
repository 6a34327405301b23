"""autodiff: build @train_step(%x..., %target) -> f32[] from @forward and a loss op.

@train_step repeats the ops of @forward (an op with a ``TrainingForm`` as that form: BatchNorm
with batch statistics), applies the loss op to the prediction, then
runs the backward rules of docs/method.md §3 in reverse op order, each emitted by the op's
``backward`` hook in the registry. Gradients reaching one value along several paths
are summed with explicit ``add`` ops, in the order the paths are met (reverse op
order). It ends with one ``param_grad(@p, %dp)`` per trained param (f32 and b1 params
reached by a gradient); insert-optimizer turns these into updates.

After a run, ``origins`` maps every op of @train_step to the @forward op it derives from:
the copy of a forward op, the ops its backward rule emitted, the sum of two gradients of
a value (to the op that produced the value); None for the loss and the param_grads. The
energy model uses it to report a derived training step per forward op.

What needs a gradient: the trained params (not frozen, f32 or b1, at an operand that
is differentiable) and every value computed from one. Gradients nobody needs (inputs,
labels, integer thresholds, frozen params) are never asked for, so an op without a
backward rule is an error only when a gradient has to pass through it.
"""

from __future__ import annotations

import fnmatch
import math

import numpy as np

from boldc.errors import BoldcError
from boldc.ir.builder import FunctionBuilder, unique_name
from boldc.ir.core import Module, Op, Param, Value
from boldc.ir.types import DType, TensorType
from boldc.ops.fused_ops import run_parts
from boldc.ops.grad_ops import THRESHOLD_MODES
from boldc.ops.loss_ops import IGNORE_INDEX
from boldc.ops.registry import Marker, TypeCheck, lookup, with_trait
from boldc.ops.signal_ops import ROUNDINGS, SIGNAL_BITS
from boldc.ops.traits import Composite, Loss, TrainingForm
from boldc.passes.manager import LacksFunction, NeedsFunction, Option, Pass, register_pass


def is_frozen(param: Param, patterns: list[str], freeze_float: bool) -> bool:
    """A param matched by a glob pattern of ``patterns``, or any f32 param with ``freeze_float``."""
    if freeze_float and param.type.dtype.is_float:
        return True
    return any(fnmatch.fnmatchcase(param.name, p) for p in patterns)


SIGNAL_CHOICES = tuple(str(b) for b in SIGNAL_BITS) + ("f32",)
STEP_PARAM = "opt.step"  # the step counter (insert-optimizer advances it)


def trained_params(ops: list[Op], frozen: list[str], freeze_float: bool) -> set[str]:
    """The f32 and b1 params at a differentiable operand of some op of ``ops``, minus the
    frozen ones (docs/training.md, "What gets a gradient")."""
    out = set()
    for op in ops:
        nondiff = lookup(op.name).nondiff_positions(len(op.operands))
        for pos, o in enumerate(op.operands):
            if isinstance(o, Param) and pos not in nondiff and o.type.dtype in (DType.f32, DType.b1):
                if not is_frozen(o, frozen, freeze_float):
                    out.add(o.name)
    return out


def gradient_sources(ops: list[Op], trained: set[str]) -> dict[Value, str]:
    """The values of ``ops`` (in program order) that need a gradient: computed from a trained
    param through differentiable operands, each mapped to the name of one such param (for
    messages)."""
    needed: dict[Value, str] = {}
    for op in ops:
        nondiff = lookup(op.name).nondiff_positions(len(op.operands))
        for pos, o in enumerate(op.operands):
            source = o.name if isinstance(o, Param) and o.name in trained else needed.get(o)
            if pos not in nondiff and source is not None:
                needed.update((r, source) for r in op.results)
                break
    return needed


def operand_needs(op: Op, needed: dict[Value, str], trained: set[str]) -> list[bool]:
    """Per operand of ``op``: does its gradient have to be computed (a differentiable
    operand that needs a gradient, or a trained param)?"""
    nondiff = lookup(op.name).nondiff_positions(len(op.operands))
    return [pos not in nondiff and (o in needed or (isinstance(o, Param) and o.name in trained))
            for pos, o in enumerate(op.operands)]


def step_counter(module: Module) -> Param:
    """The module's step counter ``@opt.step`` (i32[], 0), created if it has none."""
    p = module.params.get(STEP_PARAM)
    if p is None:
        p = module.add_param(STEP_PARAM, TensorType(DType.i32, ()), np.zeros((), np.int32), {"role": "step counter"})
    elif p.type != TensorType(DType.i32, ()):
        raise BoldcError(f"autodiff: param @{STEP_PARAM} is {p.type}, not the step counter i32[]")
    return p


class GradContext:
    """What a backward hook sees: ``op(...)`` to emit ops, ``needs`` (per operand of the
    op being differentiated), ``fan_in(value)``, ``quantize(signal)``, ``options`` and
    ``error(op, msg)``."""

    def __init__(self, builder: FunctionBuilder, producers: dict[Value, Op], options: dict):
        self.builder = builder
        self.producers = producers
        self.options = options
        self.needs: list[bool] = []
        self._streams = 0  # stochastic rounding: each quantized signal of a step draws its own numbers

    def quantize(self, dy: Value, grad_of: Value) -> tuple[Value, Value] | None:
        """(integer signal, its scale) of ``dy`` by the options ``signal-bits`` and
        ``rounding`` (quantize_signal), or None when signals stay f32."""
        bits = self.options["signal-bits"]
        if bits == "f32":
            return None
        attrs = {"bits": int(bits), "rounding": self.options["rounding"]}
        operands = [dy]
        if attrs["rounding"] == "stochastic":
            attrs.update(seed=self.options["seed"], stream=self._streams)
            self._streams += 1
            operands.append(step_counter(self.builder.module))
        q, scale = self.builder.op("quantize_signal", operands, attrs,
                                   name=[f"z.{grad_of.name}", f"z.{grad_of.name}.scale"])
        return q, scale

    def op(self, name: str, operands: list[Value], attrs: dict | None = None, grad_of: Value | None = None) -> Value:
        """Emit an op; its result is named ``d.<name>`` after the value it is a gradient of."""
        hint = f"d.{grad_of.name}" if grad_of is not None else None
        try:
            return self.builder.op(name, operands, attrs or {}, name=hint)
        except TypeCheck as exc:
            raise AssertionError(f"backward rule emitted an ill-typed op: {exc}") from None

    def fan_in(self, value: Value) -> int | None:
        """The fan-in m of the layer that produced ``value`` (None if unknown); a b1 value,
        ±1, counts 1 (its variance) whatever produced it."""
        if value.type.dtype.is_bool:
            return 1
        op = self.producers.get(value)
        if op is None:
            return None
        return lookup(op.name).fan_in(op, self.fan_in)

    @staticmethod
    def error(op: Op, message: str) -> BoldcError:
        return BoldcError(f"autodiff: op {op.describe()}{_at(op)}: {message}")


def _at(op: Op) -> str:
    return f" at {op.loc}" if op.loc else ""


def losses() -> list[str]:
    """The ops with the trait Loss (what the option ``loss`` may name)."""
    return sorted(d.name for d in with_trait(Loss))


@register_pass
class Autodiff(Pass):
    name = "autodiff"
    options = {
        "loss": Option(str, "softmax_xent", "loss op (an op with the trait Loss): softmax_xent | mse | l1"),
        "reduction": Option(str, "mean", "mean | sum: how the loss reduces over the batch", ("mean", "sum")),
        "ignore-index": Option(int, IGNORE_INDEX, "the label that contributes no loss and no gradient (losses "
                                                  "with an ignore_index attribute: softmax_xent)"),
        "threshold-grad": Option(str, "tanh", "threshold backward: tanh (the default) | box | bireal", THRESHOLD_MODES),
        "alpha": Option(float, 0.0, "scale α of the threshold backward; 0 = π/(2√(3m)), m the producer's fan-in"),
        "rescale": Option(bool, False, "multiply Boolean layers' input signal by √(2/m_out) (docs/method.md)"),
        "frozen": Option(list, [], "params (glob patterns) that are not trained"),
        "freeze-float": Option(bool, False, "do not train any f32 param"),
        "signal-bits": Option(str, "16", "backward signals of Boolean layers: 16 | 8 | 4 (integers with a "
                                         "power-of-two scale) | f32", SIGNAL_CHOICES),
        "rounding": Option(str, "nearest", "rounding of integer signals: nearest | stochastic | log (4 bits)",
                           ROUNDINGS),
        "seed": Option(int, 0, "seed of stochastic rounding"),
    }
    requires = (NeedsFunction("forward"), LacksFunction("train_step"))

    def run(self, module: Module) -> bool:
        opts = self.opts
        self.origins: dict[Op, Op | None] = {}
        if "train_step" in module.functions:  # for callers that run the pass without the manager's checks
            raise BoldcError("autodiff: the module already has @train_step")
        if opts["alpha"] < 0 or not math.isfinite(opts["alpha"]):
            raise BoldcError(f"autodiff: alpha={opts['alpha']} must be a finite number >= 0")
        if opts["rounding"] == "log" and opts["signal-bits"] != "4":
            raise BoldcError(f"autodiff: rounding=log is for 4-bit signals (signal-bits=4), not {opts['signal-bits']}")
        loss_def = lookup(opts["loss"])
        if loss_def is None or not loss_def.has(Loss):
            raise BoldcError(f"autodiff: unknown loss {opts['loss']!r} (losses: {', '.join(losses())})")
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
        target_name = next((n for n in ("target", "labels", "y") if n not in taken), None) or \
            unique_name("target", taken)
        fb = FunctionBuilder(module, "train_step", [(a.name, a.type) for a in forward.args] +
                             [(target_name, target_type)])
        mapping: dict[Value, Value] = dict(zip(forward.args, fb.args))
        for op in forward.ops:
            operands = [o if isinstance(o, Param) else mapping[o] for o in op.operands]
            mapping.update(zip(op.results, self._copy_forward_op(fb, op, operands)))
        prediction = mapping[forward.returns[0]]
        loss_attrs = {"reduction": opts["reduction"]}
        if loss_def.attr_spec("ignore_index") is not None:
            loss_attrs["ignore_index"] = opts["ignore-index"]
        elif opts["ignore-index"] != IGNORE_INDEX:
            raise BoldcError(f"autodiff: ignore-index={opts['ignore-index']} is for a loss of class labels; "
                             f"{loss_def.name} has none")
        try:
            loss = fb.op(loss_def.name, [prediction, fb.args[-1]], loss_attrs, name="loss")
        except TypeCheck as exc:
            raise BoldcError(f"autodiff: loss {loss_def.name} does not apply to @forward's prediction "
                             f"{prediction.type}: {exc}") from None
        self.origins[fb.fn.ops[-1]] = None

        trained = trained_params(fb.fn.ops, self.opts["frozen"], self.opts["freeze-float"])
        grads = self._backward(fb, trained)
        for p in module.params.values():
            if p.name in trained and p in grads:
                fb.op("param_grad", [p, grads[p]])
                self.origins[fb.fn.ops[-1]] = None
        fb.ret(loss)
        return True

    def _copy_forward_op(self, fb: FunctionBuilder, op: Op, operands: list[Value]) -> list[Value]:
        """``op`` of @forward into @train_step (the results): a composite op (a fused op) as
        its parts, an op with a ``TrainingForm`` as that form (BatchNorm on batch statistics)."""
        opdef = lookup(op.name)
        if not opdef.has(Composite):
            return self._emit_copy(fb, op, op.name, operands, op.attrs, [r.name for r in op.results])
        names = iter(opdef.part_names(op))

        def emit(part_def, args, attrs):
            return self._emit_copy(fb, op, part_def.name, args, attrs, [next(names)])

        return run_parts(opdef.parts(op), operands, emit)

    def _emit_copy(self, fb: FunctionBuilder, origin: Op, name: str, operands: list[Value], attrs: dict,
                   names: list[str]) -> list[Value]:
        training = lookup(name).trait(TrainingForm)
        new = fb.op(training.op if training is not None else name, operands, dict(attrs),
                    name=names if len(names) != 1 else names[0])
        fb.fn.ops[-1].loc = origin.loc
        self.origins[fb.fn.ops[-1]] = origin
        return new if isinstance(new, list) else [new]

    def _backward(self, fb: FunctionBuilder, trained: set[str]) -> dict[Value, Value]:
        """Emit the backward ops; returns the gradient of every value that got one."""
        ops = list(fb.fn.ops)  # the forward copy and the loss (the root, last)
        producers = {r: op for op in ops for r in op.results}
        needed = gradient_sources(ops, trained)
        ctx = GradContext(fb, producers, self.opts)
        grads: dict[Value, Value] = {}
        root = ops[-1]
        for op in reversed(ops):
            dys = [grads.get(r) for r in op.results]
            if op is not root and all(d is None for d in dys):
                continue
            opdef = lookup(op.name)
            needs = operand_needs(op, needed, trained)
            if not any(needs):
                continue
            if isinstance(opdef.backward, Marker):
                o = next(o for o, n in zip(op.operands, needs) if n)
                source = o.name if isinstance(o, Param) else needed[o]
                raise ctx.error(op, f"a gradient must pass through it to reach @{source}, but it has no "
                                    f"backward rule ({opdef.backward.reason}); freeze the params before it")
            ctx.needs = needs
            emitted = len(fb.fn.ops)
            out = opdef.backward(ctx, op, dys)
            self._attribute(fb.fn.ops[emitted:], self.origins.get(op))
            for pos, (operand, need) in enumerate(zip(op.operands, needs)):
                if not need:
                    continue
                g = out[pos]
                if g is None or g.type.dtype is not DType.f32 or tuple(g.type.shape) != tuple(operand.type.shape):
                    got = "nothing" if g is None else str(g.type)
                    raise AssertionError(f"backward rule of {op.describe()} gave {got} for operand {pos} "
                                         f"({operand.type}); it must give f32 of the operand's shape")
                old = grads.get(operand)
                if old is None:
                    grads[operand] = g
                    continue
                grads[operand] = ctx.op("add", [old, g], grad_of=operand)
                producer = producers.get(operand)  # a sum of gradients belongs to the value's producer
                self._attribute(fb.fn.ops[-1:], self.origins.get(producer) if producer else None)
        return grads

    def _attribute(self, new_ops: list[Op], origin: Op | None) -> None:
        for new in new_ops:
            self.origins[new] = origin
