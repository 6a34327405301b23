"""The conversion summary ``boldc convert`` prints: layers, parameter counts, weight sizes.

Sizes are those of the tensors as stored: f32 4 bytes, integers their width, b1 one
bit (packed; rounded up to whole bytes per tensor).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from boldc.ir.core import Module, Param
from boldc.ops.registry import lookup
from boldc.ops.traits import Boolean, Layer, Mixed


def tensor_bytes(p: Param) -> int:
    return (p.type.numel() * p.type.dtype.bits + 7) // 8


@dataclass
class LayerRow:
    name: str
    op: str
    weights: str  # shape and dtype of the weight tensor
    params: int
    bytes_before: int  # as float32
    bytes_after: int


def _arithmetic(module: Module) -> list:
    return [op for op in module.ops("forward") if lookup(op.name).has(Layer)]


def layer_rows(module: Module) -> list[LayerRow]:
    """One row per arithmetic layer of ``module`` (imported from float32, so every
    parameter took 4 bytes before conversion)."""
    rows = []
    for op in _arithmetic(module):
        params = [v for v in op.operands if isinstance(v, Param)]
        w = params[0] if params else None
        rows.append(LayerRow(
            name=w.name if w else op.results[0].name,
            op=op.name,
            weights=str(w.type) if w else "-",
            params=sum(p.type.numel() for p in params),
            bytes_before=sum(4 * p.type.numel() for p in params),
            bytes_after=sum(tensor_bytes(p) for p in params),
        ))
    return rows


def param_totals(module: Module) -> dict[str, tuple[int, int]]:
    """{"float": (count, bytes), "boolean": (count, bytes)}; integer params count as float
    (they are not 1-bit)."""
    out = {"float": [0, 0], "boolean": [0, 0]}
    for p in module.params.values():
        key = "boolean" if p.type.dtype.is_bool else "float"
        out[key][0] += p.type.numel()
        out[key][1] += tensor_bytes(p)
    return {k: (v[0], v[1]) for k, v in out.items()}


def op_counts(module: Module) -> Counter:
    return Counter(op.name for op in module.ops("forward"))


def human_bytes(n: int) -> str:
    for unit, size in (("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def render(before: Module, after: Module, console) -> None:
    """Print the summary tables on a rich ``console``."""
    from rich.table import Table

    layers = Table(title="Layers", title_justify="left")
    for col in ("#", "layer", "op", "weights", "params", "size before", "size after"):
        layers.add_column(col, justify="right" if col in ("#", "params", "size before", "size after") else "left")
    rows = layer_rows(after)
    for i, r in enumerate(rows):
        layers.add_row(str(i), r.name, r.op, r.weights, f"{r.params:,}", human_bytes(r.bytes_before),
                       human_bytes(r.bytes_after))
    console.print(layers)

    t_before, t_after = param_totals(before), param_totals(after)
    totals = Table(title="Parameters", title_justify="left")
    for col in ("", "float", "Boolean", "size of the weights"):
        totals.add_column(col, justify="left" if not col else "right")
    for label, t in (("before", t_before), ("after", t_after)):
        totals.add_row(label, f"{t['float'][0]:,}", f"{t['boolean'][0]:,}",
                       human_bytes(t["float"][1] + t["boolean"][1]))
    console.print(totals)

    c_before, c_after = op_counts(before), op_counts(after)
    changed = sorted(name for name in set(c_before) | set(c_after) if c_before[name] != c_after[name])
    if changed:
        ops = Table(title="Ops changed", title_justify="left")
        for col in ("op", "before", "after"):
            ops.add_column(col, justify="left" if col == "op" else "right")
        for name in changed:
            ops.add_row(name, str(c_before[name]), str(c_after[name]))
        console.print(ops)
    size_b = sum(t_before[k][1] for k in t_before)
    size_a = sum(t_after[k][1] for k in t_after)
    boolean_layers = sum(1 for r in rows if lookup(r.op).has(Boolean))
    mixed_layers = sum(1 for r in rows if lookup(r.op).has(Mixed))
    mixed = f" and {mixed_layers} mixed (real inputs, Boolean weights)" if mixed_layers else ""
    console.print(f"{boolean_layers} of {len(rows)} arithmetic layers are Boolean{mixed}; weights "
                  f"{human_bytes(size_b)} -> {human_bytes(size_a)} ({size_b / max(size_a, 1):.1f}x smaller)")
