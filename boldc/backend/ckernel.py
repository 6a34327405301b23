"""What an op's emitter receives and returns (docs/backend.md, "Emission").

The backend calls the op's emitter (``boldc.backend.emitters``) with a ``COp``: the op,
its resolved attributes, and a ``CTensor`` per operand and result (C pointer name,
storage layout). The emitter returns a ``CKernel``: the C statements of the op's
function body and the arena scratch it needs. Emitters never see arena offsets or
file names: the generic emitter owns those, and declares the pointers (and ``n``,
``ex``, ``scratch``) a body uses.

In a body: ``ex`` (``const bd_exec *``: the call's batch and threads), ``n`` (the
call's batch, a ``long``), ``scratch`` (when reserved), one pointer per operand and
result, and ``PARALLEL_FOR_IF(c)`` before a loop to split it over threads.

Index arithmetic is built with ``cexpr`` (expressions that simplify as they are built)
and loops with ``cblock.Block``. ``map_body`` serves the many ops that are a loop over
output elements: the loop nest runs over the output's storage order, so writes are
sequential, and every operand is read through its own layout (broadcasting,
channels-last, packed bits).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from boldc.backend.cblock import Block
from boldc.backend.cexpr import Const, Expr, Var, div, mod, product
from boldc.backend.layout import WORD_BITS, Layout, dim_expr, words_expr
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
    is_arg: bool = False  # a function argument (what CKernel.input_check may read, with params)

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

    @property
    def lead(self) -> Expr:
        """The leading (batch) dim: its size when static, else ``n`` (this call's
        batch). Kernels size their batch loops with it, never with ``n`` alone: a
        function without a symbolic dim runs with ``n`` = 1."""
        return dim_expr(self.shape[0])

    def extent(self, axis: int) -> Expr:
        """Logical dim ``axis`` as an index expression."""
        return dim_expr(self.shape[axis])

    def at(self, out_idx: Sequence, out_rank: int | None = None) -> list:
        """Index of this operand for output index ``out_idx`` under numpy
        broadcasting (axes aligned right; size-1 axes read index 0)."""
        out_rank = len(out_idx) if out_rank is None else out_rank
        lead = out_rank - self.rank
        return [Const(0) if d == 1 else out_idx[lead + a] for a, d in enumerate(self.shape)]

    def load(self, idx: Sequence) -> str:
        """Element value: the number, or 0/1 for b1."""
        return self.layout.load(self.name, idx)


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
    """An emitter's answer: ``body``, the C statements of the op's function;
    ``scratch_bytes`` of arena are reserved for the op's call (the body reads them
    through the pointer ``scratch``). ``scratch_check``, a C expression of the bytes the
    runtime will use, is compared with ``scratch_bytes`` by the generated ``*_init``.
    ``input_check`` (see the field) makes the public function return ``ERR_INPUT``
    before it runs any op."""

    body: str
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
    # Further (expression, bytes) pairs checked like ``scratch_check``: the parts of a fused op.
    scratch_checks: tuple[tuple[str, int], ...] = ()


# --- loops over output elements ----------------------------------------------------------


def map_body(out: CTensor, expr: Callable[[list[Expr]], str], parallel: bool = True) -> str:
    """C statements computing every element of ``out`` as ``expr(idx)``.

    ``idx`` holds one index expression per logical axis of ``out`` (the loop
    variables ``i0``, ``i1``..., or 0 for an axis of size 1). For a b1 result ``expr``
    is a C condition (true = T); bits are packed into words as the layout says,
    padding bits left 0."""
    lay = out.layout
    if lay.rank == 0:
        value = expr([])
        if lay.dtype.is_bool:
            value = f"(uint8_t)(({value}) ? 1 : 0)"
        return f"{out.name}[0] = ({out.ctype})({value});\n"
    b = Block()
    idx: list[Expr] = [Const(0)] * lay.rank
    work = lay.count_expr() if parallel else None
    dims = lay.extents
    with ExitStack() as loops:
        for q, axis in enumerate(lay.perm[:-1]):
            idx[axis] = loops.enter_context(b.loop(f"i{axis}", dims[q], work))
            work = work if isinstance(idx[axis], Const) else None  # the pragma goes on the outermost loop
        last = lay.perm[-1]
        if lay.packed:
            _packed_run(b, out, idx, last, dims[-1], expr, work)
        else:
            idx[last] = loops.enter_context(b.loop(f"i{last}", dims[-1], work))
            value = expr(idx)
            if lay.dtype.is_bool:
                value = f"(({value}) ? 1 : 0)"
            b(f"{out.name}[{lay.offset(idx)[0]}] = ({out.ctype})({value});")
    return b.text()


def _packed_run(b: Block, out: CTensor, idx: list, last: int, d: Expr, expr, work) -> None:
    """The words of one packed run of ``d`` bits: bit k of word w is element 64*w + k."""
    with b.loop("bd_w", words_expr(d), work) as w:
        if isinstance(d, Const) and (d.value % WORD_BITS == 0 or d.value <= WORD_BITS):
            end: Expr = Const(min(d.value, WORD_BITS))  # every word full, or the only one
        else:
            b.decl(f"const long bd_end = {d - w * WORD_BITS} < {WORD_BITS} ? {d - w * WORD_BITS} : {WORD_BITS};")
            end = Var("bd_end", 1, WORD_BITS)
        b.decl("uint64_t bd_word = 0;")
        with b.loop("bd_b", end) as bit:
            idx[last] = w * WORD_BITS + bit
            b(f"if ({expr(idx)}) bd_word |= (uint64_t)1 << {bit};")
        idx[last] = w * WORD_BITS
        b(f"{out.name}[{out.layout.offset(idx)[0]}] = bd_word;")


@contextmanager
def each_row(b: Block, t: CTensor, axis: int, work=None) -> Iterator[list[Expr]]:
    """Loops over every logical axis of ``t`` but ``axis``; yields the index, whose
    ``axis`` entry the row's own loops (``along``) fill in. With ``work`` (the elements the
    whole kernel touches) the outermost loop of more than one trip is split over threads,
    so the row's body must keep its state in declarations of its own."""
    with ExitStack() as loops:
        idx: list[Expr] = [Const(0)] * t.rank
        for a in range(t.rank):
            if a != axis:
                idx[a] = loops.enter_context(b.loop(f"i{a}", t.extent(a), work))
                work = work if isinstance(idx[a], Const) else None
        yield idx


