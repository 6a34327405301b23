"""Emitter of the ``fused`` op: the head (a layer) and its epilogues as one C function that
keeps the intermediates out of the arena (docs/backend.md, "Fused ops").

The parts run one after the other on a **chunk of samples** at a time: the head writes the
chunk's pre-activations into a scratch buffer of about ``CHUNK_BYTES`` (so they are still
in cache), each epilogue reads the previous part's chunk and writes its own, and only the
fused op's results (the last part's, and the kept intermediates) are written to their
arena buffers, at their widths: a Boolean convolution + threshold leaves packed bits in the
arena, never the integer pre-activation of the whole batch.

Each part is emitted by its own op's emitter, on tensors that are the chunk's slices:
the same C as the op alone computes, so the fused op's values are the parts' values bit for
bit. Chunking needs every batched tensor of the parts to carry the batch as its first axis
and every part's result to be batched (the head is then computed sample by sample: a
convolution, a linear layer, an input gradient); otherwise (a weight gradient, a function
without a batch) the parts run once on the whole batch, intermediates in scratch.
"""

from __future__ import annotations

from dataclasses import dataclass

from boldc.backend.cfile import identifiers, with_locals
from boldc.backend.ckernel import CKernel, COp, CTensor
from boldc.backend.emitters.registry import MustLower, NoEmitter, emits, emitter
from boldc.backend.layout import BATCH, Layout
from boldc.ir.core import Op, Value
from boldc.ops.fused_ops import PREVIOUS, types_of_part
from boldc.ops.registry import lookup

CHUNK_BYTES = 1 << 20  # intermediates of one chunk: about an L2 cache
ALIGN = 64


