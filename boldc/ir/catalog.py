"""Where the IR finds op definitions.

The IR knows no particular op: the parser, the printer and the verifier ask this catalog
for the definition of an op name. ``boldc.ops`` installs its registry here when it is
imported (``import boldc`` does it), so the IR never imports the layer above it.

What the IR asks of a definition (``boldc.ops.registry.OpDef`` provides it): ``arity()``,
``operands``, ``normalize_attrs(attrs)``, ``printed_attrs(attrs)``,
``infer(types, attrs)`` and ``updated_positions(count)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class TypeCheck(Exception):
    """Raised by an op's type inference or attribute checks; the verifier adds location and op."""


_lookup: Callable[[str], Any] | None = None


def install(lookup: Callable[[str], Any]) -> None:
    """Make ``lookup(name) -> definition or None`` the IR's source of op definitions."""
    global _lookup
    _lookup = lookup


def op_definition(name: str) -> Any:
    """The definition of the op ``name``, or None if there is no such op."""
    if _lookup is None:
        raise RuntimeError("no op registry installed: import boldc (or boldc.ops) first")
    return _lookup(name)
