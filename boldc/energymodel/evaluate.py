"""Energy of one declared work on a hardware description (docs/method.md §6: compute + memory).

- compute: arithmetic operations × 1/(TOPS/W) pJ + logic operations × the logic-op
  energy of the description;
- memory of a ``ConvWork``: the tiling model of ``tiling.py``, times the group count;
  extra tensors (a bias, a fused epilogue's operands) are read once from DRAM; with fused
  epilogues, the outputs' final write to DRAM is the fused results at their width;
- memory of a ``StreamWork``: each tensor read or written once at the level where the
  op's data lives: the first of L1, L2, L3 whose capacity holds all its tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from boldc.energymodel.hardware import LEVELS, SHARED_LEVELS, Hardware
from boldc.energymodel.tiling import conv_cost
from boldc.ir.works import ConvWork, NoWork, Ops, StreamWork, Work


@dataclass(frozen=True)
class ItemCost:
    label: str
    phase: str
    ops: Ops
    compute_pj: float
    memory_pj: dict[str, float]  # every level of LEVELS
    detail: dict = field(default_factory=dict)

    @property
    def total_pj(self) -> float:
        return self.compute_pj + sum(self.memory_pj.values())


def compute_pj(ops: Ops, hw: Hardware) -> float:
    return ops.arith * hw.arith_pj + ops.logic * hw.logic_pj


def evaluate(work: Work, hw: Hardware) -> ItemCost:
    memory = dict.fromkeys(LEVELS, 0.0)
    if isinstance(work, NoWork):
        return ItemCost(work.label, work.phase, Ops(), 0.0, memory, {"reason": work.reason})
    if isinstance(work, StreamWork):
        tensors = work.reads + work.writes
        total_bits = sum(t.numel * t.bits for t in tensors)
        level = next(lv for lv in SHARED_LEVELS if total_bits <= hw.capacity_bits(lv))
        nbytes = total_bits / 8
        memory[level] = nbytes * hw.eps(level)
        detail = {"level": level, "bytes": nbytes}
        return ItemCost(work.label, work.phase, work.ops, compute_pj(work.ops, hw), memory, detail)
    assert isinstance(work, ConvWork)
    cost = conv_cost(work, hw)
    groups = work.geom.groups
    stream_pj = {s: {lvl: groups * pj for lvl, pj in e.items()} for s, e in cost.energy.items()}
    stream_bytes = {s: groups * b for s, b in cost.stream_bytes.items()}
    if work.results:
        # fused epilogues: the outputs' one final write to DRAM is the results at their width
        # (partial sums that leave L0-C keep the accumulator's width: the formulas' other terms)
        result_bytes = sum(t.nbytes for t in work.results)
        stream_pj["O"]["L3"] += (result_bytes - stream_bytes["O"]) * hw.eps("L3")
        stream_bytes["results"] = result_bytes
    for per_level in stream_pj.values():
        for level, pj in per_level.items():
            memory[level] += pj
    extra_bytes = sum(t.nbytes for t in work.extra)
    memory["L3"] += extra_bytes * hw.eps("L3")
    detail = {
        "conv": work.kind,
        "groups": groups,
        "tiles": {lvl: list(t) for lvl, t in cost.tiles.items()},
        "tile_kib": {lvl: bits / 8 / 1024 for lvl, bits in cost.tile_bits.items()},
        "counts": {s: list(c) for s, c in cost.counts.items()},
        "stream_pj": stream_pj,
        "stream_bytes": stream_bytes,
    }
    if work.epilogues:
        detail["epilogues"] = list(work.epilogues)
    return ItemCost(work.label, work.phase, work.ops, compute_pj(work.ops, hw), memory, detail)
