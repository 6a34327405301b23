"""insert-optimizer: replace @train_step's ``param_grad`` ops by optimizer updates.

Every b1 param W gets the Boolean optimizer of SPEC §4 (``flip_update``) with its state
as new params ``@W.m`` (accumulator, f32, zeros) and ``@W.beta`` (f32[], 1); every f32
param p gets Adam (``adam_update``) with ``@p.adam_m`` and ``@p.adam_v`` (zeros). One
step counter ``@opt.step`` (i32[], 0) drives the schedules (``lr_schedule``) and Adam's
bias correction; ``increment`` advances it last. Frozen params lose their param_grad,
and the gradient ops only they needed are removed.

Order of @train_step afterwards: forward, loss, backward, schedules, updates, increment.
Updates follow every use of the params they write, and the interpreter commits them
when the step returns (docs/training.md).
"""

from __future__ import annotations

import math

import numpy as np

from boldc.errors import BoldcError
from boldc.ir.core import Module, Op, Param, Value
from boldc.ir.types import DType, TensorType
from boldc.ir.verifier import check_op
from boldc.ops.optim_ops import SCHEDULES
from boldc.ops.registry import lookup
from boldc.passes.autodiff import is_frozen
from boldc.passes.dce import DeadCodeElimination
from boldc.passes.manager import Option, Pass, register_pass

STEP_PARAM = "opt.step"

# Tested defaults (docs/training.md, "Defaults"): softmax cross-entropy with mean
# reduction, batch 64.
DEFAULT_ETA = 3.0
DEFAULT_LR = 1e-3


@register_pass
class InsertOptimizer(Pass):
    name = "insert-optimizer"
    options = {
        "eta": Option(float, DEFAULT_ETA, "Boolean optimizer learning rate η (SPEC §4)"),
        "schedule": Option(str, "constant", "η schedule: constant | cosine | poly"),
        "total-steps": Option(int, 0, "T of the cosine and poly schedules (steps)"),
        "eta-final": Option(float, 0.0, "η at the end of the cosine / poly schedule"),
        "power": Option(float, 1.0, "exponent of the poly schedule"),
        "lr": Option(float, DEFAULT_LR, "Adam learning rate for f32 params"),
        "lr-schedule": Option(str, "constant", "Adam learning-rate schedule (same kinds, same T)"),
        "beta1": Option(float, 0.9, "Adam β1"),
        "beta2": Option(float, 0.999, "Adam β2"),
        "eps": Option(float, 1e-8, "Adam ε"),
        "frozen": Option(list, [], "params (glob patterns) not to update"),
        "freeze-float": Option(bool, False, "do not update any f32 param"),
    }

    def run(self, module: Module) -> bool:
        opts = self.opts
        for key in ("schedule", "lr-schedule"):
            if opts[key] not in SCHEDULES:
                raise BoldcError(f"insert-optimizer: {key}={opts[key]!r} is not one of {' | '.join(SCHEDULES)}")
            if opts[key] != "constant" and opts["total-steps"] < 1:
                raise BoldcError(f"insert-optimizer: {key}={opts[key]} needs total-steps >= 1")
        if not all(math.isfinite(opts[k]) and opts[k] > 0 for k in ("eta", "lr")):  # NaN > 0 is False too
            raise BoldcError(f"insert-optimizer: eta and lr must be finite numbers > 0, "
                             f"got {opts['eta']} and {opts['lr']}")
        fn = module.function("train_step")
        if any(lookup(op.name).updates for op in fn.ops):
            raise BoldcError("insert-optimizer: @train_step already has optimizer updates")
        grads = [op for op in fn.ops if _is_sink(op)]
        if not grads:
            raise BoldcError("insert-optimizer: @train_step declares no gradients (param_grad); run autodiff first")
        if STEP_PARAM in module.params:
            raise BoldcError(f"insert-optimizer: the module already has a param @{STEP_PARAM}")

        fn.ops = [op for op in fn.ops if not _is_sink(op)]
        kept = [op for op in grads if not is_frozen(op.operands[0], opts["frozen"], opts["freeze-float"])]
        step = module.add_param(STEP_PARAM, TensorType(DType.i32, ()), np.zeros((), np.int32),
                                {"role": "step counter"})
        emit = _Emitter(module, fn)
        bool_eta = float_lr = None
        for op in kept:
            param, grad = op.operands
            if param.type.dtype.is_bool:
                if bool_eta is None:
                    bool_eta = emit.op("lr_schedule", [step], self._schedule(opts["schedule"], opts["eta"],
                                                                             opts["eta-final"]), "eta")
                m = _state(module, param, "m", param.type.with_dtype(DType.f32), 0.0)
                beta = _state(module, param, "beta", TensorType(DType.f32, ()), 1.0)
                emit.op("flip_update", [param, m, beta, grad, bool_eta])
            else:
                if float_lr is None:
                    float_lr = emit.op("lr_schedule", [step], self._schedule(opts["lr-schedule"], opts["lr"], 0.0),
                                       "lr")
                m = _state(module, param, "adam_m", param.type, 0.0)
                v = _state(module, param, "adam_v", param.type, 0.0)
                emit.op("adam_update", [param, m, v, grad, float_lr, step],
                        {"beta1": opts["beta1"], "beta2": opts["beta2"], "eps": opts["eps"]})
        emit.op("increment", [step])
        # Gradient chains of frozen params are dead now.
        DeadCodeElimination(drop_params=False).run(module)
        return True

    def _schedule(self, kind: str, base: float, final: float) -> dict:
        attrs = {"schedule": kind, "base": float(base)}
        if kind != "constant":
            attrs.update(total_steps=self.opts["total-steps"], final=float(final))
            if kind == "poly":
                attrs["power"] = float(self.opts["power"])
        return attrs


def _is_sink(op: Op) -> bool:
    """The ops through which autodiff hands over gradients (``param_grad``)."""
    return "gradient_sink" in lookup(op.name).traits


def _state(module: Module, param: Param, suffix: str, type: TensorType, fill: float) -> Param:
    """A new optimizer-state param ``@<param>.<suffix>`` filled with ``fill``."""
    name = f"{param.name}.{suffix}"
    if name in module.params:
        raise BoldcError(f"insert-optimizer: the module already has a param @{name}")
    data = np.full(tuple(type.shape), fill, dtype=type.dtype.numpy)
    return module.add_param(name, type, data, {"role": f"optimizer state of @{param.name}"})


class _Emitter:
    """Appends ops to a function with unique value names and inferred types."""

    def __init__(self, module: Module, fn):
        self.fn = fn
        self.names = {v.name for v in fn.values()}

    def op(self, name: str, operands: list, attrs: dict | None = None, hint: str | None = None) -> Value | None:
        op = Op(name, operands, [], attrs or {})
        types = check_op(op)
        if types:
            base, k = hint or name, 0
            while (hint_name := base if k == 0 else f"{base}.{k}") in self.names:
                k += 1
            self.names.add(hint_name)
            op.results = [Value(hint_name, types[0])]
        self.fn.ops.append(op)
        return op.results[0] if op.results else None
