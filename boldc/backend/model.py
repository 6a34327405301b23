"""``CompiledModel``: the Python face of a built model (``boldc.compile`` returns one).

It owns one context: the params image (mutable state, initialised from the
module's params) and the arena, both numpy buffers aligned to 64 bytes. Two
CompiledModel objects never share state, even when they share the built library.
A CompiledModel is not safe to call from two threads at once (one arena).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from boldc.backend.emit import FunctionCode, Program
from boldc.backend.layout import Layout
from boldc.backend.model_train import ERR_INPUT, TrainingMixin
from boldc.backend.training import TrainOptions
from boldc.errors import BoldcError, InterpretError
from boldc.interp import check_input  # the interpreter's input rules, shared
from boldc.ir.core import Module

ERRORS = {1: "batch size out of range", 2: "kernel scratch larger than planned (a bug in boldc)",
          3: "NULL buffer", ERR_INPUT: "an input value is out of range"}


def _aligned(nbytes: int) -> np.ndarray:
    """A 64-byte-aligned zeroed buffer whose pages are touched now, not on the first call."""
    try:
        raw = np.empty(nbytes + 64, dtype=np.uint8)
    except MemoryError:
        raise BoldcError(f"cannot allocate {nbytes:,} bytes for the compiled model's buffers (compile with a "
                         "smaller max_batch)") from None
    raw.fill(0)
    start = (-raw.ctypes.data) % 64
    return raw[start:start + nbytes]


class CompiledModel(TrainingMixin):
    """A module compiled to C and loaded. See ``boldc.compile``; the training methods
    (``train_step``, ``fit``, ``evaluate``, checkpoints) are in ``model_train.py``."""

    def __init__(self, program: Program, ext, module: Module, flags: list[str],
                 train_options: TrainOptions | None = None):
        self.program = program
        self.module = module
        self.train_options = train_options or TrainOptions()
        self.options = program.options
        self.flags = list(flags)
        self._ffi, self._lib = ext.ffi, ext.lib
        self._prefix = program.options.name
        self._params = _aligned(program.params_bytes)
        self._arena = _aligned(program.arena_bytes)
        self._ctx = self._ffi.new(f"{self._prefix}_ctx *")
        self._fn = {name: getattr(self._lib, code.cname) for name, code in program.functions.items()}
        rc = getattr(self._lib, f"{self._prefix}_init")(self._ctx, self._ptr(self._params), self._ptr(self._arena))
        if rc != 0:
            raise RuntimeError(f"{self._prefix}_init failed: {ERRORS.get(rc, rc)}")
        self.set_threads(self.options.max_threads)  # threads= is what calls use, until set_threads
        for slot in program.params.values():
            if slot.param.data is not None:
                self.set_param(slot.param.name, slot.param.data)

    # -- facts --------------------------------------------------------------------------
    @property
    def c_source(self) -> str:
        return self.program.model_c

    @property
    def header(self) -> str:
        return self.program.model_h

    @property
    def arena_bytes(self) -> int:
        return self.program.arena_bytes

    @property
    def params_bytes(self) -> int:
        return self.program.params_bytes

    @property
    def max_batch(self) -> int:
        return self.options.max_batch

    @property
    def build_info(self) -> str:
        """Which SIMD path, popcount and threading the library was built with."""
        return self._ffi.string(self._lib.bd_build_info()).decode()

    @property
    def simd(self) -> str:
        """The kernels the library was built with: "avx512-vpopcntdq", "avx2", "neon" or
        "portable" (the ``simd=`` of ``build_info``)."""
        return dict(part.split("=", 1) for part in self.build_info.split() if "=" in part).get("simd", "portable")

    @property
    def threads(self) -> int:
        """Threads the next call uses (``threads`` of ``boldc.compile``, or ``set_threads``)."""
        return self._threads

    def set_threads(self, threads: int) -> None:
        """Threads the kernels use from now on (1..``threads`` given at compile time)."""
        if not 1 <= threads <= self.options.max_threads:
            raise BoldcError(f"threads must be in 1..{self.options.max_threads} (the compile-time maximum), "
                             f"got {threads}")
        getattr(self._lib, f"{self._prefix}_set_threads")(self._ctx, threads)
        self._threads = threads

    # -- params -------------------------------------------------------------------------
    def param_names(self) -> list[str]:
        return list(self.program.params)

    def _slot(self, name: str):
        try:
            return self.program.params[name.lstrip("@")]
        except KeyError:
            raise BoldcError(f"no param @{name.lstrip('@')} (params: {', '.join(self.program.params)})") from None

    def get_param(self, name: str) -> np.ndarray:
        """The param's current value (logical layout, IR dtype), a copy."""
        slot = self._slot(name)
        raw = self._params[slot.offset: slot.offset + slot.nbytes]
        return slot.layout.unpack(raw, 1)

    def set_param(self, name: str, value: np.ndarray) -> None:
        """Overwrite a param (same shape; b1 as a bool array, numbers converted)."""
        slot = self._slot(name)
        arr = np.asarray(value)
        t = slot.param.type
        if arr.shape != tuple(t.shape):
            raise BoldcError(f"param @{slot.param.name} is {t}, got an array of shape {list(arr.shape)}")
        if t.dtype.is_bool and arr.dtype != np.bool_:
            raise BoldcError(f"param @{slot.param.name} is b1 and needs a bool array, got {arr.dtype}")
        packed = slot.layout.pack(arr.astype(t.dtype.numpy, copy=False))
        self._params[slot.offset: slot.offset + slot.nbytes] = packed.view(np.uint8)

    def params(self) -> dict[str, np.ndarray]:
        return {name: self.get_param(name) for name in self.program.params}

    def export(self, outdir, **options):
        """Write the standalone C folder (see ``boldc.backend.export.export``) with this
        model's current params (after ``set_param`` or training)."""
        from boldc.backend.export import export

        if options.setdefault("train", "train_step" in self.program.functions):
            options.setdefault("max_batch", self.max_batch)
        return export(self.module, outdir, params=self.params(), **options)

    def params_image(self) -> bytes:
        """The params image exactly as the C code reads it (see ``export``)."""
        return self._params.tobytes()

    # -- running ------------------------------------------------------------------------
    def infer(self, x, func: str = "forward"):
        """Run ``func`` on a batch of any size (split into chunks of at most
        ``max_batch``). ``x``: one array, a list in argument order, or a dict by name.
        Returns one array, or a tuple when the function has several outputs."""
        code = self._code(func)
        args = self._bind(code, x)
        n = self._batch(code, args)
        chunkable = code.has_batch and all(v.type.shape and isinstance(v.type.shape[0], str) for v in code.returns)
        if n <= self.max_batch or not chunkable:
            outs = self._call(code, args, n)
        else:
            parts = [self._call(code, [a[s:s + self.max_batch] for a in args], min(self.max_batch, n - s))
                     for s in range(0, n, self.max_batch)]
            outs = [np.concatenate(p, axis=0) for p in zip(*parts)]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def run(self, func: str, inputs) -> list[np.ndarray]:
        """Run ``func`` once (batch at most ``max_batch``); all outputs as a list."""
        code = self._code(func)
        args = self._bind(code, inputs)
        return self._call(code, args, self._batch(code, args))

    def trace(self, x, func: str = "forward") -> dict[str, np.ndarray]:
        """Run ``func`` and return every value (arguments and op results) by IR name,
        read back from the arena. Needs ``trace=True`` at compile time (each value then
        has its own bytes; otherwise buffers are reused and old values overwritten)."""
        if not self.options.trace:
            raise BoldcError("trace() needs a model compiled with trace=True")
        code = self._code(func)
        args = self._bind(code, x)
        n = self._batch(code, args)
        self._call(code, args, n)
        out = {}
        for slot in code.slots.values():
            b = slot.buffer
            raw = self._arena[b.offset: b.offset + slot.layout.nbytes(n if code.has_batch else 1)]
            out[slot.value.name] = slot.layout.unpack(raw, n)
        return out

    def profile(self, x, func: str = "forward", repeat: int = 1) -> list[tuple[str, float]]:
        """Run ``func`` ``repeat`` times; seconds per run spent in each op (C clock)."""
        code = self._code(func)
        args = self._bind(code, x)
        n = self._batch(code, args)
        slots = np.zeros(self.program.profile_slots, dtype=np.float64)
        self._ctx.profile = self._ffi.cast("double *", self._ffi.from_buffer(slots))
        try:
            for _ in range(repeat):
                self._call(code, args, n)
        finally:
            self._ctx.profile = self._ffi.NULL
        return [(desc, float(slots[i]) / repeat) for i, desc in code.profile_ops]

    # -- helpers ------------------------------------------------------------------------
    def _code(self, func: str) -> FunctionCode:
        try:
            return self.program.functions[func]
        except KeyError:
            have = ", ".join("@" + f for f in self.program.functions)
            raise BoldcError(f"the compiled module has no function @{func} (it has: {have})") from None

    def _bind(self, code: FunctionCode, inputs) -> list[np.ndarray]:
        names = [a.name for a in code.args]
        if isinstance(inputs, Mapping):
            missing = [n for n in names if n not in inputs]
            unknown = sorted(set(inputs) - set(names))
            if missing or unknown:
                raise InterpretError(f"@{code.name} takes inputs ({', '.join(names)}); missing: "
                                     f"{missing or 'none'}, unknown: {unknown or 'none'}")
            inputs = [inputs[n] for n in names]
        elif isinstance(inputs, np.ndarray) or not isinstance(inputs, Sequence):
            inputs = [inputs]
        inputs = [np.asarray(a) for a in inputs]
        if len(inputs) != len(names):
            raise InterpretError(f"@{code.name} takes {len(names)} inputs ({', '.join(names)}), got {len(inputs)}")
        fn, bindings = self.module.function(code.name), {}
        return [check_input(fn, v, arr, bindings) for v, arr in zip(code.args, inputs)]

    def _batch(self, code: FunctionCode, args: list[np.ndarray]) -> int:
        sizes = {a.shape[0] for v, a in zip(code.args, args) if v.type.shape and isinstance(v.type.shape[0], str)}
        if len(sizes) > 1:
            raise InterpretError(f"@{code.name}: inputs disagree on the batch size ({sorted(sizes)})")
        return sizes.pop() if sizes else 1

    def _call(self, code: FunctionCode, args: list[np.ndarray], n: int) -> list[np.ndarray]:
        if code.has_batch and n > self.max_batch:
            raise BoldcError(f"batch {n} is larger than max_batch={self.max_batch} (use infer(), which splits)")
        ffi = self._ffi
        keep = []
        c_args = [self._ctx, n]
        for arr, api in zip(args, code.arg_api):
            buf = np.ascontiguousarray(_api_array(arr, api))
            keep.append(buf)
            c_args.append(ffi.cast(f"const {api.ctype} *", self._ptr(buf)))
        outs = []
        for api in code.ret_api:
            out = np.empty(api.concrete_dims(n), dtype=api.np_storage)
            outs.append(out)
            c_args.append(ffi.cast(f"{api.ctype} *", self._ptr(out)))
        rc = self._fn[code.name](*c_args)
        if rc == ERR_INPUT:
            raise InterpretError(self._input_error())
        if rc != 0:
            raise RuntimeError(f"{code.cname} failed: {ERRORS.get(rc, rc)}")
        return [o.astype(np.bool_) if api.dtype.is_bool else o for o, api in zip(outs, code.ret_api)]

    def _ptr(self, arr: np.ndarray):
        if arr.size == 0:
            return self._ffi.cast("void *", self._ffi.from_buffer(np.zeros(1, np.uint8)))
        return self._ffi.cast("void *", self._ffi.from_buffer(arr, require_writable=False))


def _api_array(arr: np.ndarray, api: Layout) -> np.ndarray:
    return arr.astype(np.uint8) if api.dtype.is_bool else arr.astype(api.np_storage, copy=False)
