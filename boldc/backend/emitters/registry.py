"""The C backend's implementation of every op: an emitter per op name, or the reason
there is none.

An emitter is ``emit(cop: COp) -> CKernel`` (boldc/backend/ckernel.py): given the op with
its operands' and results' storage layouts, it returns the C body of the op's function.
It is registered with ``@emits("op_name", ...)``. An op the backend does not emit as it
is (a pass must rewrite it first) is declared with ``not_emitted(name, MustLower(...))``.
``tests/test_backend_emitters.py`` checks that every op of the registry has one or the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

EMITTERS: dict[str, Callable] = {}


@dataclass(frozen=True)
class MustLower:
    """The op is not emitted as is: a pass must rewrite it first (``reason`` says which)."""

    reason: str


@dataclass(frozen=True)
class NoEmitter:
    """The backend has no implementation of the op (``reason`` says why)."""

    reason: str


NOT_EMITTED: dict[str, MustLower | NoEmitter] = {}


def emits(*names: str) -> Callable[[Callable], Callable]:
    """Decorator: the function emits C for the ops ``names``."""

    def register(fn: Callable) -> Callable:
        for name in names:
            if name in EMITTERS or name in NOT_EMITTED:
                raise TypeError(f"the C backend declares op '{name}' twice")
            EMITTERS[name] = fn
        return fn

    return register


def not_emitted(name: str, why: MustLower | NoEmitter) -> None:
    if name in EMITTERS or name in NOT_EMITTED:
        raise TypeError(f"the C backend declares op '{name}' twice")
    NOT_EMITTED[name] = why


def emitter(name: str) -> Callable | MustLower | NoEmitter:
    """The emitter of op ``name``, or the reason there is none."""
    if name in EMITTERS:
        return EMITTERS[name]
    return NOT_EMITTED.get(name, NoEmitter("the C backend does not implement it"))
