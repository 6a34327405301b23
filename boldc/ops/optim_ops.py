"""Optimizer ops: learning-rate schedules and parameter updates (docs/method.md §4, docs/training.md).

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

from boldc.ir.types import DType, TensorType
from boldc.ir.works import ARITH, LOGIC, UPDATE, add_op, stream
from boldc.ops.common import expect_dtype
from boldc.ops.registry import Attr, NotDifferentiable, OpDef, TypeCheck, register
from boldc.ops.traits import Boolean, Optimizer, SideEffect

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
    traits = (Optimizer(),)
    backward = NOT_DIFFERENTIABLE

    def cost(self, ctx):
        """A scalar formula (cosine, power) on the step counter, charged 10 arithmetic operations."""
        return [stream("schedule", UPDATE, ctx.operands, ctx.results, ARITH.times(10))]

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


ACCUMULATORS = ("f32", "i16")
DEFAULT_M_STEP = 2.0 ** -10  # one unit of an i16 accumulator: |M| up to 32 in steps of 1/1024
I16_LIMIT = 32767


def m_step_problem(step, name: str = "m_step") -> str | None:
    """Why ``step`` cannot be the unit of an i16 accumulator, or None: a power of two, at
    most 1/2, and at least 2^-14 so that the largest stored value, 32767 units, reaches the
    flip threshold |M| >= 1 (with 2^-15 it never would: no weight could flip)."""
    if not isinstance(step, (int, float)) or not math.isfinite(step) or step <= 0:
        return f"{name} {step} must be a power of two in [2^-14, 1/2]"
    mantissa, _ = math.frexp(step)
    if mantissa != 0.5 or not 2.0 ** -14 <= step <= 0.5:
        return f"{name} {step} must be a power of two in [2^-14, 1/2]"
    return None


@register
class FlipUpdate(OptimOp):
    """The Boolean optimizer step of docs/method.md §4 for a b1 param W with accumulator M,
    scalar β, weight signal q and learning rate η:

        M <- fl(fl(β·M) + fl(η·q))
        flip = M·e(W) >= 1;   W <- ¬W and M <- 0 where flip
        β <- fl32(kept / numel)      (kept = number of entries not flipped; double division)

    M is f32, or i16 fixed point (docs/training.md, "Accumulator storage"): M = m · ``m_step``
    (a power of two); the new M is rounded to the nearest multiple of m_step (half to even)
    and saturated at ±32767 steps, the flip decided on the stored value, and the entries
    that saturated this step added to the counter ``saturated`` (i32[], saturating)."""

    name = "flip_update"
    operands = ("w", "m", "beta", "q", "eta", "saturated?")
    updates = ("w", "m", "beta", "saturated")
    attrs = (Attr("m_step", "float", DEFAULT_M_STEP, doc="value of one unit of an i16 accumulator"),)
    traits = (SideEffect(), Optimizer(), Boolean())

    def cost(self, ctx):
        """Per element of W: M <- β·M + η·q: two multiplications and one addition at M's
        width; flip = M·e(W) >= 1: one conditional negation and one comparison; W <- ¬W and
        M <- 0 where flip: one logic operation each; counting the kept entries for β: an
        adder tree over the flip bits, below 3 logic operations per bit (Σ_k (2k-1)/2^k = 3)."""
        w, m, beta, q, eta = ctx.operands[:5]
        per = ARITH.times(2) + add_op(m) + LOGIC + add_op(m) + LOGIC.times(2) + LOGIC.times(3)
        return [stream("update", UPDATE, ctx.operands, (w, m, beta, *ctx.operands[5:]), per.times(w.numel))]

    @classmethod
    def check_attrs(cls, attrs):
        problem = m_step_problem(attrs["m_step"])
        if problem:
            raise TypeCheck(problem)

    def infer(self, types, attrs):
        w, m, beta, q, eta = types[:5]
        expect_dtype(w, "bool", "weights")
        if m.dtype is DType.i16:
            _same(m, w, DType.i16, "accumulator")
            if len(types) < 6 or types[5] != I32_SCALAR:
                raise TypeCheck("an i16 accumulator needs the saturation counter (i32[]) as operand 6")
        else:
            _same(m, w, DType.f32, "accumulator")
            if len(types) > 5:
                raise TypeCheck("an f32 accumulator has no saturation counter")
        _same(q, w, DType.f32, "weight signal")
        _expect(beta, F32_SCALAR, "beta")
        _expect(eta, F32_SCALAR, "learning rate")
        return []

    def evaluate(self, args, attrs):
        w, m, beta, q, eta = args[:5]
        f32 = np.float32
        fixed = m.dtype == np.int16
        step = f32(attrs["m_step"])
        current = (m.astype(f32) * step).astype(f32) if fixed else m  # exact: a power of two
        acc = (f32(beta) * current).astype(f32) + (f32(eta) * q).astype(f32)
        if fixed:
            units = np.rint(acc.astype(np.float64) / float(step))  # exact scaling, then half to even
            saturated = int(np.count_nonzero(np.abs(units) > I16_LIMIT))
            units = np.clip(units, -I16_LIMIT, I16_LIMIT)
            one = 1.0 / float(step)
            flip = np.where(w, units >= one, units <= -one)
            new_m = np.where(flip, 0, units).astype(np.int16)
        else:
            flip = np.where(w, acc >= f32(1), acc <= f32(-1))
            new_m = np.where(flip, f32(0), acc).astype(f32)
        kept = int(flip.size - np.count_nonzero(flip))
        new_beta = np.array(kept / flip.size if flip.size else 1.0, dtype=f32)
        out = [w ^ flip, new_m, new_beta]
        if fixed:
            out.append(np.array(min(int(args[5]) + saturated, 2**31 - 1), dtype=np.int32))
        return out


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
    traits = (SideEffect(), Optimizer())

    def cost(self, ctx):
        """m and v updates (3 + 4 operations), bias corrections (2), square root, ε,
        division, learning rate and subtraction (5): 14 arithmetic operations per element;
        reads p, m, v, g, writes p, m, v."""
        p, m, v, g, lr, step = ctx.operands
        return [stream("update", UPDATE, (p, m, v, g, lr, step), (p, m, v), ARITH.times(14 * p.numel))]

    def infer(self, types, attrs):
        p, m, v, g, lr, step = types
        expect_dtype(p, "float", "param")
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
    traits = (SideEffect(), Optimizer())

    def cost(self, ctx):
        """One integer addition."""
        step = ctx.operands[0]
        return [stream("step", UPDATE, (step,), (step,), add_op(step))]

    def infer(self, types, attrs):
        _expect(types[0], I32_SCALAR, "step counter")
        return []

    def evaluate(self, args, attrs):
        step = int(args[0])
        return [np.array(min(step + 1, 2**31 - 1), dtype=np.int32)]
