"""User-facing errors.

Every error a user can cause (bad file, bad IR, bad input array, bad option) is a
``BoldcError``. The CLI prints ``str(error)`` on one line and exits with code 2;
anything else that escapes is a bug in boldc and keeps its traceback.
"""

from __future__ import annotations


class BoldcError(Exception):
    """Base class of user errors. ``str()`` is a single line."""

    def __str__(self) -> str:  # one line, whatever the message contained
        return " ".join(super().__str__().split())


class ParseError(BoldcError):
    """The IR text is not well-formed (file:line:col in the message)."""


class VerifyError(BoldcError):
    """The IR is well-formed but ill-typed or refers to unknown things."""


class InterpretError(BoldcError):
    """Inputs given to the interpreter do not match the function."""


class ArtefactError(BoldcError):
    """A file on disk is missing, truncated or corrupt."""


def where(filename: str | None, line: int | None, col: int | None) -> str:
    """``file:line:col`` prefix for messages (parts that are unknown are omitted)."""
    name = filename or "<string>"
    if line is None:
        return name
    return f"{name}:{line}:{col or 1}"
