"""The energy model of docs/method.md §6 on single convolutions: hand-worked cases, the tiling
search against brute force, and invariants of the tiling."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from boldc.energymodel.evaluate import evaluate
from boldc.energymodel.hardware import load_hardware, parse_hardware
from boldc.energymodel.tiling import Problem, conv_cost, evaluate_tiling
from boldc.ir.works import (
    BIT,
    INT,
    REAL,
    ConvGeometry,
    TensorInfo,
    conv_forward,
    input_signal,
    linear_geometry,
    weight_signal,
)

HW = load_hardware("ascend")
# ε per level in pJ/byte = 1 / EE (GB = 10^9 bytes): 1/0.02, 1/0.2, 1/0.4, 1/4.9, 1/3.5, 1/5.4
E3, E2, E1, E0A, E0B, E0C = 50.0, 5.0, 2.5, 1 / 4.9, 1 / 3.5, 1 / 5.4
ARITH_PJ = 1 / 1.7  # 1.7 TOPS/W
LOGIC_PJ = ARITH_PJ * 0.00069  # the logic-op assumption of hw/ascend.json


def t(shape, bits, kind):
    return TensorInfo(tuple(shape), bits, kind)


def test_energy_per_byte_uses_gb_as_1e9_bytes():
    # 1 GB/s per mW = 1e9 B/s / 1e-3 W = 1e12 B/J: EE = 0.02 -> 50 pJ per byte
    assert HW.eps("L3") == pytest.approx(E3, rel=1e-12)
    assert HW.eps("L0C") == pytest.approx(E0C, rel=1e-12)
    assert HW.arith_pj == pytest.approx(ARITH_PJ, rel=1e-12)
    assert HW.logic_pj == pytest.approx(LOGIC_PJ, rel=1e-12)


def test_hand_worked_float_conv_with_forced_l0_split():
    """Float conv: x f32[1, 8, 6, 6], W f32[256, 8, 3, 3], no padding, stride 1 -> y f32[1, 256, 4, 4].

    Stream sizes: S_I = 8·36·4 = 1152 B, S_F = 256·8·9·4 = 73728 B = 72 KiB, S_O = 256·16·4 = 16384 B.
    L2 and L1 hold everything (1152 + 73728 + 16384 B = 89 KiB <= 1024 KiB): tiles = full.
    L0-B (64 KiB) cannot hold F: a tile must split M (filters) or C (channels); splitting n, y or x
    does not shrink F and only adds reads. MACs = 1·256·16·8·9 = 294912.
      (a) M_0 = 128 (F tile 36 KiB): I is read twice from L1 instead of once: +S_I·ε1 = 1152·2.5 = 2880 pJ;
          its L0 reads become MACs/(|I|·M_0) = 294912/(288·128) = 8 per element instead of 4:
          +4·S_I·ε0A = 4·1152/4.9 = 940.4 pJ. Extra: 3820.4 pJ.
      (b) C_0 = 4 (F tile 36 KiB): the partial sums make one round trip in L0-C:
          +2·S_O·(2 - 1)·ε0C = 2·16384/5.4 = 6068.1 pJ.
    (a) is cheaper: L0 tile (n, m, c, y, x) = (1, 128, 8, 4, 4).
    Counts (method.md §6): I: n3 = ⌈M/M2⌉·α/α2 = 1, n2 = 1, n1 = ⌈M1/M0⌉ = 2, n0 = H^F·W^F·α0^v·α0^h = 9·(4/6)² = 4.
    F: 1, ⌈N/N2⌉⌈HO/H2O⌉⌈WO/W2O⌉ = 1, 1, 1.   O: 1, 1, 1, 1.
    Energy per stream and level:
      I: L3 1152·1·50 = 57600, L2 1152·5 = 5760, L1 1152·2·2.5 = 5760, L0-A 1152·8/4.9 = 1880.816...
      F: L3 73728·50 = 3686400, L2 368640, L1 184320, L0-B 73728/3.5 = 21065.142857...
      O: L3 (2·1 - 1)·16384·50 = 819200, the (n - 1) terms are 0.
    Compute: 2 arithmetic operations per MAC: 589824 / 1.7 = 346955.29... pJ."""
    geom = ConvGeometry(n=1, c=8, m=256, h=6, w=6, ho=4, wo=4, kh=3, kw=3)
    work = conv_forward(geom, t((1, 8, 6, 6), 32, REAL), t((256, 8, 3, 3), 32, REAL), t((1, 256, 4, 4), 32, REAL))
    cost = conv_cost(work, HW)
    assert cost.tiles == {"L2": (1, 256, 8, 4, 4), "L1": (1, 256, 8, 4, 4), "L0": (1, 128, 8, 4, 4)}
    assert cost.counts == {"I": (1, 1, 2, 4), "F": (1, 1, 1, 1), "O": (1, 1, 1, 1)}
    assert cost.energy["I"] == pytest.approx({"L3": 57600, "L2": 5760, "L1": 5760, "L0A": 1152 * 8 / 4.9}, rel=1e-12)
    assert cost.energy["F"] == pytest.approx({"L3": 3686400, "L2": 368640, "L1": 184320, "L0B": 73728 / 3.5},
                                             rel=1e-12)
    assert cost.energy["O"] == pytest.approx({"L3": 819200, "L2": 0, "L1": 0, "L0C": 0}, abs=1e-9)
    item = evaluate(work, HW)
    assert item.ops.arith == 589824 and item.ops.logic == 0
    assert item.compute_pj == pytest.approx(589824 / 1.7, rel=1e-12)
    # the rejected alternatives, costed by the same formulas, are dearer by the amounts above
    prob = Problem.of(work)
    full = {"L2": (1, 256, 8, 4, 4), "L1": (1, 256, 8, 4, 4)}
    alt_c = evaluate_tiling(prob, HW, {**full, "L0": (1, 256, 4, 4, 4)})
    chosen = sum(sum(e.values()) for e in cost.energy.values())
    assert sum(sum(e.values()) for e in alt_c.energy.values()) - chosen == pytest.approx(6068.148 - 3820.408,
                                                                                          rel=1e-5)


def test_hand_worked_boolean_conv_fits_l0():
    """bconv2d: x b1[1, 16, 8, 8], W b1[32, 16, 3, 3], pad 1 -> y i16[1, 32, 8, 8] (fan-in 144 > 127).

    S_I = 1024 bits = 128 B, S_F = 4608 bits = 576 B, S_O = 2048·16 bits = 4096 B: every tile is the
    whole tensor. Counts: I: 1, 1, 1 and n0 = H^F·W^F·α^v·α^h = 9·(8/8)² = 9 (one read per MAC and
    per block of M_0 = 32 filters: 294912 / (1024·32) = 9). F: 1, 1, 1, 1. O: 1, 1, 1, 1.
    E^I = 128·(50 + 5 + 2.5 + 9/4.9) = 7595.102...; E^F = 576·(57.5 + 1/3.5) = 33284.571...;
    E^O = 4096·50 = 204800.
    Compute: MACs = 32·64·16·9 = 294912, each an XNOR (1) and an INT-16 addition (2·16 - 1 = 31):
    32 logic operations -> 9437184 · (0.00069 / 1.7) pJ = 6511.657 / 1.7 = 3830.386... pJ."""
    geom = ConvGeometry(n=1, c=16, m=32, h=8, w=8, ho=8, wo=8, kh=3, kw=3, pad=(1, 1, 1, 1))
    work = conv_forward(geom, t((1, 16, 8, 8), 1, BIT), t((32, 16, 3, 3), 1, BIT), t((1, 32, 8, 8), 16, INT))
    cost = conv_cost(work, HW)
    assert cost.tiles["L0"] == (1, 32, 16, 8, 8)
    assert cost.counts == {"I": (1, 1, 1, 9), "F": (1, 1, 1, 1), "O": (1, 1, 1, 1)}
    assert sum(cost.energy["I"].values()) == pytest.approx(128 * (57.5 + 9 / 4.9), rel=1e-12)
    assert sum(cost.energy["F"].values()) == pytest.approx(576 * (57.5 + 1 / 3.5), rel=1e-12)
    assert sum(cost.energy["O"].values()) == pytest.approx(204800, rel=1e-12)
    item = evaluate(work, HW)
    assert item.ops.logic == 294912 * 32 and item.ops.arith == 0
    assert item.compute_pj == pytest.approx(9437184 * 0.00069 / 1.7, rel=1e-12)
    assert item.total_pj == pytest.approx(7595.1020408 + 33284.5714286 + 204800 + 3830.38643, rel=1e-9)


def test_hand_worked_halo_of_a_split_map():
    """A 3x3 stride-1 pad-1 conv over 8 rows split into two tiles of 4 output rows reads input rows
    [-1, 4] ∩ [0, 7] = 5 rows and [3, 8] ∩ [0, 7] = 5 rows: 10 rows for 8 stored, halo factor 10/8
    per axis (padding is never read)."""
    from boldc.energymodel.tiling import _axis_rows

    totals, extents = _axis_rows("forward", 8, 8, 3, 1, 1, 1)
    # divisors of 8: 1, 2, 4, 8. Tiles of 1 row read 3 rows (2 at the borders): 8·3 - 2 = 22;
    # of 2 rows: [-1, 2], [1, 4], [3, 6], [5, 8] clipped: 3 + 4 + 4 + 3 = 14; of 4 rows: 5 + 5; of 8: 8.
    assert totals == (22, 14, 10, 8)
    assert extents == (3, 4, 5, 8)  # the largest clipped tile
    # transposed (input signal): dx rows [0, 4) of a stride-2, 3x3, pad-1 conv (dy has 4 rows) come
    # from dy rows oy with 2·oy - 1 + i in [0, 3], i in 0..2: oy in [0, 2] (3 rows); [4, 8): oy in [2, 3]
    totals, extents = _axis_rows("input_signal", 8, 4, 3, 2, 1, 1)
    assert totals[2] == 3 + 2 and extents[2] == 3
    # dilated: a 3x3 kernel of rate 6, pad 6, over 5 rows: one output row reads its own row only
    # (the taps 6 rows away are padding), so tiles of 1 row read 5 rows, not the span [o-6, o+6]
    totals, extents = _axis_rows("forward", 5, 5, 3, 1, 6, 6)
    assert totals == (5, 5) and extents == (1, 5)


# --- the search is exhaustive: brute force over every nested divisor tiling ------------------

TINY = {
    "format": "boldc-hardware", "version": 1, "name": "tiny",
    "memory": {
        "L3": {"ee_gbps_per_mw": 0.02, "capacity_kib": None},
        "L2": {"ee_gbps_per_mw": 0.2, "capacity_kib": 2},
        "L1": {"ee_gbps_per_mw": 0.4, "capacity_kib": 0.75},
        "L0A": {"ee_gbps_per_mw": 4.9, "capacity_kib": 0.125},
        "L0B": {"ee_gbps_per_mw": 3.5, "capacity_kib": 0.0625},
        "L0C": {"ee_gbps_per_mw": 5.4, "capacity_kib": 0.25},
    },
    "compute": {"arith_tops_per_w": 1.7, "logic_op_relative_energy": 0.001},
    "bits": {"b1": 1, "i8": 8, "i16": 16, "i32": 32, "f32": 32},
}
TINY_HW = parse_hardware(json.dumps(TINY), "tiny")


def _divisors(d):
    return [v for v in range(1, d + 1) if d % v == 0]


def _tile_rows(kind, a, tile, a_size, k, s, d, p):
    """Rows of the I stream the outputs [a, a + tile) need, by enumerating (output, tap) pairs."""
    rows = set()
    for o in range(a, a + tile):
        for i in range(k):
            if kind == "input_signal":  # dx row o receives dy row oy when oy·s - p + i·d == o
                if (o + p - i * d) % s == 0 and 0 <= (o + p - i * d) // s < a_size:
                    rows.add((o + p - i * d) // s)
            elif 0 <= o * s - p + i * d < a_size:
                rows.add(o * s - p + i * d)
    return max(rows) - min(rows) + 1 if rows else 0


def _rows_read(kind, tile, size, a_size, k, s, d, p):
    """Rows read by all tiles of ``tile`` outputs along an axis of ``size`` outputs."""
    return sum(_tile_rows(kind, a, tile, a_size, k, s, d, p) for a in range(0, size, tile))


def _brute_force(kind, sizes, a_hw, kernel, stride, pad, bits, macs, hw, dilation=(1, 1)):
    """min over all nested divisor tilings of the formulas of docs/method.md §6, written out independently."""
    n, m, c, y, x = sizes
    deps = {"forward": ("nc", "mc", "nm"), "input_signal": ("nm", "mc", "nc"),
            "weight_signal": ("nc", "nm", "mc")}[kind]
    spatial = {"forward": ("halo", "kernel", "direct"), "input_signal": ("halo", "kernel", "direct"),
               "weight_signal": ("halo", "direct", "kernel")}[kind]
    full = dict(zip("nmcyx", sizes))

    def ext(tile, axis):
        i = "yx".index(axis)
        starts = range(0, full[axis], tile)
        return max(_tile_rows(kind, a, tile, a_hw[i], kernel[i], stride[i], dilation[i], pad[i]) for a in starts)

    def elems(stream, tile):
        dims, sp = deps[stream], spatial[stream]
        count = math.prod(tile[d] for d in dims)
        if sp == "halo":
            return count * ext(tile["y"], "y") * ext(tile["x"], "x")
        if sp == "direct":
            return count * tile["y"] * tile["x"]
        return count * kernel[0] * kernel[1]

    def halo(tile):
        return (_rows_read(kind, tile["y"], y, a_hw[0], kernel[0], stride[0], dilation[0], pad[0]) / a_hw[0]
                * _rows_read(kind, tile["x"], x, a_hw[1], kernel[1], stride[1], dilation[1], pad[1]) / a_hw[1])

    # whole streams: I as stored (not the rows the tiles read), F and O as their full tiles
    numel = {0: math.prod(full[d] for d in deps[0]) * a_hw[0] * a_hw[1], 1: elems(1, full), 2: elems(2, full)}
    nbytes = [numel[s] * bits[s] / 8 for s in range(3)]
    miss = [tuple(d for d in "nmcyx" if d not in deps[s] and not (d in "yx" and spatial[s] != "kernel"))
            for s in range(3)]
    cap = {k: hw.capacity_bits(k) for k in ("L2", "L1", "L0A", "L0B", "L0C")}
    eps = [hw.eps(k) for k in ("L3", "L2", "L1")]
    eps0 = [hw.eps("L0A"), hw.eps("L0B"), hw.eps("L0C")]

    all_tiles = [dict(zip("nmcyx", v)) for v in itertools.product(*(_divisors(full[d]) for d in "nmcyx"))]
    info = {}  # tile -> (bits of I, F, O tiles, halo factor), computed once per tile
    for tile in all_tiles:
        info[tuple(tile.values())] = ([elems(s, tile) * bits[s] for s in range(3)], halo(tile))

    def candidates(parent, level):
        for tile in all_tiles:
            if any(parent[d] % tile[d] for d in "nmcyx"):
                continue
            size = info[tuple(tile.values())][0]
            if level == "L0":
                if size[0] <= cap["L0A"] and size[1] <= cap["L0B"] and size[2] <= cap["L0C"]:
                    yield tile
            elif sum(size) <= cap[level]:
                yield tile

    def ratio(dims, up, lo):
        return math.prod(math.ceil(up[d] / lo[d]) for d in dims)

    def h(tile):
        return info[tuple(tile.values())][1]

    best = math.inf
    level1 = {}
    for t2 in candidates(full, "L2"):
        for t1 in candidates(t2, "L1"):
            key = tuple(t1.values())
            if key not in level1:
                level1[key] = list(candidates(t1, "L0"))
            for t0 in level1[key]:
                ni = [ratio(miss[0], full, t2) * h(t2), ratio(miss[0], t2, t1) * h(t1) / h(t2),
                      ratio(miss[0], t1, t0) * h(t0) / h(t1)]
                ni.append(macs / (numel[0] * math.prod(t0[d] for d in miss[0])) / math.prod(ni))
                nf = [1, ratio(miss[1], full, t2), ratio(miss[1], t2, t1), ratio(miss[1], t1, t0)]
                no = [ratio(miss[2], full, t2), ratio(miss[2], t2, t1), 1, ratio(miss[2], t1, t0)]
                energy = 0.0
                for s, cnt in ((0, ni), (1, nf)):
                    cum = 1.0
                    for lvl in range(4):
                        cum *= cnt[lvl]
                        energy += nbytes[s] * cum * (eps[lvl] if lvl < 3 else eps0[s])
                energy += nbytes[2] * ((2 * no[0] - 1) * eps[0] + 2 * no[0] * (no[1] - 1) * eps[1]
                                       + 2 * no[0] * no[1] * (no[2] - 1) * eps[2]
                                       + 2 * no[0] * no[1] * no[2] * (no[3] - 1) * eps0[2])
                best = min(best, energy)
    return best


CASES = [
    # kind, x shape, w shape, y shape, stride, pad, bits (x, w, y) -- small enough to enumerate
    ("forward", (2, 4, 6, 6), (8, 4, 3, 3), (2, 8, 6, 6), (1, 1), (1, 1, 1, 1), (32, 32, 32)),
    ("forward", (4, 6, 5, 5), (6, 6, 3, 3), (4, 6, 2, 2), (2, 2), (0, 0, 0, 0), (16, 8, 32)),
    ("input_signal", (2, 4, 6, 6), (8, 4, 3, 3), (2, 8, 3, 3), (2, 2), (1, 1, 1, 1), (16, 1, 16)),
    ("weight_signal", (2, 4, 6, 6), (8, 4, 3, 3), (2, 8, 6, 6), (1, 1), (1, 1, 1, 1), (1, 16, 16)),
    ("weight_signal", (4, 2, 4, 4), (4, 2, 1, 1), (4, 4, 4, 4), (1, 1), (0, 0, 0, 0), (32, 32, 32)),
]
# Maps too large for the tiny L2 even with one channel per tile: the L2 tile must split y or x,
# so the I counts' halo factors h(2) at L2 (not 1) enter n_3 and n_2.
L2_SPLIT_CASES = [
    ("forward", (1, 2, 16, 16), (2, 2, 3, 3), (1, 2, 16, 16), (1, 1), (1, 1, 1, 1), (32, 32, 32)),
    ("input_signal", (1, 2, 16, 16), (2, 2, 3, 3), (1, 2, 8, 8), (2, 2), (1, 1, 1, 1), (32, 32, 32)),
    ("weight_signal", (1, 2, 16, 16), (2, 2, 3, 3), (1, 2, 16, 16), (1, 1), (1, 1, 1, 1), (32, 32, 32)),
]
CASES += L2_SPLIT_CASES
# Dilated kernels (the case's last field; DeepLab's ASPP: the rate 6 over a 5x5 map reads only
# the centre tap's rows): a tile's rows run from the first row a tap reads to the last, which a
# dilated kernel's span over the padding overstates.
DILATED_CASES = [
    ("forward", (1, 8, 5, 5), (16, 8, 3, 3), (1, 16, 5, 5), (1, 1), (6, 6, 6, 6), (32, 32, 32), (6, 6)),
    ("forward", (2, 2, 9, 9), (4, 2, 3, 3), (2, 4, 9, 9), (1, 1), (2, 2, 2, 2), (32, 32, 32), (2, 2)),
    ("input_signal", (1, 2, 6, 6), (2, 2, 3, 3), (1, 2, 6, 6), (1, 1), (3, 3, 3, 3), (32, 32, 32), (3, 3)),
    ("weight_signal", (1, 2, 6, 6), (4, 2, 3, 3), (1, 4, 6, 6), (1, 1), (4, 4, 4, 4), (32, 32, 32), (4, 4)),
]
CASES += DILATED_CASES


def _dilation(case):
    return case[7] if len(case) > 7 else (1, 1)


def _work(case):
    kind, xs, ws, ys, stride, pad, (bx, bw, by) = case[:7]
    geom = ConvGeometry(xs[0], xs[1], ws[0], xs[2], xs[3], ys[2], ys[3], ws[2], ws[3], stride, _dilation(case), pad)
    x, w, y = t(xs, bx, REAL), t(ws, bw, REAL), t(ys, by, REAL)
    if kind == "forward":
        return conv_forward(geom, x, w, y)
    if kind == "input_signal":  # i = dy (bits bx), f = W, o = dx
        return input_signal(geom, t(ys, bx, REAL), w, t(xs, by, REAL))
    return weight_signal(geom, t(ys, bw, REAL), x, t(ws, by, REAL))  # i = x, f = dy (bits bw), o = dW


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_search_finds_the_least_energy_nested_tiling(case):
    work = _work(case)
    prob = Problem.of(work)
    cost = conv_cost(work, TINY_HW)
    found = sum(sum(e.values()) for e in cost.energy.values())
    expected = _brute_force(case[0], prob.sizes, prob.a_hw, prob.kernel, prob.stride, prob.pad, prob.bits,
                            prob.macs, TINY_HW, _dilation(case))
    assert found == pytest.approx(expected, rel=1e-9)
    # and the tiny memories really force tiling at some level
    assert cost.tiles["L0"] != prob.sizes
    if case in L2_SPLIT_CASES:  # the spatial split at L2 these cases exist for
        assert cost.tiles["L2"][3:] != prob.sizes[3:], cost.tiles


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_every_tile_fits_its_level(case):
    kind, xs, ws, ys, stride, pad, (bx, bw, by) = case[:7]
    geom = ConvGeometry(xs[0], xs[1], ws[0], xs[2], xs[3], ys[2], ys[3], ws[2], ws[3], stride, _dilation(case), pad)
    work = conv_forward(geom, t(xs, bx, REAL), t(ws, bw, REAL), t(ys, by, REAL))
    for hw in (TINY_HW, HW, load_hardware("edge_example")):
        cost = conv_cost(work, hw)
        for level, bits in cost.tile_bits.items():
            assert bits <= hw.capacity_bits(level), (level, bits)
        for upper, lower in (("L2", "L1"), ("L1", "L0")):
            assert all(u % v == 0 for u, v in zip(cost.tiles[upper], cost.tiles[lower]))


def test_linear_layer_equals_the_1x1_convolution():
    x, w, y = t((32, 512), 1, BIT), t((1000, 512), 1, BIT), t((32, 1000), 16, INT)
    lin = evaluate(conv_forward(linear_geometry(x, w), x, w, y), HW)
    geom = ConvGeometry(32, 512, 1000, 1, 1, 1, 1)
    conv = evaluate(conv_forward(geom, t((32, 512, 1, 1), 1, BIT), t((1000, 512, 1, 1), 1, BIT),
                                 t((32, 1000, 1, 1), 16, INT)), HW)
    assert lin.total_pj == conv.total_pj and lin.memory_pj == conv.memory_pj and lin.ops == conv.ops


def test_groups_cost_groups_times_one_group():
    geom = ConvGeometry(4, 16, 16, 8, 8, 8, 8, 3, 3, pad=(1, 1, 1, 1), groups=4)
    whole = evaluate(conv_forward(geom, t((4, 16, 8, 8), 32, REAL), t((16, 4, 3, 3), 32, REAL),
                                  t((4, 16, 8, 8), 32, REAL)), HW)
    one = ConvGeometry(4, 4, 4, 8, 8, 8, 8, 3, 3, pad=(1, 1, 1, 1))
    part = evaluate(conv_forward(one, t((4, 4, 8, 8), 32, REAL), t((4, 4, 3, 3), 32, REAL),
                                 t((4, 4, 8, 8), 32, REAL)), HW)
    assert sum(whole.memory_pj.values()) == pytest.approx(4 * sum(part.memory_pj.values()), rel=1e-12)
    assert whole.ops == part.ops.times(4)


def test_a_convolution_that_fits_no_tiling_is_a_clear_error(tmp_path):
    """A 16x16 float kernel needs 1 KiB per filter; the tiny L0-B holds 64 bytes."""
    import numpy as np

    from boldc import FunctionBuilder, Module, tensor
    from boldc.energymodel import energy
    from boldc.energymodel.costing import EnergyError

    m = Module()
    fb = FunctionBuilder(m, "forward", [("x", tensor("f32", "N", 1, 16, 16))])
    w = m.add_param("w", tensor("f32", 1, 1, 16, 16), np.zeros((1, 1, 16, 16), np.float32))
    fb.ret(fb.op("conv2d", [fb.args[0], w], name="y"))
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    with pytest.raises(EnergyError, match=r"op 'conv2d' \(%y\): no tiling of this forward convolution fits the "
                                          r"memory of tiny: the smallest tiles need .*F 1\.0 KiB"):
        energy(m, batch=1, hw=path)


def test_transposed_convolution_costs_the_input_signal_loop_nest():
    """conv_transpose2d (W [C, M, kh, kw]) is priced as the input signal of the convolution it is
    the adjoint of: the same accesses and operations as conv2d_grad_x of that convolution. In
    training (after a float layer, so that its dx is needed), its dx is a forward-shaped
    convolution of the signal, reported as the input signal of the backward phase, and dW the
    weight signal, each with the same operation count."""
    import numpy as np

    from boldc import FunctionBuilder, Module, tensor
    from boldc.energymodel import energy

    geometry = {"stride": [2, 2], "pad": [1, 1, 1, 1], "dilation": [1, 1], "groups": 1}

    def single(op, attrs, head=False):
        m = Module()
        fb = FunctionBuilder(m, "forward", [("x", tensor("f32", "N", 6, 5, 5))])
        x = fb.args[0]
        if head:
            x = fb.op("conv2d", [x, m.add_param("h", tensor("f32", 6, 6, 1, 1), np.ones((6, 6, 1, 1), np.float32))])
        w = m.add_param("w", tensor("f32", 6, 4, 3, 3), np.ones((6, 4, 3, 3), np.float32))
        fb.ret(fb.op(op, [x, w], {**geometry, **attrs}, name="y"))
        return m

    (ct,) = [r for r in energy(single("conv_transpose2d", {"output_padding": [1, 1]}), batch=8).rows
             if r.opname == "conv_transpose2d"]
    (gx,) = [r for r in energy(single("conv2d_grad_x", {"input_hw": [10, 10]}), batch=8).rows
             if r.opname == "conv2d_grad_x"]
    assert ct.detail["conv"] == gx.detail["conv"] == "input_signal" and ct.phase == "forward"
    assert ct.arith_ops == gx.arith_ops == 2 * 8 * 6 * 5 * 5 * 4 * 9
    assert ct.memory_pj == pytest.approx(gx.memory_pj, rel=1e-12)
    trained = single("conv_transpose2d", {"output_padding": [1, 1]}, head=True)
    rows = [r for r in energy(trained, batch=8, phase="training", loss="mse").rows if r.opname == "conv_transpose2d"]
    assert [(r.phase, r.label, r.detail.get("conv")) for r in rows] == [
        ("forward", "forward", "input_signal"), ("backward", "input signal", "forward"),
        ("backward", "weight signal", "weight_signal")]
    assert all(r.arith_ops == ct.arith_ops for r in rows)
