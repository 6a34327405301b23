"""Rendering a Report: the rich table of ``boldc energy`` and the per-layer plot."""

from __future__ import annotations

import io
from pathlib import Path

from boldc.energymodel.hardware import LEVELS
from boldc.energymodel.report import Report
from boldc.errors import BoldcError
from boldc.fileio import atomic_write

_UNITS = ((1e12, "J"), (1e9, "mJ"), (1e6, "µJ"), (1e3, "nJ"), (1.0, "pJ"))


def fmt_pj(pj: float | None) -> str:
    """An energy in pJ with a readable unit (``12.3 µJ``)."""
    if pj is None:
        return "-"
    if pj == 0:
        return "0"
    for scale, unit in _UNITS:
        if abs(pj) >= scale:
            return f"{pj / scale:.3g} {unit}"
    return f"{pj:.3g} pJ"


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None or r != r else f"{r:.3f}"


def fmt_count(n: int) -> str:
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def _titles(report: Report) -> dict[str, str]:
    levels = report.meta.get("hardware", {}).get("levels", {})
    return {lvl: levels.get(lvl, {}).get("title", lvl) for lvl in LEVELS}


def print_table(report: Report, console) -> None:
    """The per-op table, then totals per phase and per memory level."""
    from rich.table import Table

    meta = report.meta
    titles = _titles(report)
    hw = meta.get("hardware", {}).get("name", "?")
    signal = meta.get("signal", {})
    sizes = "".join(f", {k}={v}" for k, v in (meta.get("dims") or {}).items())  # bound by --dim
    caption = (f"{meta.get('phase')} step, batch {meta.get('batch')}{sizes}, hardware {hw}; "
               f"function {meta.get('function')}; baseline: {meta.get('baseline')}")
    if meta.get("phase") == "training":
        caption += f"; signals {signal.get('bits')}-bit {signal.get('kind')}"
    table = Table(title=f"Energy per op ({meta.get('source') or 'module'})", caption=caption)
    for name, justify in (("op", "left"), ("kind", "left"), ("phase", "left"), ("item", "left"), ("arith", "right"),
                          ("logic", "right"), ("compute", "right")):
        table.add_column(name, justify=justify)
    for lvl in ("L3", "L2", "L1"):
        table.add_column(titles[lvl], justify="right")
    table.add_column("L0", justify="right")
    for name in ("total", "float", "ratio"):
        table.add_column(name, justify="right")
    for r in report.rows:
        l0 = r.memory_pj["L0A"] + r.memory_pj["L0B"] + r.memory_pj["L0C"]
        table.add_row(r.op, r.opname, r.phase, r.label, fmt_count(r.arith_ops), fmt_count(r.logic_ops),
                      fmt_pj(r.compute_pj), *(fmt_pj(r.memory_pj[lvl]) for lvl in ("L3", "L2", "L1")), fmt_pj(l0),
                      fmt_pj(r.total_pj), fmt_pj(r.baseline_pj), fmt_ratio(r.ratio))
    console.print(table)

    totals = Table(title="Totals")
    for name in ("", "Boolean model", "float baseline", "ratio"):
        totals.add_column(name, justify="left" if not name else "right")
    for phase, (mine, base) in report.by_phase().items():
        totals.add_row(phase, fmt_pj(mine), fmt_pj(base), fmt_ratio(mine / base if base else None))
    totals.add_section()
    for key, (mine, base) in report.by_level().items():
        totals.add_row(titles.get(key, key), fmt_pj(mine), fmt_pj(base), fmt_ratio(mine / base if base else None))
    totals.add_section()
    totals.add_row("[bold]total[/bold]", f"[bold]{fmt_pj(report.total_pj)}[/bold]",
                   f"[bold]{fmt_pj(report.baseline_pj)}[/bold]", f"[bold]{fmt_ratio(report.ratio)}[/bold]")
    console.print(totals)


def _per_op(rows) -> dict[str, dict[str, float]]:
    """op -> {"compute", "L3", "L2", "L1", "L0"} summed over the op's items, in order."""
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        acc = out.setdefault(r.op, dict.fromkeys(("compute", "L3", "L2", "L1", "L0"), 0.0))
        acc["compute"] += r.compute_pj
        for lvl in ("L3", "L2", "L1"):
            acc[lvl] += r.memory_pj[lvl]
        acc["L0"] += r.memory_pj["L0A"] + r.memory_pj["L0B"] + r.memory_pj["L0C"]
    return out


def save_plot(report: Report, path: str | Path) -> None:
    """Per-op energy stacked by memory level (and compute), the Boolean model and the
    float baseline side by side; written atomically (PNG, or the format of the suffix)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BoldcError("--plot needs matplotlib: pip install \"boldc[plot]\" (or pip install matplotlib)") from None
    path = Path(path)
    mine, base = _per_op(report.rows), _per_op(report.baseline_rows)
    ops = [k for k, v in mine.items() if sum(v.values()) > 0]
    ops += [k for k, v in base.items() if k not in mine and sum(v.values()) > 0]
    parts = ("compute", "L3", "L2", "L1", "L0")
    titles = _titles(report)
    labels = {"compute": "compute", "L3": titles["L3"], "L2": titles["L2"], "L1": titles["L1"], "L0": "L0 (A+B+C)"}
    colors = {"compute": "#4c72b0", "L3": "#c44e52", "L2": "#dd8452", "L1": "#ccb974", "L0": "#55a868"}
    width = 0.4
    fig, ax = plt.subplots(figsize=(max(8.0, 0.35 * len(ops) + 2), 5))
    xs = list(range(len(ops)))
    for offset, data, hatch, who in ((-width / 2, mine, None, "Boolean"), (width / 2, base, "//", "float")):
        bottom = [0.0] * len(ops)
        for part in parts:
            vals = [data.get(op, {}).get(part, 0.0) / 1e9 for op in ops]  # mJ
            ax.bar([x + offset for x in xs], vals, width, bottom=bottom, color=colors[part], hatch=hatch,
                   edgecolor="white", linewidth=0.3, label=f"{labels[part]} ({who})")
            bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(xs)
    ax.set_xticklabels(ops, rotation=90, fontsize=7)
    ax.set_ylabel("energy per step [mJ]")
    meta = report.meta
    ax.set_title(f"{meta.get('source') or 'module'}: {meta.get('phase')} step, batch {meta.get('batch')} — "
                 f"Boolean (left, plain) vs float baseline (right, hatched); ratio {fmt_ratio(report.ratio)}",
                 fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fmt = path.suffix.lstrip(".").lower() or "png"
    try:
        fig.savefig(buf, format=fmt, dpi=120)
    except ValueError as exc:
        raise BoldcError(f"{path}: cannot write a plot in this format ({exc})") from None
    finally:
        plt.close(fig)
    atomic_write(path, buf.getvalue())
