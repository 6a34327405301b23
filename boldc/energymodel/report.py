"""The energy report: one row per cost item (op, phase, item), for the model and for its
float baseline, with totals per phase and per memory level (docs/energy.md explains
how to read it). Energies are in pJ.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field

from boldc.energymodel.hardware import LEVELS
from boldc.errors import BoldcError
from boldc.ir.works import PHASES

FORMAT = "boldc-energy-report"
VERSION = 1


@dataclass
class Row:
    """One cost item. ``op`` names the op (its first result, or the param an update
    writes, or "loss"); ``label`` the item ("forward", "input signal", "weight signal",
    "update", ...); ``detail`` the tiling and access counts of a convolution, or the
    level an elementwise op streams from."""

    op: str
    opname: str
    phase: str
    label: str
    arith_ops: int
    logic_ops: int
    compute_pj: float
    memory_pj: dict[str, float]
    detail: dict = field(default_factory=dict)
    baseline_pj: float | None = None  # the matching row of the float baseline, when there is one

    @property
    def total_pj(self) -> float:
        return self.compute_pj + sum(self.memory_pj.values())

    @property
    def ratio(self) -> float | None:
        return self.total_pj / self.baseline_pj if self.baseline_pj else None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.op, self.phase, self.label)


def _sum(rows: list[Row], what) -> float:
    return float(sum(what(r) for r in rows))


@dataclass
class Report:
    """``meta``: what was costed (phase, batch, function, hardware, signal format,
    baseline source). ``rows``: the model; ``baseline_rows``: the float baseline."""

    meta: dict
    rows: list[Row]
    baseline_rows: list[Row]

    # -- totals ----------------------------------------------------------------------
    @property
    def total_pj(self) -> float:
        return _sum(self.rows, lambda r: r.total_pj)

    @property
    def baseline_pj(self) -> float:
        return _sum(self.baseline_rows, lambda r: r.total_pj)

    @property
    def ratio(self) -> float:
        return self.total_pj / self.baseline_pj if self.baseline_pj else float("nan")

    def by_phase(self) -> dict[str, tuple[float, float]]:
        """phase -> (model pJ, baseline pJ), phases that occur only."""
        out = {}
        for phase in PHASES:
            mine = [r for r in self.rows if r.phase == phase]
            base = [r for r in self.baseline_rows if r.phase == phase]
            if mine or base:
                out[phase] = (_sum(mine, lambda r: r.total_pj), _sum(base, lambda r: r.total_pj))
        return out

    def by_level(self) -> dict[str, tuple[float, float]]:
        """"compute" and each memory level -> (model pJ, baseline pJ)."""
        out = {"compute": (_sum(self.rows, lambda r: r.compute_pj), _sum(self.baseline_rows, lambda r: r.compute_pj))}
        for lvl in LEVELS:
            out[lvl] = (_sum(self.rows, lambda r, k=lvl: r.memory_pj[k]),
                        _sum(self.baseline_rows, lambda r, k=lvl: r.memory_pj[k]))
        return out

    def ops(self) -> dict[str, tuple[int, int]]:
        """"arith" / "logic" -> (model count, baseline count)."""
        return {"arith": (sum(r.arith_ops for r in self.rows), sum(r.arith_ops for r in self.baseline_rows)),
                "logic": (sum(r.logic_ops for r in self.rows), sum(r.logic_ops for r in self.baseline_rows))}

    # -- serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "meta": self.meta,
            "totals": {"total_pj": self.total_pj, "baseline_pj": self.baseline_pj, "ratio": self.ratio,
                       "by_phase": {k: list(v) for k, v in self.by_phase().items()},
                       "by_level": {k: list(v) for k, v in self.by_level().items()}},
            "rows": [asdict(r) for r in self.rows],
            "baseline_rows": [asdict(r) for r in self.baseline_rows],
        }

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Report:
        """Read a report written by ``to_json`` (the totals are recomputed from the rows)."""
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT or data.get("version") != VERSION:
                raise ValueError(f"not a {FORMAT} version {VERSION} document")
            return cls(data["meta"], [Row(**r) for r in data["rows"]], [Row(**r) for r in data["baseline_rows"]])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BoldcError(f"not an energy report: {exc}") from None

    def to_csv(self) -> str:
        """One line per row of the model and of the baseline (column ``model``)."""
        buf = io.StringIO()
        out = csv.writer(buf, lineterminator="\n")
        out.writerow(["model", "op", "opname", "phase", "label", "arith_ops", "logic_ops", "compute_pj",
                      *(f"{lvl}_pj" for lvl in LEVELS), "total_pj", "baseline_pj"])
        for model, rows in (("boolean", self.rows), ("float", self.baseline_rows)):
            for r in rows:
                out.writerow([model, r.op, r.opname, r.phase, r.label, r.arith_ops, r.logic_ops, repr(r.compute_pj),
                              *(repr(r.memory_pj[lvl]) for lvl in LEVELS), repr(r.total_pj),
                              "" if r.baseline_pj is None or model == "float" else repr(r.baseline_pj)])
        return buf.getvalue()


def pair_rows(rows: list[Row], baseline: list[Row]) -> None:
    """Give each row the total of the baseline row with the same (op, phase, label) and
    the same position among equal keys."""
    pool: dict[tuple, list[Row]] = {}
    for b in baseline:
        pool.setdefault(b.key, []).append(b)
    for r in rows:
        match = pool.get(r.key)
        r.baseline_pj = match.pop(0).total_pj if match else None
