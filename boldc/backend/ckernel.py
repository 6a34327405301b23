"""What an op's ``emit_c`` hook receives and returns (docs/backend.md, "Emission").

The backend calls ``opdef.emit_c(cop)`` with a ``COp``: the op, its resolved
attributes, and a ``CTensor`` per operand and result (C pointer name, storage
layout). The hook returns a ``CKernel``: the Jinja macro that renders the body of the
op's C function (template file under templates/, macro name, arguments) and the
arena scratch it needs. Hooks never see arena offsets or file names: the generic
emitter owns those.

This module is light (no jinja2, no cffi): op definitions import it.

Helpers for the many ops that are a loop over output elements (``map_body``): the
loop nest runs over the output's storage order, so writes are sequential, and every
operand is read through its own layout (broadcasting, channels-last, packed bits).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from boldc.backend.layout import BATCH, Layout, cmul
from boldc.errors import BoldcError
from boldc.ir.types import DType


class EmitError(BoldcError):
    """An op (or a use of it) the C backend cannot compile; the message names the op."""


@dataclass
class CTensor:
    """One operand or result as the op's C function sees it."""

    name: str  # C identifier of the pointer
    layout: Layout
    is_param: bool = False
    ref: str = ""  # IR name (%x / @w), for comments

    @property
    def dtype(self) -> DType:
        return self.layout.dtype

    @property
    def ctype(self) -> str:
        return self.layout.ctype

    @property
    def shape(self) -> tuple:
        return self.layout.shape

    @property
    def rank(self) -> int:
        return self.layout.rank

    def dim(self, axis: int):
        return self.shape[axis]

    @property
    def lead(self) -> str:
        """C expression of the leading (batch) dim: its size when static, else ``n``
        (this call's batch). Kernels size their batch loops with it, never with ``n``
        alone: a function without a symbolic dim runs with ``n`` = 1."""
        return _dim_expr(self.shape[0])

    def numel_expr(self) -> str:
        return cmul(*self.shape)

    def at(self, out_idx: Sequence[str], out_rank: int | None = None) -> list[str]:
        """Index of this operand for output index ``out_idx`` under numpy
        broadcasting (axes aligned right; size-1 axes read index 0)."""
        out_rank = len(out_idx) if out_rank is None else out_rank
        lead = out_rank - self.rank
        return ["0" if d == 1 else out_idx[lead + a] for a, d in enumerate(self.shape)]

    def load(self, idx: Sequence[str]) -> str:
        """Element value: the number, or 0/1 for b1."""
        return self.layout.load(self.name, idx)

    def number(self, idx: Sequence[str], ctype: str) -> str:
        """Element read as a number of C type ``ctype``; b1 reads as e(b) = +-1."""
        v = self.load(idx)
        if self.dtype.is_bool:
            return f"(({ctype})(2 * {v} - 1))"
        return f"(({ctype}){v})"


@dataclass
class COp:
    """An op ready for emission."""

    op: Any  # boldc.ir.core.Op
    attrs: dict
    ins: list[CTensor]
    outs: list[CTensor]
    index: int  # position in its function
    max_threads: int = 1  # kernels size per-thread scratch for this many threads
    max_batch: int = 1

    def fail(self, reason: str) -> EmitError:
        where = f"{self.op.loc}: " if getattr(self.op, "loc", None) else ""
        return EmitError(f"{where}op {self.op.describe()}: {reason}")

    @property
    def out(self) -> CTensor:
        return self.outs[0]


@dataclass
class CKernel:
    """An emit_c hook's answer: render ``macro`` of ``templates/<template>`` with
    ``op`` (the COp) and ``args``; ``scratch_bytes`` of arena are reserved for the
    op's call (the macro reads them through the pointer ``scratch``).
    ``scratch_check``, a C expression of the bytes the runtime will use, is compared
    with ``scratch_bytes`` by the generated ``*_init``. ``input_check`` (see the field)
    makes the public function return ``ERR_INPUT`` before it runs any op."""

    template: str
    macro: str
    args: dict = field(default_factory=dict)
    scratch_bytes: int = 0
    scratch_check: str | None = None
    # An input check run before any op of the function (so a refused call changes no
    # param): C statements that ``return 1;`` when the operands at ``input_check_operands``
    # (function arguments or params) are out of range, and the message that says so.
    input_check: str | None = None
    input_check_message: str = ""
    input_check_operands: tuple[int, ...] = ()
    # The operand whose arena bytes the (single) result may take over when that operand
    # dies at this op: the body must read each element of it before writing the same
    # element of the result (a loop over identical layouts, element by element).
    inplace: int | None = None


# --- loops over output elements ----------------------------------------------------------


def _dim_expr(d) -> str:
    return str(d) if isinstance(d, int) else BATCH


