"""Preparing a module for training through the generated C (``boldc.compile(train=True)``).

A module without @train_step gets one on a copy: ``autodiff`` and ``insert-optimizer``
with the options below (the tested defaults of docs/training.md), then
``rematerialize`` (Boolean pre-activations are recomputed in the backward pass instead
of kept) and ``schedule-updates`` (each weight signal dies at its update). A module that
already has @train_step gets the same from insert-optimizer on (insert-optimizer only
if it has gradients but no updates).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields

import numpy as np

from boldc.errors import BoldcError
from boldc.ir.core import Module
from boldc.ir.verifier import verify
from boldc.ops.loss_ops import IGNORE_INDEX
from boldc.ops.registry import lookup
from boldc.ops.traits import GradientSink, Loss, Optimizer

# The defaults of docs/training.md ("Defaults"), tested on the digits MLP with batch 64.
DEFAULT_BATCH = 64


@dataclass
class TrainOptions:
    """Options of the training step compile(train=True) builds (docs/training.md)."""

    loss: str = "softmax_xent"          # the loss op (trait "loss"): softmax_xent | mse | l1
    reduction: str = "mean"             # how the loss reduces over the batch: mean | sum
    ignore_index: int = IGNORE_INDEX    # softmax_xent: the label that gives no loss and no gradient
    threshold_grad: str = "tanh"        # threshold backward: tanh | box | bireal
    alpha: float = 0.0                  # its scale; 0 = π/(2√(3m)) from the fan-in m
    rescale: bool = False               # the input-signal rescaling of docs/method.md
    signal_bits: str = "16"             # backward signals of Boolean layers: 16 | 8 | 4 (integers) | f32
    rounding: str = "nearest"           # of integer signals: nearest | stochastic | log (4 bits)
    frozen: tuple[str, ...] = ()        # params (glob patterns) not trained
    freeze_float: bool = False          # train the b1 params only
    eta: float = 3.0                    # Boolean learning rate η
    accumulator: str = "f32"            # storage of the Boolean optimizer's accumulators: f32 | i16
    lr: float = 1e-3                    # Adam learning rate of the f32 params
    schedule: str | None = None         # constant | cosine | poly; None: cosine if total_steps else constant
    total_steps: int = 0                # T of the cosine / poly schedules
    eta_final: float = 0.0              # η (and lr) at t >= T
    seed: int = 0                       # shuffling of CompiledModel.fit, and stochastic rounding
    given: set = field(default_factory=set, repr=False)  # the options the caller set

    @classmethod
    def from_kwargs(cls, options: dict) -> TrainOptions:
        known = {f.name for f in fields(cls)} - {"given"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise BoldcError(f"compile(): unknown training option(s) {', '.join(unknown)} "
                             f"(options: {', '.join(sorted(known))})")
        given = {k for k, v in options.items() if v is not None}
        opts = cls(**{k: v for k, v in options.items() if v is not None})
        opts.frozen = tuple(opts.frozen)
        opts.signal_bits = str(opts.signal_bits)  # 16 and "16" alike
        opts.given = given
        opts._check()
        return opts

    def _check(self) -> None:
        """Numbers in range (NaN and infinities refused), so that no step computes with them."""
        for name, low, open_low in (("eta", 0, True), ("lr", 0, True), ("eta_final", 0, False)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < low or \
                    (open_low and v == low):
                raise BoldcError(f"training option {name} must be a finite number {'>' if open_low else '>='} {low}, "
                                 f"got {v!r}")
            with np.errstate(over="ignore", under="ignore"):
                single = np.float32(v)  # the generated step computes with the f32 value
            if not np.isfinite(single) or (open_low and single == 0):
                raise BoldcError(f"training option {name} = {v!r} is {'infinite' if single else 'zero'} in float32, "
                                 f"which the step computes in: use a value between 1.4e-45 and 3.4e38")
        for name in ("total_steps", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
                raise BoldcError(f"training option {name} must be an integer >= 0, got {v!r}")
        v = self.ignore_index
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not -2**31 <= v < 2**31:
            raise BoldcError(f"training option ignore_index must be an integer in the range of the i32 labels, "
                             f"got {v!r}")

    @property
    def resolved_schedule(self) -> str:
        return self.schedule or ("cosine" if self.total_steps > 0 else "constant")


def _has_updates(module: Module) -> bool:
    """@train_step has its optimizer (update ops with the trait Optimizer)."""
    return any(lookup(op.name).has(Optimizer) for op in module.function("train_step").ops)


def _has_gradient_sinks(module: Module) -> bool:
    return any(lookup(op.name).has(GradientSink) for op in module.function("train_step").ops)


def training_module(module: Module, opts: TrainOptions) -> Module:
    """A copy of ``module`` with an optimised @train_step (see the module docstring)."""
    from boldc.passes.autodiff import Autodiff
    from boldc.passes.insert_optimizer import InsertOptimizer
    from boldc.passes.rematerialize import Rematerialize
    from boldc.passes.schedule_updates import ScheduleUpdates

    m = module.copy()
    if "forward" not in m.functions:
        raise BoldcError("compile(train=True) needs a module with @forward")
    autodiff_opts = {"loss", "reduction", "ignore_index", "threshold_grad", "alpha", "rescale", "signal_bits",
                     "rounding"}
    if "train_step" not in m.functions:
        autodiff = Autodiff(loss=opts.loss, reduction=opts.reduction, ignore_index=opts.ignore_index,
                            threshold_grad=opts.threshold_grad, alpha=opts.alpha, rescale=opts.rescale,
                            frozen=list(opts.frozen),
                            freeze_float=opts.freeze_float, signal_bits=opts.signal_bits, rounding=opts.rounding,
                            seed=opts.seed)
        autodiff.check_requirements(m)
        autodiff.run(m)
    elif opts.given & autodiff_opts:
        names = ", ".join(sorted(opts.given & autodiff_opts))
        raise BoldcError(f"the module already has @train_step: option(s) {names} apply only when compile builds it")
    if _has_gradient_sinks(m):
        schedule = opts.resolved_schedule
        InsertOptimizer(eta=opts.eta, lr=opts.lr, schedule=schedule, lr_schedule=schedule,
                        total_steps=opts.total_steps, eta_final=opts.eta_final, frozen=list(opts.frozen),
                        freeze_float=opts.freeze_float, accumulator=opts.accumulator).run(m)
    elif not _has_updates(m):
        raise BoldcError("nothing to train: no f32 or b1 param of the model reaches the loss, or all are frozen "
                         "(@train_step has neither gradients nor optimizer updates)")
    elif opts.given - {"seed"}:
        raise BoldcError(f"the module's @train_step already has its optimizer: option(s) "
                         f"{', '.join(sorted(opts.given - {'seed'}))} do not apply")
    Rematerialize().run(m)
    ScheduleUpdates().run(m)
    verify(m)
    return m


def loss_op(module: Module):
    """The loss op of @train_step (the op with the trait "loss" whose value it returns)."""
    fn = module.function("train_step")
    for op in fn.ops:
        if lookup(op.name).has(Loss) and op.results and any(v is op.results[0] for v in fn.returns):
            return op
    raise BoldcError("@train_step returns no loss (an op with the trait 'loss')")
