"""Hardware descriptions (docs/method.md §6): memory levels, compute efficiency, bit-widths.

A description is a JSON file (``hw/ascend.json`` is the default, the core of docs/method.md §6;
docs/energy.md documents the format with ``hw/edge_example.json``). Units:

- ``ee_gbps_per_mw``: energy efficiency of a memory level in GB/s per mW, with
  1 GB = 10^9 bytes. 1 GB/s per mW = 10^9 B/s / 10^-3 W = 10^12 bytes per joule, so the
  energy per byte is ``1 / ee`` pJ.
- ``capacity_kib``: capacity in KiB (1024 bytes); ``null`` = unbounded (only L3).
- ``arith_tops_per_w``: arithmetic operations per joule, in 10^12; one operation costs
  ``1 / arith_tops_per_w`` pJ.
- ``logic_op_relative_energy``: the energy of one logic operation (XNOR, one gate of
  an adder) relative to one arithmetic operation: THE assumption of the model about
  Boolean logic, kept in this one place.
- ``bits``: storage bits of each IR element type.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from boldc.errors import BoldcError
from boldc.ir.types import DType

FORMAT = "boldc-hardware"
VERSION = 1

# The memory hierarchy of docs/method.md §6: keys of the file, nearest-to-DRAM first.
LEVELS = ("L3", "L2", "L1", "L0A", "L0B", "L0C")
# Levels that hold every kind of data, nearest to compute first: where the data of an
# elementwise op lives (the first one large enough for its working set).
SHARED_LEVELS = ("L1", "L2", "L3")

_TOP_KEYS = {"format", "version", "name", "description", "memory", "compute", "bits"}
_LEVEL_KEYS = {"title", "ee_gbps_per_mw", "capacity_kib"}
_COMPUTE_KEYS = {"arith_tops_per_w", "logic_op_relative_energy", "logic_op_note"}


class HardwareError(BoldcError):
    """A hardware description that cannot be read or is invalid."""


@dataclass(frozen=True)
class Level:
    key: str
    title: str
    ee_gbps_per_mw: float
    capacity_kib: float | None  # None: unbounded

    @property
    def pj_per_byte(self) -> float:
        """ε = 1/EE pJ per byte (GB = 10^9 bytes)."""
        return 1.0 / self.ee_gbps_per_mw

    @property
    def capacity_bits(self) -> float:
        return math.inf if self.capacity_kib is None else self.capacity_kib * 1024 * 8


@dataclass(frozen=True, eq=False)  # compared and hashed by identity (cache key)
class Hardware:
    name: str
    description: str
    levels: dict[str, Level]
    arith_tops_per_w: float
    logic_op_relative_energy: float
    logic_op_note: str
    bits: dict[str, int]
    source: str  # the file it was read from

    @property
    def arith_pj(self) -> float:
        """Energy of one arithmetic operation in pJ (1 TOPS/W = 1 op per pJ)."""
        return 1.0 / self.arith_tops_per_w

    @property
    def logic_pj(self) -> float:
        """Energy of one logic operation in pJ."""
        return self.arith_pj * self.logic_op_relative_energy

    def eps(self, level: str) -> float:
        """ε_level: pJ per byte."""
        return self.levels[level].pj_per_byte

    def capacity_bits(self, level: str) -> float:
        return self.levels[level].capacity_bits

    def bits_of(self, dtype: DType) -> int:
        return self.bits[dtype.value]

    def title(self, level: str) -> str:
        return self.levels[level].title

    def summary(self) -> dict:
        """The description as plain data (recorded in reports)."""
        return {
            "name": self.name,
            "source": self.source,
            "levels": {k: {"title": v.title, "ee_gbps_per_mw": v.ee_gbps_per_mw, "capacity_kib": v.capacity_kib}
                       for k, v in self.levels.items()},
            "arith_tops_per_w": self.arith_tops_per_w,
            "logic_op_relative_energy": self.logic_op_relative_energy,
            "bits": dict(self.bits),
        }


def builtin_names() -> list[str]:
    """Names of the shipped descriptions (file stems under boldc/energymodel/hw/)."""
    folder = resources.files("boldc.energymodel").joinpath("hw")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


_CACHE: dict[str, Hardware] = {}  # shipped descriptions only (a user's file may change)


def load_hardware(spec: str | Path | Hardware | None = None) -> Hardware:
    """A Hardware from a shipped name (``"ascend"``), a path to a JSON file, or itself;
    None gives the default (``ascend``)."""
    if isinstance(spec, Hardware):
        return spec
    if spec is None:
        spec = "ascend"
    if isinstance(spec, str) and spec in _CACHE:
        return _CACHE[spec]
    if isinstance(spec, str) and spec in builtin_names():
        res = resources.files("boldc.energymodel").joinpath("hw", f"{spec}.json")
        hw = _CACHE[spec] = parse_hardware(res.read_text(encoding="utf-8"), f"{spec} (shipped)")
        return hw
    path = Path(spec)
    if not path.exists() and not path.suffix:
        known = ", ".join(builtin_names())
        raise HardwareError(f"{spec}: no such hardware description (shipped: {known}; or give a .json file)")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HardwareError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise HardwareError(f"{path}: is a directory, not a hardware description") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HardwareError(f"{path}: cannot read ({exc})") from None
    return parse_hardware(text, str(path))


def parse_hardware(text: str, source: str = "<string>") -> Hardware:
    """Parse and validate a description; every problem is a one-line HardwareError."""

    def fail(msg: str) -> HardwareError:
        return HardwareError(f"{source}: hardware description: {msg}")

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise fail("the top level must be a JSON object")
    _exact_keys(data, _TOP_KEYS, {"description"}, "the top level", fail)
    if data["format"] != FORMAT:
        raise fail(f"'format' must be \"{FORMAT}\", got {data['format']!r}")
    if data["version"] != VERSION:
        raise fail(f"'version' {data['version']!r} is not supported (this boldc reads version {VERSION})")
    name = _string(data["name"], "name", fail)
    description = _string(data.get("description", ""), "description", fail)

    memory = data["memory"]
    if not isinstance(memory, dict):
        raise fail("'memory' must be an object with the levels " + ", ".join(LEVELS))
    _exact_keys(memory, set(LEVELS), set(), "'memory'", fail)
    levels = {}
    for key in LEVELS:
        spec = memory[key]
        where = f"memory.{key}"
        if not isinstance(spec, dict):
            raise fail(f"'{where}' must be an object with {', '.join(sorted(_LEVEL_KEYS))}")
        _exact_keys(spec, _LEVEL_KEYS, {"title"}, f"'{where}'", fail)
        ee = _positive(spec["ee_gbps_per_mw"], f"{where}.ee_gbps_per_mw", fail)
        cap = spec["capacity_kib"]
        if key == "L3":
            if cap is not None:
                raise fail(f"'{where}.capacity_kib' must be null: the model assumes DRAM holds everything")
        else:
            cap = _positive(cap, f"{where}.capacity_kib", fail)
        levels[key] = Level(key, _string(spec.get("title", key), f"{where}.title", fail), ee, cap)

    compute = data["compute"]
    if not isinstance(compute, dict):
        raise fail("'compute' must be an object with arith_tops_per_w and logic_op_relative_energy")
    _exact_keys(compute, _COMPUTE_KEYS, {"logic_op_note"}, "'compute'", fail)
    tops = _positive(compute["arith_tops_per_w"], "compute.arith_tops_per_w", fail)
    rel = _positive(compute["logic_op_relative_energy"], "compute.logic_op_relative_energy", fail)
    note = _string(compute.get("logic_op_note", ""), "compute.logic_op_note", fail)

    bits = data["bits"]
    names = {d.value for d in DType}
    if not isinstance(bits, dict):
        raise fail("'bits' must be an object giving the bits of " + ", ".join(sorted(names)))
    _exact_keys(bits, names, set(), "'bits'", fail)
    for k, v in bits.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise fail(f"'bits.{k}' must be a positive integer, got {v!r}")
    return Hardware(name, description, levels, tops, rel, note, dict(bits), source)


def _exact_keys(obj: dict, allowed: set, optional: set, where: str, fail) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise fail(f"unknown key '{unknown[0]}' in {where} (allowed: {', '.join(sorted(allowed))})")
    missing = sorted(allowed - optional - set(obj))
    if missing:
        raise fail(f"missing key '{missing[0]}' in {where}")


def _positive(v, where: str, fail) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise fail(f"'{where}' must be a positive number, got {json.dumps(v)}")
    return float(v)


def _string(v, where: str, fail) -> str:
    if not isinstance(v, str):
        raise fail(f"'{where}' must be a string, got {json.dumps(v)}")
    return v