def map_body(out: CTensor, expr: Callable[[list[str]], str], parallel: bool = True) -> str:
    """C statements computing every element of ``out`` as ``expr(idx)``.

    ``idx`` holds one C variable per logical axis of ``out`` (``i0``, ``i1``...).
    For a b1 result ``expr`` is a C condition (true = T); bits are packed into words
    as the layout says, padding bits left 0."""
    lay = out.layout
    idx = [f"i{a}" for a in range(lay.rank)]
    if lay.rank == 0:
        value = expr(idx)
        if lay.dtype.is_bool:
            value = f"(uint8_t)(({value}) ? 1 : 0)"
        return f"{out.name}[0] = ({out.ctype})({value});\n"
    lines: list[str] = []
    depth = 0

    def emit(s: str) -> None:
        lines.append("    " * depth + s)

    phys = lay.phys_dims
    for q, axis in enumerate(lay.perm[:-1]):
        if q == 0 and parallel:
            emit(f"BD_OMP_FOR_IF({cmul(*lay.storage_dims)} > 32768)")
        emit(f"for (long {idx[axis]} = 0; {idx[axis]} < {_dim_expr(phys[q])}; ++{idx[axis]}) {{")
        depth += 1
    last = lay.perm[-1]
    d = _dim_expr(phys[-1])
    if lay.packed:
        off, _ = lay.offset([i if a != last else "0" for a, i in enumerate(idx)])
        emit(f"for (long bd_w = 0; bd_w < ({d} + 63) / 64; ++bd_w) {{")
        emit(f"    const long bd_end = {d} - 64 * bd_w < 64 ? {d} - 64 * bd_w : 64;")
        emit("    uint64_t bd_word = 0;")
        emit("    for (long bd_b = 0; bd_b < bd_end; ++bd_b) {")
        emit(f"        const long {idx[last]} = 64 * bd_w + bd_b;")
        emit(f"        if ({expr(idx)}) bd_word |= (uint64_t)1 << bd_b;")
        emit("    }")
        emit(f"    {out.name}[{off} + bd_w] = bd_word;")
        emit("}")
    else:
        if len(lay.perm) == 1 and parallel:
            emit(f"BD_OMP_FOR_IF({cmul(*lay.storage_dims)} > 32768)")
        off, _ = lay.offset(idx)
        value = expr(idx)
        if lay.dtype.is_bool:
            value = f"(({value}) ? 1 : 0)"
        emit(f"for (long {idx[last]} = 0; {idx[last]} < {d}; ++{idx[last]})")
        emit(f"    {out.name}[{off}] = ({out.ctype})({value});")
    while depth:
        depth -= 1
        emit("}")
    return "\n".join(lines) + "\n"


def copy_body(dst: CTensor, src: CTensor, src_index: Callable[[list[str]], list[str]] | None = None) -> str:
    """``dst`` gets ``src``'s elements (index mapped by ``src_index``, default the
    same index), converting storage but not values (same dtype). Without
    ``src_index``, layouts with the same storage (``Layout.same_storage``: the same
    row-major order, so possibly other shapes of the same elements, as in a reshape)
    are one memcpy of the element count; otherwise the shapes must be equal."""
    if src_index is None and dst.layout.same_storage(src.layout):
        return f"memcpy({dst.name}, {src.name}, sizeof({dst.ctype}) * (size_t)({dst.layout.count_expr()}));\n"
    if src_index is None and dst.shape != src.shape:
        raise ValueError(f"copy_body: {dst.layout} from {src.layout} needs an index map")
    get = src_index or (lambda idx: idx)
    return map_body(dst, lambda idx: src.load(get(idx)))


def row_major_remap(dst_shape: Sequence, src_shape: Sequence) -> Callable[[list[str]], list[str]]:
    """Index map of a reshape: the row-major flat position of ``dst`` index, read back
    as an index of ``src`` (both shapes' sizes equal; dims ints or the batch)."""

    def index(idx: list[str]) -> list[str]:
        terms = []
        for a, i in enumerate(idx):
            stride = cmul(*dst_shape[a + 1:])
            terms.append(i if stride == "1" else f"({i})*{stride}")
        flat = "(" + " + ".join(terms) + ")" if terms else "0"
        out = []
        for a, d in enumerate(src_shape):
            stride = cmul(*src_shape[a + 1:])
            e = flat if stride == "1" else f"{flat} / ({stride})"
            if a > 0:
                e = f"({e}) % ({_dim_expr(d)})"
            out.append(e)
        return out

    return index


def is_static_shape(t: CTensor) -> bool:
    return all(isinstance(d, int) for d in t.shape)


def scalar_literal(value, ctype: str) -> str:
    """A C literal of a Python number for a computation in ``ctype``."""
    if ctype in ("float", "double"):
        v = float(value)
        if v != v:
            return "(0.0/0.0)" if ctype == "double" else "((float)(0.0/0.0))"
        if v in (float("inf"), float("-inf")):
            return ("-" if v < 0 else "") + ("HUGE_VAL" if ctype == "double" else "((float)HUGE_VAL)")
        text = repr(v)
        return text + ("f" if ctype == "float" else "") if ("." in text or "e" in text) else text + ".0" + (
            "f" if ctype == "float" else "")
    return f"(({ctype}){int(value)})"
