"""Hand-written C shared by all generated code (installed as ``boldc.runtime``).

The files here are package data: the backend reads them with
``importlib.resources.files("boldc.runtime")`` and copies them next to the generated
model (cffi build and standalone export). See docs/backend.md.
"""
