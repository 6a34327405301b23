"""The op registry: one definition per op (docs/architecture.md).

An op is a subclass of ``OpDef`` decorated with ``@register``. It declares

- ``name``, ``operands`` (names; ``"bias?"`` is optional, ``"inputs*"`` variadic;
  optional and variadic operands come last), ``attrs`` (``Attr`` specs with kinds
  and defaults) and ``traits`` (``boldc.ops.traits`` objects whose contracts the
  passes rely on);
- ``infer(types, attrs)``: result types from operand types, raising ``TypeCheck``;
- ``evaluate(args, attrs)``: the numpy reference semantics (the interpreter calls it);
- ``backward(ctx, op, dys)``: its backward rule, emitting IR ops (autodiff calls it), or
  the explicit marker ``NotDifferentiable("why")``;
- ``cost(ctx)``: its cost as data (``boldc.ir.works``), which the energy model prices.

There are no defaults: ``register`` refuses an op that declares neither a hook nor a
marker, naming the op and the hook. How an op runs on a backend is the backend's own
(the C backend registers an emitter per op in ``boldc.backend.emitters``).

The generic machinery (parser, verifier, interpreter, passes, backends) looks ops up
here and never branches on op names.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from boldc.ir.catalog import TypeCheck
from boldc.ir.types import TensorType
from boldc.ops.traits import Trait

REQUIRED = object()  # sentinel default: the attribute must be given


# --- hook markers ----------------------------------------------------------------------


@dataclass(frozen=True)
class Marker:
    """An explicit statement that a hook has no implementation, and why."""

    reason: str

    def __bool__(self) -> bool:  # markers are falsy: ``if opdef.backward:`` reads well
        return False


class NotDifferentiable(Marker):
    """The op has no backward rule by nature (casts to b1, argmax, optimizer updates, ...)."""


HOOKS = ("backward", "cost")  # what every op declares: an implementation or a Marker


# --- attributes ------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return _is_int(v) or isinstance(v, float)


_KIND_CHECKS: dict[str, Callable[[Any], bool]] = {
    "int": _is_int,
    "float": _is_number,  # an int literal is accepted where a float is expected
    "number": _is_number,
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "ints": lambda v: isinstance(v, list) and all(_is_int(x) for x in v),
    "floats": lambda v: isinstance(v, list) and all(_is_number(x) for x in v),
    # a shape: ints (-1 = inferred) and symbols such as "N"
    "shape": lambda v: isinstance(v, list) and all(_is_int(x) or isinstance(x, str) for x in v),
    "dict": lambda v: isinstance(v, dict),
    "any": lambda v: True,
}


@dataclass(frozen=True)
class Attr:
    name: str
    kind: str
    default: Any = REQUIRED
    choices: tuple | None = None
    length: int | None = None  # required list length for list kinds
    doc: str = ""

    def check(self, value: Any) -> None:
        if not _KIND_CHECKS[self.kind](value):
            raise TypeCheck(f"attribute '{self.name}' must be of kind {self.kind}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            opts = " | ".join(repr(c) for c in self.choices)
            raise TypeCheck(f"attribute '{self.name}' = {value!r} is not one of {opts}")
        if self.length is not None and len(value) != self.length:
            raise TypeCheck(f"attribute '{self.name}' needs {self.length} entries, got {len(value)}")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def same_value(a: Any, b: Any) -> bool:
    """Equality that also compares types (0 and 0.0 and False differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def is_annotation(attr_name: str) -> bool:
    """Attributes with a dot in the name are pass annotations, not declared ones."""
    return "." in attr_name


# --- op definitions --------------------------------------------------------------------


class OpDef:
    """Base class of op definitions. Subclasses set the class attributes below."""

    name: ClassVar[str]
    operands: ClassVar[tuple[str, ...]] = ()
    attrs: ClassVar[tuple[Attr, ...]] = ()
    traits: ClassVar[tuple[Trait, ...]] = ()

    # -- training (docs/training.md) ---------------------------------------------
    # Operands that never receive a gradient (labels, thresholds, BN statistics):
    # autodiff neither asks the backward hook for them nor trains params found there.
    nondiff_operands: ClassVar[tuple[str, ...]] = ()
    # Operands (params) this op overwrites: ``evaluate`` returns its results first, then
    # their new values in this order, and the interpreter commits them when the function
    # returns. Such ops carry the trait SideEffect.
    updates: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def updated_positions(cls, count: int) -> list[int]:
        """Positions of the updated operands among ``count`` operands."""
        return [i for i, n in enumerate(cls.operand_names(count)) if n in cls.updates]

    @classmethod
    def nondiff_positions(cls, count: int) -> set[int]:
        """Positions of the operands that never receive a gradient."""
        return {i for i, n in enumerate(cls.operand_names(count)) if n.split("[")[0] in cls.nondiff_operands}

    def fan_in(self, op, fan_in_of: Callable) -> int | None:
        """The fan-in m (docs/method.md §3) of the pre-activation this op produces, or None if it
        has none. ``fan_in_of(value)`` asks the producer of an operand (for ops that pass
        a pre-activation through, such as pooling)."""
        return None

    # -- traits -------------------------------------------------------------------
    @classmethod
    def trait(cls, kind: type[Trait]) -> Trait | None:
        """The op's trait of class ``kind`` (with its fields), or None."""
        return next((t for t in cls.traits if isinstance(t, kind)), None)

    @classmethod
    def has(cls, kind: type[Trait]) -> bool:
        return cls.trait(kind) is not None

    # -- operand arity ------------------------------------------------------------
    @classmethod
    def arity(cls) -> tuple[int, int | None]:
        """(minimum, maximum or None for variadic) operand count."""
        required = sum(1 for o in cls.operands if not o.endswith(("?", "*")))
        if any(o.endswith("*") for o in cls.operands):
            return required, None
        return required, len(cls.operands)

    @classmethod
    def operand_names(cls, count: int) -> list[str]:
        """Names of the first ``count`` operands (variadic ones numbered)."""
        names: list[str] = []
        for o in cls.operands:
            if o.endswith("*"):
                base = o[:-1]
                names.extend(f"{base}[{i}]" for i in range(count - len(names)))
                break
            names.append(o.rstrip("?"))
        return names[:count]

    # -- attributes ---------------------------------------------------------------
    @classmethod
    def attr_spec(cls, name: str) -> Attr | None:
        for a in cls.attrs:
            if a.name == name:
                return a
        return None

    @classmethod
    def normalize_attrs(cls, attrs: dict[str, Any]) -> dict[str, Any]:
        """Check attributes and return them complete: declared ones in declared order
        (defaults filled in), then annotations in their given order."""
        for key in attrs:
            if not is_annotation(key) and cls.attr_spec(key) is None:
                known = ", ".join(a.name for a in cls.attrs) or "none"
                raise TypeCheck(f"unknown attribute '{key}' (attributes of {cls.name}: {known})")
        out: dict[str, Any] = {}
        for spec in cls.attrs:
            if spec.name in attrs:
                value = attrs[spec.name]
                if spec.kind == "float" and _is_int(value):
                    value = float(value)
                spec.check(value)
                out[spec.name] = value
            elif spec.required:
                raise TypeCheck(f"missing required attribute '{spec.name}'")
            else:
                out[spec.name] = spec.default
        for key, value in attrs.items():
            if is_annotation(key):
                out[key] = value
        cls.check_attrs(out)
        return out

    @classmethod
    def check_attrs(cls, attrs: dict[str, Any]) -> None:
        """Cross-attribute checks (override where needed); raise TypeCheck."""

    @classmethod
    def printed_attrs(cls, attrs: dict[str, Any]) -> dict[str, Any]:
        """Attributes as printed: declared ones that differ from their default, in
        declared order, then annotations."""
        out = {}
        for spec in cls.attrs:
            if spec.name in attrs and (spec.required or not same_value(attrs[spec.name], spec.default)):
                out[spec.name] = attrs[spec.name]
        for key, value in attrs.items():
            if is_annotation(key):
                out[key] = value
        return out

    # -- semantics ----------------------------------------------------------------
    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        raise NotImplementedError

    def evaluate(self, args: list[np.ndarray], attrs: dict[str, Any]) -> list[np.ndarray]:
        raise NotImplementedError

    @classmethod
    def doc(cls) -> str:
        return (cls.__doc__ or "").strip()


REGISTRY: dict[str, OpDef] = {}


def register(cls: type[OpDef]) -> type[OpDef]:
    """Class decorator: check an op definition and add it to the registry (names are
    unique). A definition that misses a required part is a TypeError naming it."""
    name = getattr(cls, "name", None)
    if not name:
        raise TypeError(f"{cls.__name__} has no op name")
    if name in REGISTRY:
        raise TypeError(f"op '{name}' is defined twice")
    seen_optional = False
    for i, o in enumerate(cls.operands):
        if o.endswith("*") and i != len(cls.operands) - 1:
            raise TypeError(f"op '{name}': variadic operand must be last")
        if o.endswith(("?", "*")):
            seen_optional = True
        elif seen_optional:
            raise TypeError(f"op '{name}': required operand after an optional one")
    for method in ("infer", "evaluate"):
        if getattr(cls, method) is getattr(OpDef, method):
            raise TypeError(f"op '{name}' defines no {method}()")
    if not (cls.__doc__ or "").strip():
        raise TypeError(f"op '{name}' has no docstring giving its meaning")
    for hook in HOOKS:
        value = getattr(cls, hook, None)
        if not (isinstance(value, Marker) or callable(value)):
            raise TypeError(f"op '{name}' declares no {hook} hook: implement it, or set it to a marker saying why "
                            f"there is none (e.g. {hook} = NotDifferentiable(\"...\"))")
    kinds = set()
    for t in cls.traits:
        if not isinstance(t, Trait):
            raise TypeError(f"op '{name}': trait {t!r} is not a boldc.ops.traits.Trait")
        if type(t) in kinds:
            raise TypeError(f"op '{name}' declares the trait {type(t).__name__} twice")
        kinds.add(type(t))
        t.check(cls)
    REGISTRY[name] = cls()
    return cls


def lookup(name: str) -> OpDef | None:
    _load_families()
    return REGISTRY.get(name)


def all_ops() -> dict[str, OpDef]:
    _load_families()
    return dict(REGISTRY)


def with_trait(kind: type[Trait]) -> list[OpDef]:
    """Op definitions that declare a trait of class ``kind``."""
    return [d for d in all_ops().values() if d.has(kind)]


def the_op_with(kind: type[Trait]) -> OpDef:
    """The one op that declares ``kind`` (traits such as Binarize are held by exactly one)."""
    ops = with_trait(kind)
    if len(ops) != 1:
        raise AssertionError(f"expected one op with the trait {kind.__name__}, found {[d.name for d in ops]}")
    return ops[0]


def _load_families() -> None:
    # Importing the package registers every family module.
    import boldc.ops  # noqa: F401
