"""The generic C emitter: Module -> model.c / model.h (docs/backend.md).

For every function of the module (``forward``, and ``train_step`` when the
training passes have run) and every op in it, the op's emitter (``boldc.backend.emitters``)
gives the body of one static C function; this module owns everything around it: the
storage layout of each value (``layout.py``), the arena plan (``plan.py``), the
params image, the conversions between API buffers and internal storage, and the
public entry points. It never branches on op names.

Every op function has one signature, ``void op(const <name>_frame *frame)`` (the call's
``bd_exec``, arena and params), so a function's ops form a table that one loop runs
(and times, when profiling). An op function declares only the locals its body uses
(pointers, ``n``, ``ex``, ``scratch``): the emitter reads the identifiers of the body.
Jinja renders the file skeletons (templates/module.c.j2, module.h.j2); ``cfile.py``
writes the C text around the bodies (names, locals, tables, strings).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from numbers import Integral

from boldc.backend.cfile import (
    C_KEYWORDS,
    c_string,
    cdef,
    check_names,
    comment,
    ident,
    local_name,
    pointer,
    table,
    with_locals,
)
from boldc.backend.ckernel import CKernel, COp, CTensor, EmitError, copy_body
from boldc.backend.emitters import MustLower, NoEmitter, emitter
from boldc.backend.layout import Layout
from boldc.backend.plan import Buffer, plan
from boldc.ir.core import Function, Module, Op, Param, Value
from boldc.ops.registry import lookup
from boldc.resources import read_text
from boldc.version import __version__

MAX_BATCH_LIMIT = 65536  # the C code counts samples in an int; larger batches belong in several calls
MAX_THREADS_LIMIT = 1024
MAX_ARENA_BYTES = 4 << 30  # one arena larger than this is a mistake (a max_batch too large), not a plan


@dataclass
class Options:
    """Emission options (``boldc.compile`` documents them)."""

    name: str = "model"      # C prefix of every public symbol and of the file names
    max_batch: int = 32      # the arena is planned for this batch
    max_threads: int = 1     # per-thread scratch is planned for this many threads
    trace: bool = False      # give every value its own arena bytes (read them after a call)
    functions: tuple[str, ...] | None = None  # functions to emit (None: all of the module's)

    def check(self) -> None:
        from boldc.backend.build import RUNTIME_FILES

        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", self.name) or self.name in C_KEYWORDS:
            raise EmitError(f"model name '{self.name}' must be a C identifier (a letter, then letters, digits "
                            "or _; not a C keyword)")
        # the runtime owns the bd_/BD_ symbols and its files' names (bd_weights_image, boldc_rt.h, ...)
        files = sorted({f.rsplit(".", 1)[0] for f in RUNTIME_FILES if not f.startswith("bd_")})
        if self.name.lower() == "bd" or self.name.lower().startswith("bd_") or self.name in files:
            raise EmitError(f"model name '{self.name}' is taken by the boldc runtime (bd, bd_*, "
                            f"{', '.join(files)}): choose another")
        if not (isinstance(self.max_batch, Integral) and 1 <= self.max_batch <= MAX_BATCH_LIMIT):
            raise EmitError(f"max_batch must be in 1..{MAX_BATCH_LIMIT}, got {self.max_batch} (a larger batch "
                            "runs as several calls)")
        if not (isinstance(self.max_threads, Integral) and 1 <= self.max_threads <= MAX_THREADS_LIMIT):
            raise EmitError(f"threads must be in 1..{MAX_THREADS_LIMIT}, got {self.max_threads}")


@dataclass
class ParamSlot:
    param: Param
    layout: Layout
    offset: int

    @property
    def nbytes(self) -> int:
        return self.layout.nbytes(1)


@dataclass
class ValueSlot:
    value: Value
    layout: Layout
    buffer: Buffer


@dataclass
class FunctionCode:
    """One generated entry point and its arena plan."""

    name: str
    cname: str
    args: list[Value]
    arg_api: list[Layout]
    returns: list[Value]
    ret_api: list[Layout]
    has_batch: bool
    slots: dict[int, ValueSlot] = field(default_factory=dict)  # id(value) -> arena slot
    buffers: list[Buffer] = field(default_factory=list)
    arena_bytes: int = 0
    profile_ops: list[tuple[int, str]] = field(default_factory=list)  # (profile slot, op description)


@dataclass
class Program:
    """Generated sources and what the Python side needs to drive them."""

    options: Options
    model_c: str
    model_h: str
    cdef: str
    params: dict[str, ParamSlot]
    functions: dict[str, FunctionCode]
    params_bytes: int
    arena_bytes: int
    model_hash: int
    profile_slots: int
    input_checks: list[str] = field(default_factory=list)  # messages of the input checks (ERR_INPUT)

    def params_image(self, values: dict | None = None) -> bytes:
        """The params image: every param packed at its offset (``values`` overrides the
        module's tensors by param name)."""
        import numpy as np

        image = bytearray(self.params_bytes)
        for name, slot in self.params.items():
            data = (values or {}).get(name, slot.param.data)
            if data is None:
                raise EmitError(f"param @{name} has no tensor (load the module with its weights)")
            raw = slot.layout.pack(np.asarray(data, dtype=slot.param.type.dtype.numpy)).tobytes()
            image[slot.offset: slot.offset + len(raw)] = raw
        return bytes(image)


@lru_cache(maxsize=1)
def environment():
    import jinja2

    loader = jinja2.FunctionLoader(lambda name: read_text("templates", name))
    return jinja2.Environment(loader=loader, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False)


def _batch_symbol(fn: Function) -> str | None:
    """The function's one run-time size, the batch (``bind_dims.batch_symbol``); any other
    symbol must have been bound at compile time (``bind_dims``)."""
    from boldc.passes.bind_dims import batch_symbol, function_symbols, unbound_message

    symbols = function_symbols(fn)
    batch = batch_symbol(symbols, fn)
    rest = sorted(symbols - {batch})
    if rest:
        raise EmitError(unbound_message(fn.name, rest, "the C backend takes only the batch N as a run-time size",
                                        "boldc compile --dim", "boldc.compile"))
    for a in fn.args:
        if any(isinstance(d, str) for d in a.type.shape[1:]):
            raise EmitError(f"@{fn.name}: argument %{a.name} {a.type}: the batch symbol must be the first "
                            "dimension")
    return batch


def _no_emitter_message(op: Op, why: MustLower | NoEmitter) -> str:
    where = f"{op.loc}: " if op.loc else ""
    if isinstance(why, MustLower):
        return f"{where}op {op.describe()} must be rewritten before C emission: {why.reason}"
    return f"{where}op {op.describe()} has no C implementation: {why.reason}"


class Emitter:
    def __init__(self, module: Module, options: Options):
        options.check()
        self.module = module
        self.options = options
        self.env = environment()
        self.params: dict[str, ParamSlot] = {}
        top = 0
        for p in module.params.values():
            if not p.type.is_static:
                raise EmitError(f"param @{p.name} has a symbolic shape {p.type}")
            lay = Layout(p.type.dtype, p.type.shape)
            self.params[p.name] = ParamSlot(p, lay, top)
            top += -(-max(lay.nbytes(1), 1) // 64) * 64
        self.params_bytes = top
        self.scratch_checks: list[dict] = []
        self.input_checks: list[str] = []  # messages of the ops' input checks, by index
        self.profile_slots = 0

    # -- one function ------------------------------------------------------------------
    def function(self, fn: Function) -> tuple[FunctionCode, dict]:
        prefix = self.options.name
        has_batch = _batch_symbol(fn) is not None
        code = FunctionCode(fn.name, f"{prefix}_{ident(fn.name)}", list(fn.args),
                            [Layout(a.type.dtype, a.type.shape, api=True) for a in fn.args],
                            list(fn.returns), [Layout(v.type.dtype, v.type.shape, api=True) for v in fn.returns],
                            has_batch)
        layouts: dict[int, Layout] = {id(a): Layout(a.type.dtype, a.type.shape) for a in fn.args}
        for op in fn.ops:
            for r in op.results:
                layouts[id(r)] = Layout(r.type.dtype, r.type.shape)
        last_use: dict[int, int] = {}
        for i, op in enumerate(fn.ops):
            for o in op.operands:
                if not isinstance(o, Param):
                    last_use[id(o)] = i
        for v in fn.returns:
            if not isinstance(v, Param):
                last_use[id(v)] = len(fn.ops)
        mb = self.options.max_batch
        for a in fn.args:
            b = Buffer(("arg", a.name), layouts[id(a)].nbytes(mb), -1, last_use.get(id(a), -1))
            code.buffers.append(b)
            code.slots[id(a)] = ValueSlot(a, layouts[id(a)], b)
        rendered = []
        for i, op in enumerate(fn.ops):
            cop, kernel = self._emit_op(fn, i, op, layouts)
            shared = self._inplace_buffer(op, i, kernel, code, layouts, last_use)
            for r in op.results:
                if shared is not None:  # the result takes over the dying operand's bytes
                    shared.last = max(shared.last, last_use.get(id(r), i))
                    code.slots[id(r)] = ValueSlot(r, layouts[id(r)], shared)
                    continue
                b = Buffer(("value", r.name), layouts[id(r)].nbytes(mb), i, last_use.get(id(r), i))
                code.buffers.append(b)
                code.slots[id(r)] = ValueSlot(r, layouts[id(r)], b)
            scratch = None
            if kernel.scratch_bytes:
                scratch = Buffer(("scratch", i), kernel.scratch_bytes, i, i)
                code.buffers.append(scratch)
            rendered.append((op, cop, kernel, scratch))
        code.arena_bytes = plan(code.buffers, reuse=not self.options.trace)
        ops = [self._op_text(fn, i, op, cop, kernel, scratch, code) for i, (op, cop, kernel, scratch)
               in enumerate(rendered)]
        return code, self._function_text(fn, code, ops)

    def _inplace_buffer(self, op: Op, i: int, kernel: CKernel, code: FunctionCode, layouts: dict,
                        last_use: dict) -> Buffer | None:
        """The operand buffer the op's result may share (CKernel.inplace), or None."""
        if kernel.inplace is None or self.options.trace or len(op.results) != 1:
            return None
        o, r = op.operands[kernel.inplace], op.results[0]
        if isinstance(o, Param) or id(o) not in code.slots or last_use.get(id(o)) != i:
            return None
        if layouts[id(o)] != layouts[id(r)] or sum(x is o for x in op.operands) != 1:
            return None
        return code.slots[id(o)].buffer

    def _emit_op(self, fn: Function, i: int, op: Op, layouts: dict[int, Layout]) -> tuple[COp, CKernel]:
        opdef = lookup(op.name)
        hook = emitter(op.name)
        if isinstance(hook, (MustLower, NoEmitter)):
            raise EmitError(_no_emitter_message(op, hook))
        used: set[str] = set()
        names = opdef.operand_names(len(op.operands))
        ins = []
        for name, o in zip(names, op.operands):
            lay = self.params[o.name].layout if isinstance(o, Param) else layouts[id(o)]
            ins.append(CTensor(local_name(name, used), lay, isinstance(o, Param), o.ref,
                               is_arg=any(o is a for a in fn.args)))
        out_names = ["y"] if len(op.results) == 1 else [f"y{k}" for k in range(len(op.results))]
        outs = [CTensor(local_name(nm, used), layouts[id(r)], False, r.ref) for nm, r in zip(out_names, op.results)]
        cop = COp(op, dict(op.attrs), ins, outs, i, self.options.max_threads, self.options.max_batch)
        kernel = hook(cop)
        if not isinstance(kernel, CKernel):
            raise TypeError(f"the emitter of '{op.name}' returned {type(kernel).__name__}, not a CKernel")
        return cop, kernel

    def _op_text(self, fn, i, op, cop: COp, kernel: CKernel, scratch, code: FunctionCode) -> dict:
        opdef = lookup(op.name)
        written = set(opdef.updated_positions(len(op.operands)))
        decls = {}
        for pos, (t, o) in enumerate(zip(cop.ins, op.operands)):
            const = "" if pos in written else "const "
            base, off = ("params", self.params[o.name].offset) if isinstance(o, Param) \
                else ("arena", code.slots[id(o)].buffer.offset)
            decls[t.name] = pointer(const + t.ctype, t.name, base, off, t.ref)
        for t, r in zip(cop.outs, op.results):
            decls[t.name] = pointer(t.ctype, t.name, "arena", code.slots[id(r)].buffer.offset, t.ref)
        if scratch is not None:
            decls["scratch"] = f"unsigned char *scratch = frame->arena + {scratch.offset};"
        cname = f"{code.cname}_op{i}"
        code.profile_ops.append((self.profile_slots, op.describe()))
        self.profile_slots += 1
        checks = ([(kernel.scratch_check, kernel.scratch_bytes)] if kernel.scratch_check else []) + \
            list(kernel.scratch_checks)
        for expr, nbytes in checks:
            self.scratch_checks.append({"expr": expr, "bytes": nbytes,
                                        "op": comment(f"@{fn.name} op {i} {op.describe()}")})
        check_index = None
        if kernel.input_check:
            for pos in kernel.input_check_operands:
                o = op.operands[pos]
                if not (isinstance(o, Param) or any(o is a for a in fn.args)):
                    raise cop.fail(f"operand {o.ref} is checked before the function runs, so it must be a "
                                   "function argument or a param")
            check_index = len(self.input_checks)
            self.input_checks.append(comment(f"@{fn.name}: op {op.describe()}: {kernel.input_check_message}"))
        # The IR file's base name only: generated code must not depend on where the file lives.
        loc = f"  ({os.path.basename(op.loc.filename or '<string>')}:{op.loc.line}:{op.loc.col})" if op.loc else ""
        return {"cname": cname, "comment": comment(repr(op)) + loc, "code": with_locals(kernel.body, decls),
                "check": with_locals(kernel.input_check, decls) if kernel.input_check else None,
                "check_index": check_index}

    def _function_text(self, fn: Function, code: FunctionCode, ops: list[dict]) -> dict:
        sig = [f"{self.options.name}_ctx *ctx", "int n"]
        copies_in, copies_out = [], []
        for k, (a, api) in enumerate(zip(fn.args, code.arg_api)):
            sig.append(f"const {api.ctype} *in{k}")
            slot = code.slots[id(a)]
            src, dst = CTensor("src", api, ref=a.ref), CTensor("dst", slot.layout, ref=a.ref)
            decls = {"dst": pointer(slot.layout.ctype, "dst", "arena", slot.buffer.offset)}
            copies_in.append({"cname": f"{code.cname}_in{k}", "arg": f"in{k}",
                              "comment": comment(f"{a.ref}: {a.type}"), "param": f"const {api.ctype} *src",
                              "code": with_locals(copy_body(dst, src), decls)})
        for k, (v, api) in enumerate(zip(fn.returns, code.ret_api)):
            sig.append(f"{api.ctype} *out{k}")
            if isinstance(v, Param):
                ps = self.params[v.name]
                lay, base, off = ps.layout, "params", ps.offset
            else:
                slot = code.slots[id(v)]
                lay, base, off = slot.layout, "arena", slot.buffer.offset
            src, dst = CTensor("src", lay, ref=v.ref), CTensor("dst", api, ref=v.ref)
            decls = {"src": pointer("const " + lay.ctype, "src", base, off)}
            copies_out.append({"cname": f"{code.cname}_out{k}", "arg": f"out{k}",
                               "comment": comment(f"{k}: {v.ref}: {v.type}"), "param": f"{api.ctype} *dst",
                               "code": with_locals(copy_body(dst, src), decls)})
        ins = ", ".join(f"{a.ref}: {a.type}" for a in fn.args)
        outs = ", ".join(str(v.type) for v in fn.returns)
        first_slot = code.profile_ops[0][0] if code.profile_ops else 0
        return {"name": fn.name, "cname": code.cname, "signature": ", ".join(sig), "has_batch": code.has_batch,
                "doc": comment(f"({ins}) -> ({outs}); inputs in0.., outputs out0.. as API buffers"),
                "copies_in": copies_in, "copies_out": copies_out, "ops": ops, "first_slot": first_slot,
                "table": table([op["cname"] for op in ops])}

    # -- the whole module ---------------------------------------------------------------
    def program(self) -> Program:
        functions, texts = {}, []
        names = self.options.functions or tuple(self.module.functions)
        for fn in (self.module.function(name) for name in names):
            code, text = self.function(fn)
            functions[fn.name] = code
            texts.append(text)
        arena = max((f.arena_bytes for f in functions.values()), default=0)
        arena = max(arena, 64)
        if arena > MAX_ARENA_BYTES:
            raise EmitError(f"the arena would take {arena:,} bytes ({arena / 2**30:.1f} GiB) for "
                            f"max_batch={self.options.max_batch}, more than the limit of {MAX_ARENA_BYTES >> 30} "
                            "GiB: use a smaller max_batch")
        prefix = self.options.name
        check_names(prefix, texts)
        ctx = {"prefix": prefix, "P": prefix.upper(), "version": __version__, "functions": texts,
               "any_ops": any(t["ops"] for t in texts), "any_checks": bool(self.input_checks),
               "scratch_checks": self.scratch_checks, "input_checks": [c_string(m) for m in self.input_checks],
               "param_infos": self._param_infos()}
        model_c = self.env.get_template("module.c.j2").render(**ctx)
        params_desc = [{"name": s.param.name, "macro": ident(s.param.name).upper(), "offset": s.offset,
                        "desc": comment(f"{s.param.type}, {s.layout.ctype}[{s.layout.count(1)}] "
                                         f"stored {list(s.layout.storage_dims)}")} for s in self.params.values()]
        digest = hashlib.sha256((model_c + repr(params_desc)).encode()).digest()
        model_hash = int.from_bytes(digest[:8], "little")
        model_h = self.env.get_template("module.h.j2").render(
            **ctx, arena_bytes=arena, params_bytes=max(self.params_bytes, 64), max_batch=self.options.max_batch,
            max_threads=self.options.max_threads, hash_hex=f"0x{model_hash:016x}", params=params_desc,
            profile_slots=max(self.profile_slots, 1))
        return Program(self.options, model_c, model_h, cdef(prefix, texts), self.params, functions,
                       max(self.params_bytes, 64), arena, model_hash, max(self.profile_slots, 1),
                       list(self.input_checks))

    def _param_infos(self) -> list[dict]:
        """The checkpoint table of the params (runtime ``bd_param_info``), in module order."""
        from boldc.backend.kernels import DTYPE_CODE

        return [{"name": c_string(s.param.name), "dtype": DTYPE_CODE[s.param.type.dtype],
                 "rank": s.param.type.rank, "dims": ", ".join(str(d) for d in s.param.type.shape) or "0",
                 "offset": s.offset} for s in self.params.values()]


def generate(module: Module, options: Options | None = None) -> Program:
    """C sources for every function of ``module``."""
    return Emitter(module, options or Options()).program()
