"""Optimizer ops: learning-rate schedules and parameter updates (SPEC §4, docs/training.md).

Update ops have no results; they declare the params they overwrite (``updates``) and
``evaluate`` returns the new values. The interpreter commits every update of a step
when the function returns, so all ops of a step read the values from its start.

The Boolean update is written as a fixed sequence of f32 operations (no fused
multiply-add) so that generated code reproduces it bit for bit:

    M1 = fl(β·M);  M2 = fl(η·q);  M = fl(M1 + M2)
    flip = W ? (M >= 1) : (M <= -1)          (M·e(W) >= 1, exact: negation does not round)
"""

from __future__ import annotations

import math

import numpy as np

from boldc.backend import grad_kernels as GK
from boldc.energymodel import works as E
from boldc.ir.types import DType, TensorType
from boldc.ops import common as C
from boldc.ops.registry import Attr, NotDifferentiable, OpDef, TypeCheck, register

NOT_DIFFERENTIABLE = NotDifferentiable("an optimizer op")
SCHEDULES = ("constant", "cosine", "poly")
F32_SCALAR = TensorType(DType.f32, ())
I32_SCALAR = TensorType(DType.i32, ())


def _expect(t: TensorType, want: TensorType, what: str) -> None:
    if t != want:
        raise TypeCheck(f"{what} must be {want}, got {t}")


def _same(t: TensorType, w: TensorType, dtype: DType, what: str) -> None:
    if t.dtype is not dtype or tuple(t.shape) != tuple(w.shape):
        raise TypeCheck(f"{what} must be {dtype}{list(w.shape)}, got {t}")


class OptimOp(OpDef):
    backward = NOT_DIFFERENTIABLE


def schedule_value(schedule: str, base: float, final: float, step: int, total: int, power: float) -> float:
    """η_t in float64 (rounded to f32 by the caller). t is clamped to [0, total]."""
    if schedule == "constant":
        return base
    t = min(max(step, 0), total)
    if schedule == "cosine":
        return final + 0.5 * (base - final) * (1.0 + math.cos(math.pi * t / total))
    return final + (base - final) * (1.0 - t / total) ** power


@register
class LrSchedule(OptimOp):
    """η_t for the step counter t (the number of steps done), computed in float64 and
    rounded once to f32, with T = total_steps and t clamped to [0, T]:

    - constant: η_t = base
    - cosine:   η_t = final + (base - final)·(1 + cos(π t / T)) / 2
    - poly:     η_t = final + (base - final)·(1 - t / T)^power"""

    name = "lr_schedule"
    operands = ("step",)
    attrs = (Attr("schedule", "str", "constant", choices=SCHEDULES),
             Attr("base", "float"),
             Attr("total_steps", "int", 0, doc="T; required by cosine and poly"),
             Attr("final", "float", 0.0, doc="η at t >= T"),
             Attr("power", "float", 1.0, doc="exponent of the poly schedule"))
    traits = frozenset({"optimizer"})
    backward = NOT_DIFFERENTIABLE

    def cost(self, ctx):
        return [E.schedule(ctx.operands[0], ctx.results[0])]

    def emit_c(self, cop):
        return GK.lr_schedule(cop)

    @classmethod
    def check_attrs(cls, attrs):
        if attrs["schedule"] != "constant" and attrs["total_steps"] < 1:
            raise TypeCheck(f"schedule {attrs['schedule']!r} needs total_steps >= 1")

    def infer(self, types, attrs):
        _expect(types[0], I32_SCALAR, "step counter")
        return [F32_SCALAR]

    def evaluate(self, args, attrs):
        eta = schedule_value(attrs["schedule"], attrs["base"], attrs["final"], int(args[0]),
                             attrs["total_steps"], attrs["power"])
        return [np.array(eta, dtype=np.float32)]