def along(b: Block, t: CTensor, axis: int, idx: list[Expr], statement: Callable[[list[Expr]], str]) -> None:
    """One loop over ``axis`` of ``t``: ``statement(idx)`` for every position of the row."""
    with b.loop(f"i{axis}", t.extent(axis)) as i:
        idx[axis] = i
        b(statement(idx))


def copy_body(dst: CTensor, src: CTensor, src_index: Callable[[list], list] | None = None) -> str:
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


def row_major_remap(dst_shape: Sequence, src_shape: Sequence) -> Callable[[list], list]:
    """Index map of a reshape: the row-major flat position of ``dst`` index, read back
    as an index of ``src`` (both shapes' sizes equal; dims ints or the batch):
    flat = sum idx[a] * prod(dst[a+1:]), src[a] = flat / prod(src[a+1:]) % src[a]."""
    dst_dims = [dim_expr(d) for d in dst_shape]
    src_dims = [dim_expr(d) for d in src_shape]

    def index(idx: list) -> list:
        flat: Expr = Const(0)
        for a, i in enumerate(idx):
            flat = flat + i * product(*dst_dims[a + 1:])
        out = []
        for a, d in enumerate(src_dims):
            e = div(flat, product(*src_dims[a + 1:]))
            out.append(mod(e, d) if a > 0 else e)
        return out

    return index


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
