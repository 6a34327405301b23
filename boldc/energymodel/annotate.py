"""annotate-energy: record the energy model's results (docs/energy.md) on the ops of the IR.

For every costed op (@forward for inference; for training @train_step when the module
has one, else @forward, each op with the backward and update items of the training step
derived from it) the pass writes:

- ``energy.pj``: {total, compute, L3, L2, L1, L0A, L0B, L0C} in pJ, summed over its items;
- ``energy.ops``: {arith, logic} operation counts;
- ``energy.items``: one dict per item (forward, input signal, weight signal, update,
  ...): label, phase, pj, and for a convolution its tiling (``tiles``: L2/L1/L0 tile as
  [n, m, c, y, x]), access counts per stream and level (``counts``: I/F/O ->
  [n_3, n_2, n_1, n_0]) and energy per stream and level (``stream_pj``); for an
  elementwise op the level it streams from and its bytes;
- ``energy.baseline_pj``: the same op's items in the float baseline, when they pair.

The module gets ``energy.phase``, ``energy.batch``, ``energy.hardware``,
``energy.total_pj``, ``energy.baseline_pj``, ``energy.ratio`` and, for items that
belong to no op (the loss and the optimizer of a derived training step),
``energy.other`` (a list of {op, opname, label, phase, pj}). Annotations of an
earlier run are replaced. All of it is printed and parsed back (docs/ir.md).
"""

from __future__ import annotations

from boldc.energymodel.api import DEFAULT_BATCH, DEFAULT_LOSS, DEFAULT_SIGNAL_BITS, costed, effective_batch, to_row
from boldc.energymodel.hardware import LEVELS
from boldc.energymodel.report import pair_rows
from boldc.ir.core import Module
from boldc.passes.manager import NeedsFunction, Option, Pass, register_pass

PREFIX = "energy."


@register_pass
class AnnotateEnergy(Pass):
    name = "annotate-energy"
    options = {
        "phase": Option(str, "inference", "inference | training"),
        "batch": Option(int, 0, f"batch size bound to the symbolic dimension N (0: {DEFAULT_BATCH}, or the "
                                "model's fixed batch)"),
        "hw": Option(str, "ascend", "hardware description: a shipped name or a JSON file"),
        "signal-bits": Option(int, DEFAULT_SIGNAL_BITS, "backward signals of a derived training step: 16, 8, 4 "
                                                         "(integers) or 32 (f32)"),
        "loss": Option(str, DEFAULT_LOSS, "loss op of a derived training step"),
        "fuse": Option(bool, True, "cost the steps with their epilogues fused (and the baseline alike)"),
    }
    requires = (NeedsFunction("forward"),)

    def run(self, module: Module) -> bool:
        o = self.opts
        batch = effective_batch(module, o["batch"] or None)
        items, base_items, hw = costed(module, batch, o["phase"], o["hw"], o["signal-bits"], o["loss"],
                                       fuse=o["fuse"])
        rows = [to_row(i) for i in items]
        base_rows = [to_row(i) for i in base_items]
        pair_rows(rows, base_rows)
        _clear(module)
        per_op: dict = {}  # op -> its rows
        other = []
        for item, row in zip(items, rows):
            if item.owner is None:
                other.append({"op": row.op, "opname": row.opname, "label": row.label, "phase": row.phase,
                              "pj": row.total_pj})
            else:
                per_op.setdefault(item.owner, []).append(row)
        for op, op_rows in per_op.items():
            op.attrs.update(_op_annotations(op_rows))
        total = sum(r.total_pj for r in rows)
        base = sum(r.total_pj for r in base_rows)
        module.attrs.update({
            "energy.phase": o["phase"], "energy.batch": batch, "energy.hardware": hw.name,
            "energy.total_pj": total, "energy.baseline_pj": base, "energy.ratio": total / base if base else 0.0,
        })
        if other:
            module.attrs["energy.other"] = other
        return True


def _op_annotations(rows) -> dict:
    pj = {"total": sum(r.total_pj for r in rows), "compute": sum(r.compute_pj for r in rows)}
    for lvl in LEVELS:
        pj[lvl] = sum(r.memory_pj[lvl] for r in rows)
    out = {
        "energy.pj": pj,
        "energy.ops": {"arith": sum(r.arith_ops for r in rows), "logic": sum(r.logic_ops for r in rows)},
        "energy.items": [{"label": r.label, "phase": r.phase, "pj": r.total_pj, **r.detail} for r in rows],
    }
    if all(r.baseline_pj is not None for r in rows):
        out["energy.baseline_pj"] = sum(r.baseline_pj for r in rows)
    return out


def _clear(module: Module) -> None:
    for key in [k for k in module.attrs if k.startswith(PREFIX)]:
        del module.attrs[key]
    for fn in module.functions.values():
        for op in fn.ops:
            for key in [k for k in op.attrs if k.startswith(PREFIX)]:
                del op.attrs[key]
