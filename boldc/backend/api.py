"""``boldc.compile``: Module -> C -> cffi extension -> ``CompiledModel``."""

from __future__ import annotations

import os

from boldc.errors import BoldcError
from boldc.ir.core import Module


def compile(module: Module, train: bool = False, *, max_batch: int = 32, isa: str = "native",
            popcount: str = "builtin", threads: int = 1, trace: bool = False, name: str = "model",
            functions=None, cache_dir: str | os.PathLike | None = None):
    """Compile every function of ``module`` to C, build it with cffi and load it.

    - ``max_batch``: the arena is planned for this batch; ``infer`` splits larger ones.
    - ``isa``: "native" (this machine's instruction set; the AVX-512 VPOPCNTDQ kernels
      when it has them, else the portable ones, picked at build time), "avx512",
      "avx2" (portable kernels built for AVX2 + popcnt), or "portable" (no -m flag).
    - ``popcount``: "builtin" (the compiler's) or "portable" (bit-twiddling C).
    - ``threads``: the most threads the kernels may use; > 1 builds with OpenMP.
      ``CompiledModel.set_threads`` picks the number per call (default 1).
    - ``trace``: give every intermediate its own arena bytes so that
      ``CompiledModel.trace`` returns every value (tests compare them with the
      interpreter).
    - ``name``: C prefix of the generated symbols.
    - ``functions``: names of the functions to compile (default: @forward only; other
      functions of the module, such as a @train_step, are left out).
    - ``cache_dir``: build cache (default ``$BOLDC_CACHE_DIR``, else the user's cache
      directory + ``/boldc``).

    ``train=True`` is not available yet (the training work builds it on this backend).
    """
    if train:
        raise BoldcError("training is not available yet in the C backend (compile with train=False)")
    from boldc.backend.build import build_extension, c_flags
    from boldc.backend.emit import Options, generate
    from boldc.backend.model import CompiledModel
    from boldc.ir.verifier import verify

    if not isinstance(module, Module):
        raise BoldcError(f"compile() needs a boldc Module, got {type(module).__name__}")
    verify(module)
    missing = [p.name for p in module.params.values() if p.data is None]
    if missing:
        raise BoldcError(f"params without tensors: @{', @'.join(missing[:5])} (load the module with its weights)")
    functions = ("forward",) if functions is None else tuple(functions)
    for f in functions:
        module.function(f)  # a clear error if there is none
    program = generate(module, Options(name=name, max_batch=max_batch, max_threads=threads, trace=trace,
                                       functions=functions))
    flags = c_flags(isa, popcount, openmp=threads > 1)
    ext = build_extension(name, program.model_c, program.model_h, program.cdef, flags, cache_dir)
    return CompiledModel(program, ext, module, flags)
