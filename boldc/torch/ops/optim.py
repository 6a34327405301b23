"""Implementations of the optimizer ops (boldc/ops/optim_ops.py). The torch optimizers of
``boldc.torch.optim`` call them on their params and state; ``param_grad`` has no
implementation: autograd hands each gradient over as the param's ``.grad``."""

from __future__ import annotations

import torch

from boldc.ops.optim_ops import I16_LIMIT, schedule_value
from boldc.torch.numerics import F64
from boldc.torch.ops.common import F32
from boldc.torch.registry import implements, not_implemented

not_implemented("param_grad", "autograd hands the gradient of a param over as its .grad; the torch optimizers "
                              "(boldc.torch.BooleanOptimizer, boldc.torch.Adam) update it")


@implements("flip_update")
def flip_update(call, w, m, beta, q, eta, saturated=None):
    """The Boolean optimizer (``FlipUpdate.evaluate``) on ±1 weights: M <- fl(fl(β·M) + fl(η·q)) in
    three float32 operations (separate kernels: no fused multiply-add), flip where M·e(W) >= 1,
    W <- -W and M <- 0 there, β <- fl32(kept / numel). ``beta`` and ``eta`` are float32 scalars.
    An i16 accumulator holds M in units of ``m_step``, rounded half to even and saturated."""
    fixed = m.dtype == torch.int16
    step = torch.tensor(call.attrs["m_step"], dtype=F32, device=m.device)
    current = m.to(F32) * step if fixed else m
    acc = beta * current + eta * q
    out_saturated = None
    # W ? M >= 1 : M <= -1 is M·e(W) >= 1: multiplying by ±1 is exact
    if fixed:
        units = torch.round(acc.to(F64) / float(step))
        out_saturated = torch.clamp((units.abs() > I16_LIMIT).sum() + saturated.to(torch.int64), max=2**31 - 1)
        units = torch.clamp(units, -I16_LIMIT, I16_LIMIT)
        flip = units * w >= 1.0 / float(step)
        new_m = units.masked_fill(flip, 0.0).to(torch.int16)
    else:
        flip = acc * w >= 1.0
        new_m = acc.masked_fill(flip, 0.0)
    numel = flip.numel()
    kept = numel - int(flip.sum())
    new_beta = torch.tensor(kept / numel if numel else 1.0, dtype=F32, device=m.device)
    out = (torch.where(flip, -w, w), new_m, new_beta)
    return out + ((out_saturated.to(torch.int32),) if fixed else ())


@implements("adam_update")
def adam_update(call, p, m, v, g, lr, step):
    """Adam as ``AdamUpdate.evaluate``: in double, t = step + 1, rounded to float32; ``lr`` is the
    float32 learning rate, ``step`` the steps done."""
    a = call.attrs
    b1, b2 = a["beta1"], a["beta2"]
    p, m, v, g = (x.to(F64) for x in (p, m, v, g))
    t = float(step) + 1.0
    g = g + a["weight_decay"] * p
    m = b1 * m + (1.0 - b1) * g
    v = b2 * v + (1.0 - b2) * g * g
    p = p - float(lr) * (m / (1.0 - b1 ** t)) / (torch.sqrt(v / (1.0 - b2 ** t)) + a["eps"])
    return p.to(F32), m.to(F32), v.to(F32)


@implements("lr_schedule")
def lr_schedule(call, step):
    """η_t in double, rounded to float32 (a 0-d tensor)."""
    a = call.attrs
    value = schedule_value(a["schedule"], a["base"], a["final"], int(step), a["total_steps"], a["power"])
    return (torch.tensor(value, dtype=F32),)


@implements("increment")
def increment(call, step):
    return (torch.clamp(step + 1, max=2**31 - 1),)
