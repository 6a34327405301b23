"""The C backend: Module -> C99 -> cffi extension / standalone folder (docs/backend.md).

``api.compile`` (exported as ``boldc.compile``) and ``export.export`` are the entry
points; ``emitters`` holds the implementation of every op (``ckernel``, ``cexpr``,
``cblock``, ``kernels``, ``pool_kernels``, ``grad_kernels`` and ``signal_kernels`` are
what the emitters use). This package imports nothing heavy: jinja2 and cffi are imported when code is
generated or built.
"""
