"""Building functions in memory, with result types inferred from the registry.

    m = Module()
    w = m.add_param("fc.w", tensor("b1", 10, 64), bits)
    fb = FunctionBuilder(m, "forward", [("x", tensor("b1", "N", 64))])
    s = fb.op("blinear", [fb.args[0], w], {"logic": "xnor"}, name="s")
    fb.ret(fb.op("threshold", [s]))

``boldc.ir.rewriter.Rewriter`` edits an existing function the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from boldc.ir.catalog import TypeCheck
from boldc.ir.core import Function, Module, Op, Value
from boldc.ir.types import TensorType
from boldc.ir.verifier import check_op


def unique_name(base: str, used: set[str], sep: str = ".", first: int = 1) -> str:
    """``base`` if unused, else the first unused of base+sep+first, base+sep+(first+1), ...;
    the name returned is added to ``used``."""
    name, k = base, first
    while name in used:
        name = f"{base}{sep}{k}"
        k += 1
    used.add(name)
    return name


def typed_op(name: str, operands: list[Value], attrs: dict[str, Any] | None,
             hint: str | list[str | None] | None, naming: Callable[[str | None], str]) -> Op:
    """A new op whose results have the types its definition infers (a TypeCheck naming the
    op if the operands do not fit) and the names ``naming(hint)`` gives: ``hint`` is one
    name per result, or one base name (``base.0``, ``base.1``, ... for several results)."""
    op = Op(name, operands, [], attrs or {})
    try:
        types = check_op(op)
    except TypeCheck as exc:
        raise TypeCheck(f"op '{name}': {exc}") from None
    if isinstance(hint, list):
        hints = hint
    elif len(types) == 1:
        hints = [hint]
    else:
        hints = [f"{hint}.{i}" if hint else None for i in range(len(types))]
    op.results = [Value(naming(h), t) for h, t in zip(hints, types, strict=True)]
    return op


class FunctionBuilder:
    def __init__(self, module: Module, name: str, args: list[tuple[str, TensorType]]):
        self.module = module
        self.fn = Function(name, [])
        self._names: set[str] = set()
        for arg_name, t in args:
            self.fn.args.append(Value(self.fresh(arg_name), t))

    @property
    def args(self) -> list[Value]:
        return self.fn.args

    def fresh(self, hint: str | None = None) -> str:
        """A value name not yet used in this function (``hint``, ``hint.1``, ... or a number)."""
        return unique_name(hint if hint else str(len(self._names)), self._names)

    def op(self, op_name: str, operands: list[Value], attrs: dict[str, Any] | None = None,
           name: str | list[str] | None = None) -> Any:
        """Append an op; returns its result Value (or the list, if it has several).
        Raises TypeCheck (with the op named) if the operands do not type-check."""
        op = typed_op(op_name, operands, attrs, name, self.fresh)
        self.fn.ops.append(op)
        return op.results[0] if len(op.results) == 1 else op.results

    def ret(self, *values: Value) -> Function:
        """Finish the function: set its returns and add it to the module."""
        self.fn.returns = list(values)
        self.fn.result_types = [v.type for v in values]
        self.module.add_function(self.fn)
        return self.fn
