"""insert-optimizer: replace @train_step's ``param_grad`` ops by optimizer updates.

Every b1 param W gets the Boolean optimizer of docs/method.md §4 (``flip_update``) with its state
as new params ``@W.m`` (accumulator, zeros: f32, or i16 fixed point with ``accumulator=i16``
and then a saturation counter ``@W.m.saturated``) and ``@W.beta`` (f32[], 1); every f32
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
from boldc.ir.core import Module, Op, Param
from boldc.ir.rewriter import Rewriter
from boldc.ir.types import DType, TensorType
from boldc.ops.optim_ops import ACCUMULATORS, DEFAULT_M_STEP, SCHEDULES, m_step_problem
from boldc.ops.registry import lookup
from boldc.ops.traits import GradientSink, Optimizer
from boldc.passes.autodiff import is_frozen, step_counter
from boldc.passes.dce import DeadCodeElimination
from boldc.passes.manager import NeedsFunction, Option, Pass, register_pass

# Tested defaults (docs/training.md, "Defaults"): softmax cross-entropy with mean
# reduction, batch 64.
DEFAULT_ETA = 3.0
DEFAULT_LR = 1e-3


@register_pass
class InsertOptimizer(Pass):
    name = "insert-optimizer"
    options = {
        "eta": Option(float, DEFAULT_ETA, "Boolean optimizer learning rate η (docs/method.md)"),
        "schedule": Option(str, "constant", "η schedule: constant | cosine | poly", SCHEDULES),
        "total-steps": Option(int, 0, "T of the cosine and poly schedules (steps)"),
        "eta-final": Option(float, 0.0, "η at the end of the cosine / poly schedule"),
        "power": Option(float, 1.0, "exponent of the poly schedule"),
        "lr": Option(float, DEFAULT_LR, "Adam learning rate for f32 params"),
        "lr-schedule": Option(str, "constant", "Adam learning-rate schedule (same kinds, same T)", SCHEDULES),
        "beta1": Option(float, 0.9, "Adam β1"),
        "beta2": Option(float, 0.999, "Adam β2"),
        "eps": Option(float, 1e-8, "Adam ε"),
        "accumulator": Option(str, "f32", "storage of the Boolean optimizer's accumulators: f32 | i16 (fixed point)",
                              ACCUMULATORS),
        "accumulator-step": Option(float, DEFAULT_M_STEP, "value of one unit of an i16 accumulator (a power of two)"),
        "frozen": Option(list, [], "params (glob patterns) not to update"),
        "freeze-float": Option(bool, False, "do not update any f32 param"),
    }
    requires = (NeedsFunction("train_step", hint="run autodiff first"),)

    def run(self, module: Module) -> bool:
        opts = self.opts
        for key in ("schedule", "lr-schedule"):
            if opts[key] != "constant" and opts["total-steps"] < 1:
                raise BoldcError(f"insert-optimizer: {key}={opts[key]} needs total-steps >= 1")
        if not all(math.isfinite(opts[k]) and opts[k] > 0 for k in ("eta", "lr")):  # NaN > 0 is False too
            raise BoldcError(f"insert-optimizer: eta and lr must be finite numbers > 0, "
                             f"got {opts['eta']} and {opts['lr']}")
        problem = m_step_problem(opts["accumulator-step"], "accumulator-step")
        if opts["accumulator"] == "i16" and problem:
            raise BoldcError(f"insert-optimizer: {problem}")
        fn = module.function("train_step")
        if any(lookup(op.name).has(Optimizer) for op in fn.ops):
            raise BoldcError("insert-optimizer: @train_step already has optimizer updates")
        grads = [op for op in fn.ops if _is_sink(op)]
        if not grads:
            raise BoldcError("insert-optimizer: @train_step declares no gradients (param_grad); run autodiff first")

        rw = Rewriter(fn)
        for op in grads:
            rw.erase(op)
        kept = [op for op in grads if not is_frozen(op.operands[0], opts["frozen"], opts["freeze-float"])]
        step = step_counter(module)  # autodiff makes it first when stochastic rounding counts steps
        bool_eta = float_lr = None
        for op in kept:
            param, grad = op.operands
            if param.type.dtype.is_bool:
                if bool_eta is None:
                    bool_eta = rw.op("lr_schedule", [step], self._schedule(opts["schedule"], opts["eta"],
                                                                           opts["eta-final"]), "eta")
                beta = _state(module, param, "beta", TensorType(DType.f32, ()), 1.0)
                if opts["accumulator"] == "i16":
                    m = _state(module, param, "m", param.type.with_dtype(DType.i16), 0)
                    saturated = _state(module, param, "m.saturated", TensorType(DType.i32, ()), 0,
                                       role=SATURATION_ROLE)
                    rw.op("flip_update", [param, m, beta, grad, bool_eta, saturated],
                          {"m_step": opts["accumulator-step"]})
                else:
                    m = _state(module, param, "m", param.type.with_dtype(DType.f32), 0.0)
                    rw.op("flip_update", [param, m, beta, grad, bool_eta])
            else:
                if float_lr is None:
                    float_lr = rw.op("lr_schedule", [step], self._schedule(opts["lr-schedule"], opts["lr"], 0.0),
                                     "lr")
                m = _state(module, param, "adam_m", param.type, 0.0)
                v = _state(module, param, "adam_v", param.type, 0.0)
                rw.op("adam_update", [param, m, v, grad, float_lr, step],
                      {"beta1": opts["beta1"], "beta2": opts["beta2"], "eps": opts["eps"]})
        rw.op("increment", [step])
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
    return lookup(op.name).has(GradientSink)


SATURATION_ROLE = "saturation counter"  # the role attr of the i16 accumulators' counters (metrics read it)


def _state(module: Module, param: Param, suffix: str, type: TensorType, fill: float, role: str = "optimizer state"
           ) -> Param:
    """A new optimizer-state param ``@<param>.<suffix>`` filled with ``fill``, its attr
    ``role`` = "<role> of @<param>"."""
    name = f"{param.name}.{suffix}"
    if name in module.params:
        raise BoldcError(f"insert-optimizer: the module already has a param @{name}")
    data = np.full(tuple(type.shape), fill, dtype=type.dtype.numpy)
    return module.add_param(name, type, data, {"role": f"{role} of @{param.name}"})
