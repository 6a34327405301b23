"""Jinja templates of the generated C (installed as ``boldc.templates``): one per op
family, plus the module, header, example main and Makefile. See docs/backend.md."""
