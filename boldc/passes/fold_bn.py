"""fold-bn: a kept normalization followed by a threshold becomes a per-channel threshold.

For inference (SPEC §2): ``threshold(batchnorm(s))`` on an integer pre-activation s
equals ``threshold(s, @tau, @ge)``: channel c gives T iff ``s >= tau[c]`` (ge[c] = T)
or ``s <= tau[c]`` (ge[c] = F, a negative BatchNorm scale).

tau is not derived by algebra (that would be off by one wherever float rounding
lands on a boundary) but by searching the integers: the predicate
``P(s) = threshold(bn(s))``, computed with the registry's own float32 evaluation of
both ops, is monotone in s for each channel (every rounding step is monotone), so a
bisection over the input's integer range finds where it changes, and the result is
checked at the candidate integers. A channel with a constant predicate (scale == 0,
or no change inside the range) gets a tau outside the range. For i8 and i16 inputs
the folded threshold is exact over the whole type range; for i32 inputs (sums of
pre-activations) over every value but the type's extremes, which no pre-activation
reaches.

Only normalizations on integer inputs whose single user is a scalar threshold are
folded; float inputs keep their BatchNorm.
"""

from __future__ import annotations

import numpy as np

from boldc.ir.core import Module, Op, Param
from boldc.ir.types import DType, TensorType
from boldc.ops.registry import lookup
from boldc.passes.dce import DeadCodeElimination
from boldc.passes.lower_boolean import has_trait
from boldc.passes.manager import Pass, register_pass


def channel_predicate(norm: Op, thr: Op):
    """P(s) for candidates s of shape [K, C] (one column per channel): the b1 result of
    the threshold applied to the normalization, as the interpreter computes them."""
    norm_def, thr_def = lookup(norm.name), lookup(thr.name)
    params = [p.data for p in norm.operands[1:]]

    def predicate(s: np.ndarray) -> np.ndarray:
        y = norm_def.evaluate([s] + params, norm.attrs)[0]
        return thr_def.evaluate([y], thr.attrs)[0]

    return predicate


def fold_thresholds(predicate, channels: int, dtype: DType) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (tau as int32, ge as bool) such that ``s >= tau`` (ge) or ``s <= tau``
    (not ge) equals ``predicate(s)`` for every s of ``dtype`` (see the module docstring
    for i32)."""
    lo, hi = dtype.int_range
    np_t = dtype.numpy

    def at(values: np.ndarray) -> np.ndarray:
        return predicate(np.asarray(values, dtype=np.int64).reshape(1, channels).astype(np_t))[0]

    p_lo, p_hi = at(np.full(channels, lo)), at(np.full(channels, hi))
    # Q(s) = P(s) != P(lo) is F at lo and, where P changes, T at hi: bisect for its first T.
    a = np.full(channels, lo, dtype=np.int64)  # Q(a) = F
    b = np.full(channels, hi, dtype=np.int64)  # Q(b) = T (where P changes)
    while np.any(b - a > 1):
        mid = (a + b) // 2
        q = at(mid) != p_lo
        a, b = np.where(q, a, mid), np.where(q, mid, b)
    i32_lo, i32_hi = DType.i32.int_range
    constant = p_lo == p_hi
    rising = ~p_lo  # F below the change, T from it: s >= b
    tau = np.where(rising, b, b - 1)  # falling: T up to b - 1: s <= b - 1
    ge = rising.copy()
    # Constant channels: always T -> s >= lo; always F -> s >= hi + 1 (i32: its maximum).
    tau = np.where(constant & p_lo, lo, tau)
    tau = np.where(constant & ~p_lo, min(hi + 1, i32_hi), tau)
    ge = np.where(constant, True, ge)
    tau = np.clip(tau, i32_lo, i32_hi).astype(np.int32)
    _check(at, tau, ge, lo, hi if hi < i32_hi else hi - 1)
    return tau, ge


def _check(at, tau, ge, lo, hi) -> None:
    """The folded threshold agrees with the predicate at the candidates (and, clipped, the ends)."""
    for offset in (-1, 0, 1):
        s = np.clip(tau.astype(np.int64) + offset, lo, hi)
        want = at(s)
        got = np.where(ge, s >= tau, s <= tau)
        if not np.array_equal(want, got):
            bad = int(np.flatnonzero(want != got)[0])
            raise AssertionError(f"fold-bn: channel {bad} is not monotone at s = {s[bad]} (bug)")


@register_pass
class FoldBatchNorm(Pass):
    name = "fold-bn"

    def run(self, module: Module) -> bool:
        changed = False
        for fn in module.functions.values():
            users: dict[int, list[Op]] = {}
            for op in fn.ops:
                for v in op.operands:
                    users.setdefault(id(v), []).append(op)
            returned = {id(v) for v in fn.returns}
            dropped = set()
            for norm in fn.ops:
                s = norm.operands[0] if norm.operands else None
                if not has_trait(norm, "normalization") or not s.type.dtype.is_int:
                    continue
                after = users.get(id(norm.results[0]), [])
                if len(after) != 1 or id(norm.results[0]) in returned:
                    continue
                thr = after[0]
                if not has_trait(thr, "binarize") or len(thr.operands) != 1:
                    continue
                channels = s.type.shape[1]
                tau, ge = fold_thresholds(channel_predicate(norm, thr), channels, s.type.dtype)
                base = norm.operands[1].name.rsplit(".", 1)[0] if isinstance(norm.operands[1], Param) else "bn"
                operands = [s, self._param(module, f"{base}.tau", tau)]
                if not ge.all():
                    operands.append(self._param(module, f"{base}.ge", ge))
                thr.operands = operands
                thr.attrs = {k: v for k, v in thr.attrs.items() if k != "tau"}
                dropped.add(id(norm))
                changed = True
            fn.ops = [op for op in fn.ops if id(op) not in dropped]
        if changed:
            DeadCodeElimination().run(module)
        return changed

    @staticmethod
    def _param(module: Module, base: str, data: np.ndarray) -> Param:
        name, k = base, 0
        while name in module.params:
            k += 1
            name = f"{base}.{k}"
        dtype = DType.b1 if data.dtype == np.bool_ else DType.i32
        return module.add_param(name, TensorType(dtype, data.shape), data)