def _round(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


@dataclass
class _Tensor:
    """A tensor a part reads or writes: the fused op's operand or result (``outer``: its
    C pointer), or an intermediate in the scratch at ``offset``."""

    layout: Layout
    outer: CTensor | None = None
    offset: int = 0
    is_param: bool = False
    ref: str = ""


def _batched_first(layout: Layout) -> bool:
    """The tensor has the batch as its first axis only (a sample is a contiguous slice)."""
    return layout.shape[:1] == (BATCH,) and BATCH not in layout.shape[1:] and not (
        layout.packed and layout.rank < 2)


def _chunkable(tensors: list[_Tensor], results: list[_Tensor]) -> bool:
    return all(_batched_first(t.layout) for t in results) and all(
        _batched_first(t.layout) or BATCH not in t.layout.shape for t in tensors)


@emits("fused")
def fused(cop: COp) -> CKernel:
    """The parts of the fused op's ``body`` on chunks of samples (module docstring)."""
    op = cop.op
    body = lookup("fused").parts(op)
    operand_types = [o.type for o in op.operands]
    outers = [_Tensor(t.layout, t, is_param=t.is_param, ref=t.ref) for t in cop.ins]
    kept = iter(cop.outs[1:])
    parts, scratch_top, previous, previous_type = [], 0, None, None
    for k, part in enumerate(body):
        opdef, arg_types, attrs, out_types = types_of_part(body, k, operand_types, previous_type)
        args = [previous if a == PREVIOUS else outers[a] for a in part["args"]]
        if k == len(body) - 1:
            out = _Tensor(cop.outs[0].layout, cop.outs[0], ref=cop.outs[0].ref)
        elif part.get("keep"):
            t = next(kept)
            out = _Tensor(t.layout, t, ref=t.ref)
        else:
            out = _Tensor(Layout(out_types[0].dtype, out_types[0].shape), offset=-1, ref=f"{op.results[0].ref}.{k}")
        parts.append((opdef, args, opdef.normalize_attrs(attrs), arg_types, out_types, out))
        previous, previous_type = out, out_types[0]
    tensors = [t for _, args, *_ in parts for t in args] + [p[-1] for p in parts]
    chunked = _chunkable(tensors, [p[-1] for p in parts])
    inner = [p[-1] for p in parts if p[-1].outer is None]
    per_sample = sum(t.layout.nbytes(1) for t in inner)
    chunk = max(1, min(cop.max_batch, CHUNK_BYTES // max(per_sample, 1))) if chunked else cop.max_batch
    for t in inner:
        t.offset = scratch_top
        scratch_top += _round(t.layout.nbytes(chunk))
    kernels = [_emit_part(cop, k, part, chunk, chunked) for k, part in enumerate(parts)]
    part_scratch = max(kernel.scratch_bytes for kernel, _ in kernels)
    text = [_prologue(chunked, chunk, scratch_top + part_scratch > 0)]
    for k, (kernel, decls) in enumerate(kernels):
        decls = {**decls, "scratch": f"unsigned char *scratch = bd_fscr + {scratch_top};"}
        decls.update(_batch_locals(chunked))
        text.append(f"{{ /* part {k}: {parts[k][0].name} */\n{with_locals(kernel.body, decls)}\n}}")
    text.append("}" if chunked else "")
    checks = tuple((kernel.scratch_check, kernel.scratch_bytes) for kernel, _ in kernels if kernel.scratch_check)
    return CKernel("\n".join(text) + "\n", scratch_bytes=scratch_top + part_scratch, scratch_checks=checks)


def _prologue(chunked: bool, chunk: int, scratch: bool) -> str:
    """The outer context under other names (the parts' blocks redeclare n, ex, scratch;
    ``scratch``: whether the op has any, else the function declares none) and, when
    chunked, the loop over chunks of ``chunk`` samples."""
    lines = ["unsigned char *const bd_fscr = scratch;"] if scratch else []
    if not chunked:
        lines.append("const bd_exec *const bd_fex = ex;")
        return "\n".join(lines)
    lines += ["const long bd_fn = n;", "const bd_exec *const bd_fex = ex;",
              f"for (long bd_fs = 0; bd_fs < bd_fn; bd_fs += {chunk}) {{",
              "bd_exec bd_fcex = *bd_fex;",
              f"bd_fcex.n = (int)(bd_fn - bd_fs < {chunk} ? bd_fn - bd_fs : {chunk});"]
    return "\n".join(lines)


def _batch_locals(chunked: bool) -> dict[str, str]:
    if chunked:
        return {"n": "const long n = bd_fcex.n;", "ex": "const bd_exec *ex = &bd_fcex;"}
    return {"n": "const long n = bd_fex->n;", "ex": "const bd_exec *ex = bd_fex;"}


def _emit_part(cop: COp, k: int, part: tuple, chunk: int, chunked: bool) -> tuple[CKernel, dict[str, str]]:
    """Part ``k``'s kernel, emitted by its op's emitter on the chunk's tensors, and the
    declarations of the pointers its body reads."""
    opdef, args, attrs, arg_types, out_types, out = part
    hook = emitter(opdef.name)
    if isinstance(hook, (MustLower, NoEmitter)):
        raise cop.fail(f"part {k} ({opdef.name}) has no C implementation: {hook.reason}")
    names = opdef.operand_names(len(args))
    ins = [CTensor(f"bd_f{k}_{i}", t.layout, t.is_param, t.ref) for i, t in enumerate(args)]
    outs = [CTensor(f"bd_f{k}_y", out.layout, False, out.ref)]
    values = [Value(f"{cop.op.results[0].name}.p{k}.{name}", typ) for name, typ in zip(names, arg_types)]
    part_op = Op(opdef.name, values, [Value(f"{cop.op.results[0].name}.p{k}", out_types[0])], attrs,
                 loc=cop.op.loc)
    kernel = hook(COp(part_op, dict(attrs), ins, outs, cop.index, cop.max_threads, chunk))
    if kernel.input_check:
        raise cop.fail(f"part {k} ({opdef.name}) checks its inputs before the function runs, which a fused "
                       "op cannot do: compile the model unfused (fuse=False, or --no-fuse)")
    used = identifiers(kernel.body)
    decls = {}
    for c, t in zip(ins + outs, args + [out]):
        if c.name in used:
            decls[c.name] = _pointer(c, t, c in outs, chunked)
    return kernel, decls


def _pointer(c: CTensor, t: _Tensor, written: bool, chunked: bool) -> str:
    """The part's pointer: the fused op's own (a param, an unbatched tensor, or any tensor
    when not chunked), its chunk's slice, or the intermediate's place in the scratch."""
    ctype = c.ctype if written else f"const {c.ctype}"
    if t.outer is None:
        return f"{ctype} *{c.name} = ({ctype} *)(bd_fscr + {t.offset});"
    if chunked and BATCH in t.layout.shape:
        return f"{ctype} *{c.name} = {t.outer.name} + bd_fs * {t.layout.count(1)}L;"
    return f"{ctype} *{c.name} = {t.outer.name};"