@register
class FlipUpdate(OptimOp):
    """The Boolean optimizer step of SPEC §4 for a b1 param W with accumulator M, scalar β,
    weight signal q and learning rate η:

        M <- fl(fl(β·M) + fl(η·q))
        flip = M·e(W) >= 1;   W <- ¬W and M <- 0 where flip
        β <- fl32(kept / numel)      (kept = number of entries not flipped; double division)"""

    name = "flip_update"
    operands = ("w", "m", "beta", "q", "eta")
    updates = ("w", "m", "beta")
    traits = frozenset({"side_effect", "optimizer", "boolean"})

    def cost(self, ctx):
        """SPEC §4 on W; the accumulator M is charged at the signal width."""
        w, m, beta, q, eta = ctx.operands
        return [E.flip_update(w, ctx.signal_like(m), q, (beta, eta))]

    def emit_c(self, cop):
        return GK.flip_update(cop)

    def infer(self, types, attrs):
        w, m, beta, q, eta = types
        C.expect_dtype(w, "bool", "weights")
        _same(m, w, DType.f32, "accumulator")
        _same(q, w, DType.f32, "weight signal")
        _expect(beta, F32_SCALAR, "beta")
        _expect(eta, F32_SCALAR, "learning rate")
        return []

    def evaluate(self, args, attrs):
        w, m, beta, q, eta = args
        f32 = np.float32
        acc = (f32(beta) * m).astype(f32) + (f32(eta) * q).astype(f32)
        flip = np.where(w, acc >= f32(1), acc <= f32(-1))
        kept = int(flip.size - np.count_nonzero(flip))
        new_beta = np.array(kept / flip.size if flip.size else 1.0, dtype=f32)
        return [w ^ flip, np.where(flip, f32(0), acc).astype(f32), new_beta]


@register
class AdamUpdate(OptimOp):
    """Adam (PyTorch's formulation) for an f32 param p with moments m, v, gradient g,
    learning rate lr and the step counter (t = step + 1):

        m <- β1 m + (1 - β1) g;  v <- β2 v + (1 - β2) g²
        p <- p - lr · (m / (1 - β1^t)) / (sqrt(v / (1 - β2^t)) + eps)

    computed in float64 and rounded to f32."""

    name = "adam_update"
    operands = ("p", "m", "v", "g", "lr", "step")
    updates = ("p", "m", "v")
    attrs = (Attr("beta1", "float", 0.9), Attr("beta2", "float", 0.999), Attr("eps", "float", 1e-8),
             Attr("weight_decay", "float", 0.0, doc="L2 penalty added to g (as torch.optim.Adam)"))
    traits = frozenset({"side_effect", "optimizer"})

    def cost(self, ctx):
        p, m, v, g, lr, step = ctx.operands
        return [E.adam_update(p, m, v, g, (lr, step))]

    def emit_c(self, cop):
        return GK.adam_update(cop)

    def infer(self, types, attrs):
        p, m, v, g, lr, step = types
        C.expect_dtype(p, "float", "param")
        for name, t in (("first moment", m), ("second moment", v), ("gradient", g)):
            _same(t, p, DType.f32, name)
        _expect(lr, F32_SCALAR, "learning rate")
        _expect(step, I32_SCALAR, "step counter")
        return []

    def evaluate(self, args, attrs):
        p, m, v, g, lr, step = (a.astype(np.float64) for a in args)
        b1, b2 = attrs["beta1"], attrs["beta2"]
        t = float(step) + 1.0
        g = g + attrs["weight_decay"] * p
        m = b1 * m + (1.0 - b1) * g
        v = b2 * v + (1.0 - b2) * g * g
        p = p - float(lr) * (m / (1.0 - b1 ** t)) / (np.sqrt(v / (1.0 - b2 ** t)) + attrs["eps"])
        return [p.astype(np.float32), m.astype(np.float32), v.astype(np.float32)]


@register
class Increment(OptimOp):
    """step <- step + 1 (the step counter; saturates at the i32 maximum)."""

    name = "increment"
    operands = ("step",)
    updates = ("step",)
    traits = frozenset({"side_effect", "optimizer"})

    def cost(self, ctx):
        return [E.increment(ctx.operands[0])]

    def emit_c(self, cop):
        return GK.increment(cop)

    def infer(self, types, attrs):
        _expect(types[0], I32_SCALAR, "step counter")
        return []

    def evaluate(self, args, attrs):
        step = int(args[0])
        return [np.array(min(step + 1, 2**31 - 1), dtype=np.int32)]
