"""The C backend: Module -> C99 -> cffi extension / standalone folder (docs/backend.md).

``api.compile`` (exported as ``boldc.compile``) and ``export.export`` are the entry
points; ``ckernel`` and ``kernels`` are what the ops' ``emit_c`` hooks use. This
package imports nothing heavy: jinja2 and cffi are imported when code is generated
or built.
"""
