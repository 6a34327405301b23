"""Jinja skeletons of the generated files (installed as ``boldc.templates``): the module's
.c and .h, the example programs (inference and training), their input reader, the
Makefile and the folder's README. The op kernels come from boldc/backend/emitters/.
See docs/backend.md."""
