"""fold-bn: a kept normalization followed by a threshold becomes a per-channel threshold.

For inference (docs/method.md §2): ``threshold(batchnorm(s))`` on an integer pre-activation s
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

Only ops with the trait ``PerChannelAffine`` (a per-channel function of x whose other
operands are per-channel params: BatchNorm) on integer inputs whose single user is a
scalar threshold (the ``Binarize`` op) are folded; float inputs keep their BatchNorm, and
normalizations that are not per channel (LayerNorm) are left alone.
"""

from __future__ import annotations

import numpy as np

from boldc.ir.builder import unique_name
from boldc.ir.core import Module, Op, Param
from boldc.ir.rewriter import Rewriter
from boldc.ir.types import DType, TensorType
from boldc.ops.registry import lookup
from boldc.ops.traits import Binarize, PerChannelAffine
from boldc.passes.dce import DeadCodeElimination
from boldc.passes.manager import Pass, register_pass


def channel_predicate(norm: Op, thr: Op):
    """P(s) for candidates s of shape [K, C] (one column per channel): the b1 result of
    the threshold applied to the normalization, as the interpreter computes them."""
    norm_def, thr_def = lookup(norm.name), lookup(thr.name)
    params = [p.data for p in norm.operands[1:]]  # the trait's per-channel params

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
            rw = Rewriter(fn)
            for norm in list(fn.ops):
                thr = self._foldable_threshold(rw, norm)
                if thr is None:
                    continue
                s = norm.operands[0]
                tau, ge = fold_thresholds(channel_predicate(norm, thr), s.type.shape[1], s.type.dtype)
                base = norm.operands[1].name.rsplit(".", 1)[0] if isinstance(norm.operands[1], Param) else "bn"
                operands = [s, self._param(module, f"{base}.tau", tau)]
                if not ge.all():
                    operands.append(self._param(module, f"{base}.ge", ge))
                rw.set_operands(thr, operands)
                thr.attrs = {k: v for k, v in thr.attrs.items() if k != "tau"}
                rw.erase(norm)
                changed = True
        if changed:
            DeadCodeElimination().run(module)
        return changed

    @staticmethod
    def _foldable_threshold(rw: Rewriter, norm: Op) -> Op | None:
        """The threshold that is the only reader of a per-channel normalization of an integer
        pre-activation (channel axis 1, params with data), or None."""
        affine = lookup(norm.name).trait(PerChannelAffine)
        if affine is None or affine.axis != 1 or not norm.operands[0].type.dtype.is_int:
            return None
        if not all(isinstance(p, Param) and p.data is not None for p in norm.operands[1:]):
            return None
        y = norm.results[0]
        users = rw.users(y)
        if len(users) != 1 or any(v is y for v in rw.fn.returns):
            return None
        thr = users[0]
        if not lookup(thr.name).has(Binarize) or len(thr.operands) != 1:
            return None
        return thr

    @staticmethod
    def _param(module: Module, base: str, data: np.ndarray) -> Param:
        name = unique_name(base, set(module.params))
        dtype = DType.b1 if data.dtype == np.bool_ else DType.i32
        return module.add_param(name, TensorType(dtype, data.shape), data)
