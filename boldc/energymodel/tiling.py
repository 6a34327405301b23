"""Tiling, dataflow and access counts of a convolution (docs/method.md §6, items 1-4).

Loops and streams. A convolution is a loop nest over five tiled dimensions: n (batch),
m and c (channels), y and x (the output's spatial positions); the kernel (kh, kw) is
never split. Three streams, named as in the table of docs/method.md §6, each depend on some of them:

    kind            I (ifmap, L0-A)    F (filter, L0-B)    O (output, L0-C)    reduction
    forward         x  [n, c, halo]    W  [m, c, kernel]   y  [n, m, y, x]     c
    input_signal    dy [n, m, halo]    W  [m, c, kernel]   dx [n, c, y, x]     m
    weight_signal   x  [n, c, halo]    dy [n, m, y, x]     dW [m, c, kernel]   n, y, x

("halo": the rows and columns of the stored tensor a spatial tile of outputs needs.)

Tiles. A tiling chooses, for L2, L1 and L0, a tile size per dimension; each tile size
divides the one of the level above (so tiles partition their parent exactly: no ragged
edges, every ratio ⌈D_i+1/D_i⌉ is exact). Capacity: at L2 and L1 the tiles of I, F and O
together fit the level (the method's Q_i counts I and F; these levels "hold everything", so
the partial sums that live there are counted too); at L0 the I tile fits L0-A, the F
tile L0-B and the O tile L0-C. Bits per element come from the streams.

Dataflow and counts (docs/method.md §6). Filters stay, ifmaps cycle, output stationary at L0.
n_i^d is how many times each element of stream d held at level i is read out of it:

    I:  n_3 = ⌈M/M_2⌉·h(2),  n_2 = ⌈M_2/M_1⌉·h(1)/h(2),  n_1 = ⌈M_1/M_0⌉·h(0)/h(1),
        n_0 = MACs / (|I| · M_0 · n_3 n_2 n_1)        (= H^F·W^F·α_0^v·α_0^h)
    F:  n_3 = 1,  n_2 = ⌈N/N_2⌉⌈H^O/H_2^O⌉⌈W^O/W_2^O⌉,  n_1, n_0 likewise between levels
    O:  n_3 = ⌈C/C_2⌉,  n_2 = ⌈C_2/C_1⌉,  n_1 = 1,  n_0 = ⌈C_1/C_0⌉

where M and (N, H^O, W^O) stand for the dimensions I and F do not depend on, C for
the reduction (see the table above: for input_signal M and C swap). h(i) is the halo
factor α^v α^h / (α_i^v α_i^h) of the method, computed exactly: the rows the tiles of level i
read (clipped to the tensor: padding is never read) over the rows stored. The O counts
are the method's 1 when the reduction is not split; when it is, each further reduction
block is one read-modify-write of the partial sums at the level that keeps them (L3
and L2 above, L0-C at L0: output stationary), which is what the E^O formula's
(n - 1) terms count.

Energy (docs/method.md §6), S_d the stream's bytes, ε_i = 1/EE_i:

    E^d = S_d·(n_3 ε_3 + n_3 n_2 ε_2 + n_3 n_2 n_1 ε_1 + n_3 n_2 n_1 n_0 ε_0)
    E^O = S_O·((2n_3 - 1) ε_3 + 2n_3(n_2 - 1) ε_2 + 2n_3 n_2(n_1 - 1) ε_1 + 2n_3 n_2 n_1(n_0 - 1) ε_0)

Search. The products n_3·...·n_j telescope, so the total is a sum of terms that each
depend on one level's tile only; the exhaustive search over all nested divisor tilings
is then a dynamic programme over the levels (L0, then L1, then L2), vectorised with
numpy over every candidate tile of a level, and exact: it returns the tiling of least
data-movement energy (ties: the larger tile).

Sizes, not samples. The candidates of a dimension are its divisors, built from its
prime factors; the batch's are only those whose tile can fit L2 at all (every stream's
I tile grows with n: a larger batch tile fits nowhere, so leaving it out changes
nothing). The "min over the tiles that divide t" of the programme steps down by one
prime factor at a time. The search's time thus depends on the divisors of the sizes,
not on their magnitude: a batch of 10^12 costs about what a batch of 10^3 does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from boldc.energymodel.hardware import Hardware
from boldc.errors import BoldcError
from boldc.ir.works import ConvWork

DIMS = ("n", "m", "c", "y", "x")
TILED_LEVELS = ("L2", "L1", "L0")
MEMORY = ("L3", "L2", "L1", "L0")
L0_BUFFER = {"I": "L0A", "F": "L0B", "O": "L0C"}

# stream -> (channel dims it depends on, spatial mode)
ROLES = {
    "forward": {"I": ("nc", "halo"), "F": ("mc", "kernel"), "O": ("nm", "direct")},
    "input_signal": {"I": ("nm", "halo"), "F": ("mc", "kernel"), "O": ("nc", "direct")},
    "weight_signal": {"I": ("nc", "halo"), "F": ("nm", "direct"), "O": ("mc", "kernel")},
}


def _missing(kind: str, stream: str) -> tuple[str, ...]:
    """Loop dimensions the stream does not depend on (it is re-read, or re-accumulated,
    once per block of them)."""
    dims, spatial = ROLES[kind][stream]
    present = set(dims) | ({"y", "x"} if spatial in ("halo", "direct") else set())
    return tuple(d for d in DIMS if d not in present)


class TilingError(BoldcError):
    """No tiling fits the memory levels."""


@dataclass(frozen=True)
class Problem:
    """One group of a convolution, in the terms of the search (hashable: results are
    cached per shape)."""

    kind: str
    sizes: tuple[int, int, int, int, int]  # n, m, c, y, x (full, per group)
    a_hw: tuple[int, int]  # stored spatial size of the I stream
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad: tuple[int, int]  # top, left
    bits: tuple[int, int, int]  # I, F, O
    macs: int

    @classmethod
    def of(cls, work: ConvWork) -> Problem:
        g = work.geom
        n, m, c = g.n, g.m // g.groups, g.c // g.groups
        if work.kind == "input_signal":
            spatial, a_hw = (g.h, g.w), (g.ho, g.wo)
        else:
            spatial, a_hw = (g.ho, g.wo), (g.h, g.w)
        return cls(work.kind, (n, m, c, *spatial), a_hw, (g.kh, g.kw), g.stride, g.dilation, (g.pad[0], g.pad[1]),
                   (work.i.bits, work.f.bits, work.o.bits), g.macs // g.groups)

    def numel(self, stream: str) -> int:
        n, m, c, y, x = self.sizes
        dims, spatial = ROLES[self.kind][stream]
        size = {"n": n, "m": m, "c": c}
        count = math.prod(size[d] for d in dims)  # Python ints: a huge batch must not overflow int64
        if spatial == "halo":
            return count * self.a_hw[0] * self.a_hw[1]
        if spatial == "direct":
            return count * y * x
        return count * self.kernel[0] * self.kernel[1]


@dataclass(frozen=True)
class ConvCost:
    """The chosen tiling of one group and what it costs (multiply by the group count)."""

    tiles: dict[str, tuple[int, ...]]  # level -> tile (n, m, c, y, x)
    tile_bits: dict[str, float]  # L2, L1 (I+F+O), L0A, L0B, L0C
    counts: dict[str, tuple[float, float, float, float]]  # stream -> n_3, n_2, n_1, n_0
    energy: dict[str, dict[str, float]]  # stream -> memory level key -> pJ
    stream_bytes: dict[str, float]


@lru_cache(maxsize=4096)
def prime_factors(d: int) -> tuple[tuple[int, int], ...]:
    """((p, e), ...) with d = Π p^e, by trial division up to √d."""
    out, p = [], 2
    while p * p <= d:
        e = 0
        while d % p == 0:
            d //= p
            e += 1
        if e:
            out.append((p, e))
        p += 1 if p == 2 else 2
    if d > 1:
        out.append((d, 1))
    return tuple(out)


@lru_cache(maxsize=4096)
def divisors(d: int, limit: int | None = None) -> list[int]:
    """The divisors of d (those at most ``limit``), increasing: products of its prime
    factors, so the cost depends on how many there are, not on d."""
    out = [1]
    for p, e in prime_factors(d):
        out = [v * p**k for v in out for k in range(e + 1) if limit is None or v * p**k <= limit]
    return sorted(out)


def _span(kind: str, a: int, t: int, a_size: int, k: int, s: int, dl: int, p: int) -> int:
    """Rows of the I stream from the first to the last that the outputs [a, a + t) read
    (padding is never read; a dilated kernel may skip rows, and its taps may all fall in the
    padding): for each tap i, the outputs o whose row o·s - p + i·dl is in [0, a_size)
    (input_signal: the dy rows oy with oy·s - p + i·dl in [a, a + t))."""
    lo, hi = None, None
    for i in range(k):
        off = i * dl - p
        if kind == "input_signal":
            first, last = max(-(-(a - off) // s), 0), min((a + t - 1 - off) // s, a_size - 1)
            rows = (first, last)
        else:
            first, last = max(a, -(off // s)), min(a + t - 1, (a_size - 1 - off) // s)
            rows = (first * s + off, last * s + off)
        if first <= last:
            lo = rows[0] if lo is None else min(lo, rows[0])
            hi = rows[1] if hi is None else max(hi, rows[1])
    return 0 if lo is None else hi - lo + 1


@lru_cache(maxsize=4096)
def _axis_rows(kind: str, size: int, a_size: int, k: int, s: int, dl: int, p: int) -> tuple[tuple, tuple]:
    """For each divisor T of ``size`` (tile of outputs along one axis): the rows of the
    I stream read by all tiles together (each tile's ``_span``) and the largest tile's."""
    totals, extents = [], []
    for t in divisors(size):
        spans = [_span(kind, a, t, a_size, k, s, dl, p) for a in range(0, size, t)]
        totals.append(sum(spans))
        extents.append(max(spans))
    return tuple(totals), tuple(extents)


class _Grid:
    """Every candidate tile (n, m, c, y, x) with divisor sizes, as broadcastable arrays."""

    def __init__(self, prob: Problem, batch_limit: int | None = None):
        self.prob = prob
        limits = (batch_limit, None, None, None, None)
        self.values = [np.array(divisors(d, lim), dtype=np.float64) for d, lim in zip(prob.sizes, limits)]
        shape = [len(v) for v in self.values]
        self.axes = {}
        for i, d in enumerate(DIMS):
            s = [1] * 5
            s[i] = shape[i]
            self.axes[d] = self.values[i].reshape(s)
        self.full = dict(zip(DIMS, (float(d) for d in prob.sizes)))
        rows = []
        for i in range(2):
            total, extent = _axis_rows(prob.kind, prob.sizes[3 + i], prob.a_hw[i], prob.kernel[i], prob.stride[i],
                                       prob.dilation[i], prob.pad[i])
            s = [1] * 5
            s[3 + i] = len(total)
            halo = np.array(total, np.float64).reshape(s) / prob.a_hw[i]
            rows.append((halo, np.array(extent, np.float64).reshape(s)))
        (self.halo_y, self.ext_y), (self.halo_x, self.ext_x) = rows

    def tile_elems(self, stream: str):
        dims, spatial = ROLES[self.prob.kind][stream]
        out = 1.0
        for d in dims:
            out = out * self.axes[d]
        if spatial == "halo":
            return out * self.ext_y * self.ext_x
        if spatial == "direct":
            return out * self.axes["y"] * self.axes["x"]
        return out * float(self.prob.kernel[0] * self.prob.kernel[1])

    def blocks(self, dims) -> np.ndarray | float:
        """Π over ``dims`` of full / tile."""
        out = 1.0
        for d in dims:
            out = out * (self.full[d] / self.axes[d])
        return out

    def tile_product(self, dims) -> np.ndarray | float:
        out = 1.0
        for d in dims:
            out = out * self.axes[d]
        return out


def _terms(grid: _Grid, hw: Hardware):
    """The per-level cost terms g_2, g_1, g_0 (arrays over the grid), the constant, and
    the cumulative counts as functions of a level's tile."""
    prob = grid.prob
    kind = prob.kind
    s_i, s_f, s_o = (prob.numel(s) * b / 8 for s, b in zip("IFO", prob.bits))
    e3, e2, e1 = hw.eps("L3"), hw.eps("L2"), hw.eps("L1")
    e0a, e0b, e0c = hw.eps("L0A"), hw.eps("L0B"), hw.eps("L0C")
    miss_i, miss_f, miss_o = (_missing(kind, s) for s in "IFO")
    a = grid.blocks(miss_i) * grid.halo_y * grid.halo_x  # cumulative I reads one level up
    l0 = prob.macs / (prob.numel("I") * grid.tile_product(miss_i))  # cumulative I reads at L0
    b = grid.blocks(miss_f)
    rho = grid.blocks(miss_o)
    g2 = s_i * a * e3 + s_f * b * e2 + s_o * rho * (2 * e3 - 2 * e2)
    g1 = s_i * a * e2 + s_f * b * e1 + s_o * rho * (2 * e2 - 2 * e0c)
    g0 = s_i * a * e1 + s_i * l0 * e0a + s_f * b * e0b + s_o * rho * 2 * e0c
    const = s_f * e3 - s_o * e3
    return g2, g1, g0, const


def _feasible(grid: _Grid, hw: Hardware) -> dict[str, np.ndarray]:
    bits = dict(zip("IFO", grid.prob.bits))
    size = {s: grid.tile_elems(s) * bits[s] for s in "IFO"}
    total = size["I"] + size["F"] + size["O"]
    shape = tuple(len(v) for v in grid.values)
    return {
        "L2": np.broadcast_to(total <= hw.capacity_bits("L2"), shape),
        "L1": np.broadcast_to(total <= hw.capacity_bits("L1"), shape),
        "L0": np.broadcast_to((size["I"] <= hw.capacity_bits("L0A")) & (size["F"] <= hw.capacity_bits("L0B"))
                              & (size["O"] <= hw.capacity_bits("L0C")), shape),
    }


def _downset_min(arr: np.ndarray, grid: _Grid) -> np.ndarray:
    """out[t] = min over the tiles t' dividing t (every dimension) of arr[t'].

    Per axis, in increasing order: out[v] = min(arr[v], out[v / p] for each prime p
    dividing v), the divisors of v being v and those of each v / p."""
    out = arr.copy()
    for axis, values in enumerate(grid.values):
        index = {int(v): i for i, v in enumerate(values)}
        primes = [p for p, _ in prime_factors(grid.prob.sizes[axis])]
        for i, v in enumerate(values.astype(np.int64).tolist()):
            here = _at(axis, i, out.ndim)
            for p in primes:
                if v % p == 0:
                    np.minimum(out[here], out[_at(axis, index[v // p], out.ndim)], out=out[here])
    return out


def _at(axis: int, i: int, ndim: int) -> tuple:
    """The index of entry ``i`` along ``axis`` (every other axis whole)."""
    return tuple(i if a == axis else slice(None) for a in range(ndim))


def _argmin_largest(arr: np.ndarray) -> tuple[int, ...]:
    """Index of the minimum; among equal minima the last in C order (larger tiles)."""
    flat = arr.ravel()
    i = flat.size - 1 - int(np.argmin(flat[::-1]))
    return tuple(int(k) for k in np.unravel_index(i, arr.shape))


def _restrict(arr: np.ndarray, grid: _Grid, parent: tuple[int, ...]) -> np.ndarray:
    """arr with +inf outside the tiles that divide the tile ``parent``."""
    mask = np.ones(arr.shape, dtype=bool)
    for axis, values in enumerate(grid.values):
        v = values.astype(np.int64)
        ok = v[parent[axis]] % v == 0
        s = [1] * 5
        s[axis] = len(values)
        mask = mask & ok.reshape(s)
    return np.where(mask, arr, np.inf)


def _batch_limit(prob: Problem, hw: Hardware) -> int | None:
    """The largest batch tile that can fit L2 with every other dimension's tile at 1
    (None: no limit). The I stream always depends on n, so a tile's bits are a·n + b
    with a > 0."""
    one = {"n": 1, "m": 1, "c": 1, "y": 1, "x": 1}
    cap = hw.capacity_bits("L2")
    a = b = 0
    for s, bits in zip("IFO", prob.bits):
        size = _tile_elems(prob, s, one) * bits
        if "n" in ROLES[prob.kind][s][0]:
            a += size
        else:
            b += size
    if not math.isfinite(cap) or a == 0:
        return None
    return max(1, int((cap - b) // a))


@lru_cache(maxsize=2048)
def _search(prob: Problem, hw: Hardware) -> ConvCost:
    grid = _Grid(prob, _batch_limit(prob, hw))
    g2, g1, g0, _ = _terms(grid, hw)
    feasible = _feasible(grid, hw)
    shape = tuple(len(v) for v in grid.values)
    best0 = np.where(feasible["L0"], np.broadcast_to(g0, shape), np.inf)
    if not np.isfinite(best0).any():
        raise TilingError(_no_fit_message(prob, hw))
    best1 = np.where(feasible["L1"], g1 + _downset_min(best0, grid), np.inf)
    best2 = np.where(feasible["L2"], g2 + _downset_min(best1, grid), np.inf)
    if not np.isfinite(best2).any():
        raise TilingError(_no_fit_message(prob, hw))
    i2 = _argmin_largest(best2)
    i1 = _argmin_largest(_restrict(best1, grid, i2))
    i0 = _argmin_largest(_restrict(best0, grid, i1))
    tiles = {lvl: tuple(int(grid.values[a][k]) for a, k in enumerate(idx))
             for lvl, idx in zip(TILED_LEVELS, (i2, i1, i0))}
    return evaluate_tiling(prob, hw, tiles)


def _no_fit_message(prob: Problem, hw: Hardware) -> str:
    one = {"n": 1, "m": 1, "c": 1, "y": 1, "x": 1}
    need = []
    for s, bits in zip("IFO", prob.bits):
        elems = _tile_elems(prob, s, one)
        need.append(f"{s} {elems * bits / 8 / 1024:.1f} KiB")
    return (f"no tiling of this {prob.kind.replace('_', ' ')} convolution fits the memory of {hw.name}: "
            f"the smallest tiles need {', '.join(need)} (L0-A {hw.levels['L0A'].capacity_kib:g} KiB, "
            f"L0-B {hw.levels['L0B'].capacity_kib:g} KiB, L0-C {hw.levels['L0C'].capacity_kib:g} KiB)")


def _tile_elems(prob: Problem, stream: str, tile: dict[str, int]) -> int:
    dims, spatial = ROLES[prob.kind][stream]
    count = math.prod(tile[d] for d in dims)
    if spatial == "halo":
        ext = []
        for i, axis in enumerate("yx"):
            sizes = divisors(prob.sizes[3 + i])
            _, extents = _axis_rows(prob.kind, prob.sizes[3 + i], prob.a_hw[i], prob.kernel[i], prob.stride[i],
                                    prob.dilation[i], prob.pad[i])
            ext.append(extents[sizes.index(tile[axis])])
        return count * ext[0] * ext[1]
    if spatial == "direct":
        return count * tile["y"] * tile["x"]
    return count * prob.kernel[0] * prob.kernel[1]


def evaluate_tiling(prob: Problem, hw: Hardware, tiles: dict[str, tuple[int, ...]]) -> ConvCost:
    """Counts and energies of a given nested tiling, straight from the formulas of docs/method.md §6."""
    full = dict(zip(DIMS, prob.sizes))
    t = {lvl: dict(zip(DIMS, tile)) for lvl, tile in tiles.items()}
    t["L3"] = full

    def ratio(dims, upper: str, lower: str) -> float:
        out = 1.0
        for d in dims:
            out *= -(-t[upper][d] // t[lower][d])  # ⌈D_upper / D_lower⌉ (exact: divisors)
        return out

    def halo(lvl: str) -> float:
        out = 1.0
        for i, axis in enumerate("yx"):
            total, _ = _axis_rows(prob.kind, prob.sizes[3 + i], prob.a_hw[i], prob.kernel[i], prob.stride[i],
                                  prob.dilation[i], prob.pad[i])
            out *= total[divisors(prob.sizes[3 + i]).index(t[lvl][axis])] / prob.a_hw[i]
        return out

    miss_i, miss_f, miss_o = (_missing(prob.kind, s) for s in "IFO")
    n_i = [ratio(miss_i, "L3", "L2") * halo("L2"),
           ratio(miss_i, "L2", "L1") * halo("L1") / halo("L2"),
           ratio(miss_i, "L1", "L0") * halo("L0") / halo("L1")]
    reads_l0 = prob.macs / (prob.numel("I") * float(np.prod([t["L0"][d] for d in miss_i])))
    n_i.append(reads_l0 / float(np.prod(n_i)))
    counts = {
        "I": tuple(n_i),
        "F": (1.0, ratio(miss_f, "L3", "L2"), ratio(miss_f, "L2", "L1"), ratio(miss_f, "L1", "L0")),
        "O": (ratio(miss_o, "L3", "L2"), ratio(miss_o, "L2", "L1"), 1.0, ratio(miss_o, "L1", "L0")),
    }
    nbytes = {s: prob.numel(s) * b / 8 for s, b in zip("IFO", prob.bits)}
    energy = {}
    for s in "IFO":
        eps = [hw.eps("L3"), hw.eps("L2"), hw.eps("L1"), hw.eps(L0_BUFFER[s])]
        keys = ["L3", "L2", "L1", L0_BUFFER[s]]
        n = counts[s]
        if s == "O":
            terms = [2 * n[0] - 1, 2 * n[0] * (n[1] - 1), 2 * n[0] * n[1] * (n[2] - 1),
                     2 * n[0] * n[1] * n[2] * (n[3] - 1)]
        else:
            terms = [n[0], n[0] * n[1], n[0] * n[1] * n[2], n[0] * n[1] * n[2] * n[3]]
        energy[s] = {k: nbytes[s] * c * e for k, c, e in zip(keys, terms, eps)}
    tile_bits = {}
    for lvl in ("L2", "L1"):
        tile_bits[lvl] = sum(_tile_elems(prob, s, t[lvl]) * b for s, b in zip("IFO", prob.bits))
    for s, b in zip("IFO", prob.bits):
        tile_bits[L0_BUFFER[s]] = _tile_elems(prob, s, t["L0"]) * b
    return ConvCost(dict(tiles), tile_bits, counts, energy, nbytes)


def conv_cost(work: ConvWork, hw: Hardware) -> ConvCost:
    """The least-energy tiling of one group of ``work`` (cached per shape)."""
    return _search(Problem.of(work), hw)
