"""The data folders boldc reads at run time: ``runtime/`` (the hand-written C) and
``templates/`` (the Jinja skeletons of generated files).

Installed (a wheel, ``pip install .``, or editable), they are the packages
``boldc.runtime`` and ``boldc.templates`` (pyproject.toml maps them in). Run from a
checkout, they are the folders at its top level, next to ``boldc/``: a script at the
checkout's root imports the checkout's ``boldc`` (the current directory comes first on
``sys.path``), in which ``boldc.runtime`` does not exist.
"""

from __future__ import annotations

import importlib.resources
from importlib.resources.abc import Traversable
from pathlib import Path

FOLDERS = ("runtime", "templates")


def folder(name: str) -> Traversable:
    """The ``runtime`` or ``templates`` folder, installed or in the checkout."""
    if name not in FOLDERS:
        raise ValueError(f"unknown data folder {name!r}")
    try:
        return importlib.resources.files(f"boldc.{name}")
    except ModuleNotFoundError:
        checkout = Path(__file__).resolve().parent.parent / name
        if (checkout / "__init__.py").is_file():
            return checkout
        raise


def read_text(name: str, file: str) -> str:
    """The text of ``file`` in the data folder ``name``."""
    return folder(name).joinpath(file).read_text(encoding="utf-8")
