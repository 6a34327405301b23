"""The in-memory IR: values, parameters, ops, functions and the module.

A function is a list of ops in SSA form. Every op result is a ``Value`` defined
once; operands are values defined earlier in the same function, function
arguments, or module-level ``Param`` s. Params carry their tensor (numpy array, or
None for a structure-only module) and live in the module, shared by all functions.

This file knows no particular op: op names are strings looked up in the registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from boldc.ir.types import TensorType


@dataclass(frozen=True)
class Loc:
    """Source location of an op or declaration (1-based line and column)."""

    filename: str | None
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.filename or '<string>'}:{self.line}:{self.col}"


class Value:
    """An SSA value (``%name``): a function argument or an op result."""

    __slots__ = ("name", "type", "loc")
    sigil = "%"

    def __init__(self, name: str, type: TensorType, loc: Loc | None = None):
        self.name = name
        self.type = type
        self.loc = loc

    @property
    def ref(self) -> str:
        return self.sigil + self.name

    def __repr__(self) -> str:
        return f"{self.ref}: {self.type}"


class Param(Value):
    """A module-level parameter (``@name``) with its tensor and free attributes.

    ``data`` has the numpy dtype of the element type (bool for b1) and the static
    shape of ``type``; it is None when the module was read without weights.
    """

    __slots__ = ("data", "attrs")
    sigil = "@"

    def __init__(self, name: str, type: TensorType, data: np.ndarray | None = None,
                 attrs: dict[str, Any] | None = None, loc: Loc | None = None):
        super().__init__(name, type, loc)
        self.attrs = dict(attrs or {})
        self.data = None
        if data is not None:
            self.set_data(data)

    def set_data(self, data: np.ndarray) -> None:
        """Attach a tensor, converted to the param's dtype (shape must match)."""
        arr = np.asarray(data)
        want = self.type.dtype.numpy
        if self.type.dtype.is_bool and arr.dtype != np.bool_:
            raise ValueError(f"param @{self.name}: b1 data must be a bool array, got {arr.dtype}")
        if arr.shape != tuple(self.type.shape):
            raise ValueError(f"param @{self.name}: data shape {arr.shape} != declared {self.type}")
        self.data = np.ascontiguousarray(arr, dtype=want).reshape(arr.shape)  # keeps 0-d scalars 0-d


class Op:
    """One operation: ``results = name(operands) {attrs}``.

    ``name`` is the op name from the registry (``"blinear"``), ``attrs`` a dict of
    attribute values (ints, floats, strings, bools, lists and dicts of them).
    Attributes whose name contains a dot (``energy.total_pj``) are annotations
    written by passes; they are not declared by the op and are printed after the
    declared ones.
    """

    __slots__ = ("name", "operands", "results", "attrs", "loc")

    def __init__(self, name: str, operands: list[Value], results: list[Value],
                 attrs: dict[str, Any] | None = None, loc: Loc | None = None):
        self.name = name
        self.operands = list(operands)
        self.results = list(results)
        self.attrs = dict(attrs or {})
        self.loc = loc

    @property
    def result_types(self) -> list[TensorType]:
        return [r.type for r in self.results]

    @property
    def result(self) -> Value:
        """The single result (error if the op has several or none)."""
        if len(self.results) != 1:
            raise ValueError(f"op {self.name} has {len(self.results)} results")
        return self.results[0]

    def describe(self) -> str:
        """``'blinear' (%a1)`` — how messages name an op."""
        res = ", ".join(r.ref for r in self.results)
        return f"'{self.name}'" + (f" ({res})" if res else "")

    def __repr__(self) -> str:
        from boldc.ir.printer import format_op

        return format_op(self)


@dataclass
class Function:
    name: str
    args: list[Value]
    ops: list[Op] = field(default_factory=list)
    returns: list[Value] = field(default_factory=list)
    loc: Loc | None = None
    # Locations of the ``return`` statement and of the declared result types.
    return_loc: Loc | None = None
    result_types: list[TensorType] | None = None

    def declared_result_types(self) -> list[TensorType]:
        """Result types as declared in the signature, else those of the returns."""
        if self.result_types is not None:
            return list(self.result_types)
        return [v.type for v in self.returns]

    def values(self) -> Iterator[Value]:
        yield from self.args
        for op in self.ops:
            yield from op.results

    # -- use-def ---------------------------------------------------------------------
    def producer(self, value: Value) -> Op | None:
        """The op whose result ``value`` is (None for arguments and params)."""
        return next((op for op in self.ops if any(r is value for r in op.results)), None)

    def users(self, value: Value) -> list[Op]:
        """The ops that read ``value``, in order (an op reading it twice is listed once)."""
        return [op for op in self.ops if any(o is value for o in op.operands)]

    def replace_all_uses(self, old: Value, new: Value) -> int:
        """Every operand and return that is ``old`` becomes ``new``; returns how many."""
        count = 0
        for op in self.ops:
            for i, o in enumerate(op.operands):
                if o is old:
                    op.operands[i] = new
                    count += 1
        for i, v in enumerate(self.returns):
            if v is old:
                self.returns[i] = new
                count += 1
        return count


class Module:
    """A set of parameters and functions (``forward``, later ``train_step``).

    ``attrs`` holds free module-level metadata (printed after the header).
    """

    def __init__(self) -> None:
        self.params: dict[str, Param] = {}
        self.functions: dict[str, Function] = {}
        self.attrs: dict[str, Any] = {}

    # -- parameters ------------------------------------------------------------------
    def add_param(self, name: str, type: TensorType, data: np.ndarray | None = None,
                  attrs: dict[str, Any] | None = None) -> Param:
        if name in self.params:
            raise ValueError(f"param @{name} already exists")
        p = Param(name, type, data, attrs)
        self.params[name] = p
        return p

    def param(self, name: str) -> Param:
        try:
            return self.params[name.lstrip("@")]
        except KeyError:
            raise KeyError(f"no param @{name.lstrip('@')}") from None

    # -- functions -------------------------------------------------------------------
    def add_function(self, fn: Function) -> Function:
        if fn.name in self.functions:
            raise ValueError(f"function @{fn.name} already exists")
        self.functions[fn.name] = fn
        return fn

    def function(self, name: str = "forward") -> Function:
        try:
            return self.functions[name]
        except KeyError:
            have = ", ".join("@" + f for f in self.functions) or "none"
            from boldc.errors import BoldcError

            raise BoldcError(f"module has no function @{name} (it has: {have})") from None

    def ops(self, func: str = "forward") -> list[Op]:
        """The ops of a function, in order."""
        return list(self.function(func).ops)

    @property
    def has_weights(self) -> bool:
        return all(p.data is not None for p in self.params.values())

    def num_params(self) -> dict[str, int]:
        """Element count per dtype over all params (static shapes)."""
        counts: dict[str, int] = {}
        for p in self.params.values():
            counts[p.type.dtype.value] = counts.get(p.type.dtype.value, 0) + p.type.numel()
        return counts

    def copy(self) -> Module:
        """A deep copy: new values, ops and params, the params' arrays copied too."""
        from boldc.ir.clone import clone_module

        return clone_module(self)

    def __str__(self) -> str:
        from boldc.ir.printer import dumps

        return dumps(self)
