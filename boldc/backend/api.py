"""``boldc.compile``: Module -> C -> cffi extension -> ``CompiledModel``."""

from __future__ import annotations

import os

from boldc.errors import BoldcError
from boldc.ir.core import Module


def compile(module: Module, train: bool = False, *, max_batch: int | None = None, isa: str = "native",
            popcount: str = "builtin", threads: int | None = None, trace: bool = False, name: str = "model",
            functions=None, cache_dir: str | os.PathLike | None = None, fuse: bool = True, dims=None,
            **training):
    """Compile functions of ``module`` to C, build them with cffi and load them.

    - ``max_batch``: the arena is planned for this batch (default 32, or 64 with
      ``train``; 1..65536, and the arena at most 4 GiB); ``infer`` splits larger ones,
      a training step takes at most this many.
    - ``isa``: the kernels (``CompiledModel.simd`` says which were built): "native" (the
      best this machine has: AVX-512 VPOPCNTDQ, with the AMX tiles for the integer-signal
      GEMMs where the CPU has them, else AVX2 + FMA + POPCNT, else NEON on aarch64, else
      portable), "avx512", "amx", "avx2", "neon" (each refused with a one-line
      error where this compiler or CPU cannot build or run it: export the C folder to
      build for another machine), or "portable" (plain C, any target).
    - ``popcount``: "builtin" (the compiler's) or "portable" (bit-twiddling C).
    - ``threads``: the threads the kernels use (1..1024; default: the cores this process
      may run on, like onnxruntime); > 1 builds with OpenMP. It is also the most a call
      may use: ``CompiledModel.set_threads`` lowers (or raises again) the number per call.
    - ``trace``: give every intermediate its own arena bytes so that
      ``CompiledModel.trace`` returns every value (tests compare them with the
      interpreter).
    - ``name``: C prefix of the generated symbols (a C identifier; not ``bd``, ``bd_*``
      or ``boldc_rt``, which the runtime owns).
    - ``functions``: names of the functions to compile (default: @forward only, or
      @forward and @train_step with ``train``).
    - ``cache_dir``: build cache (default ``$BOLDC_CACHE_DIR``, else the user's cache
      directory + ``/boldc``).
    - ``fuse``: fuse each layer with the elementwise ops after it first (the pass
      fuse-epilogues, on a copy; docs/backend.md, "Fused ops"): the same values, with the
      intermediates of a chain kept out of the arena. Not with ``trace``, which keeps every
      value of the module as it is.
    - ``dims``: sizes of symbolic dimensions bound at compile time, e.g. ``{"L": 64}``
      (the pass bind-dims, on a copy). The C code keeps at most the batch ``N`` as a
      run-time size; a compiled function that keeps another symbol is refused with a
      one-line error naming it. ``{"N": 32}`` fixes the batch too. Inputs of another
      size are refused at run time, as any input of the wrong shape.

    ``train=True`` compiles a training step too (docs/training.md): when the module has
    no @train_step, one is built on a copy by autodiff and insert-optimizer with the
    keyword options of ``boldc.backend.training.TrainOptions`` (``eta``, ``lr``,
    ``freeze_float``, ``frozen``, ``schedule``, ``total_steps``, ``eta_final``,
    ``loss``, ``reduction``, ``threshold_grad``, ``alpha``, ``rescale``; ``seed``
    shuffles ``fit``). The model then has ``train_step``, ``fit``, ``evaluate`` and
    the checkpoints of the C runtime.
    """
    from boldc.backend.build import build_extension, c_flags, check_isa
    from boldc.backend.emit import Options, generate
    from boldc.backend.model import CompiledModel
    from boldc.backend.training import DEFAULT_BATCH, TrainOptions, training_module
    from boldc.ir.verifier import verify
    from boldc.passes.bind_dims import bound_copy

    if not isinstance(module, Module):
        raise BoldcError(f"compile() needs a boldc Module, got {type(module).__name__}")
    if training and not train:
        raise BoldcError(f"training option(s) {', '.join(sorted(training))} need train=True")
    verify(module)
    check_isa(isa)
    module = bound_copy(module, dims)
    missing = [p.name for p in module.params.values() if p.data is None]
    if missing:
        raise BoldcError(f"params without tensors: @{', @'.join(missing[:5])} (load the module with its weights)")
    options = TrainOptions.from_kwargs(training)
    if train:
        module = training_module(module, options)
        functions = ("forward", "train_step") if functions is None else tuple(functions)
        max_batch = DEFAULT_BATCH if max_batch is None else max_batch
    functions = ("forward",) if functions is None else tuple(functions)
    max_batch = 32 if max_batch is None else max_batch
    for f in functions:
        module.function(f)  # a clear error if there is none
    if fuse and not trace:
        from boldc.passes.fuse_epilogues import FuseEpilogues

        module = module.copy()
        FuseEpilogues(functions=list(functions)).run(module)
    threads = default_threads() if threads is None else threads
    program = generate(module, Options(name=name, max_batch=max_batch, max_threads=threads, trace=trace,
                                       functions=functions))
    flags = c_flags(isa, popcount, openmp=threads > 1)
    ext = build_extension(name, program.model_c, program.model_h, program.cdef, flags, cache_dir)
    return CompiledModel(program, ext, module, flags, options)


def default_threads() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count), at
    most the compile-time limit of threads."""
    from boldc.backend.emit import MAX_THREADS_LIMIT

    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity call on this OS
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_THREADS_LIMIT))
