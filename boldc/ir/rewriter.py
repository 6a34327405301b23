"""Rewriting a function in place: the machinery the passes share.

A ``Rewriter`` edits one function's op list and keeps its use-def (which op produces a
value, which ops read it) up to date through every edit, so a pass asks
``rw.users(v)`` instead of rebuilding maps. New ops get their result types from the op
registry (a wrong operand is a ``TypeCheck``) and names unique in the function.

    rw = Rewriter(fn)
    bits = rw.op("threshold", [x], before=layer)           # insert, typed and named
    rw.replace_op(layer, "bconv2d", [bits, w], attrs)       # same place, names and uses
    rw.replace_with(norm, [norm.operands[0]])               # its uses now read its input
    rw.erase(dead)                                          # an op nobody reads
"""

from __future__ import annotations

from typing import Any

from boldc.ir.builder import typed_op, unique_name
from boldc.ir.core import Function, Op, Value


class Rewriter:
    def __init__(self, fn: Function):
        self.fn = fn
        self.names = {v.name for v in fn.values()}
        self._producer: dict[Value, Op] = {}
        self._users: dict[Value, dict[Op, None]] = {}  # an ordered set of readers
        for op in fn.ops:
            self._index(op)

    # -- use-def -----------------------------------------------------------------------
    def _index(self, op: Op) -> None:
        for r in op.results:
            self._producer[r] = op
        for o in op.operands:
            self._users.setdefault(o, {})[op] = None

    def _unindex(self, op: Op) -> None:
        for r in op.results:
            self._producer.pop(r, None)
        for o in op.operands:
            self._users.get(o, {}).pop(op, None)

    def producer(self, value: Value) -> Op | None:
        """The op whose result ``value`` is (None for arguments and params)."""
        return self._producer.get(value)

    def users(self, value: Value) -> list[Op]:
        """The ops that read ``value`` (each once)."""
        return list(self._users.get(value, ()))

    def is_used(self, value: Value) -> bool:
        """Read by an op or returned by the function."""
        return bool(self._users.get(value)) or any(v is value for v in self.fn.returns)

    # -- creating ops ------------------------------------------------------------------
    def create(self, name: str, operands: list[Value], attrs: dict[str, Any] | None = None,
               hint: str | list[str | None] | None = None) -> Op:
        """A new op with inferred result types and unique result names; not yet placed."""
        return typed_op(name, operands, attrs, hint, lambda h: unique_name(h or name, self.names))

    def insert(self, op: Op, before: Op | None = None) -> Op:
        """Place ``op`` before ``before`` (at the end when None)."""
        at = len(self.fn.ops) if before is None else self.fn.ops.index(before)
        self.fn.ops.insert(at, op)
        self._index(op)
        return op

    def op(self, name: str, operands: list[Value], attrs: dict[str, Any] | None = None,
           hint: str | list[str | None] | None = None, before: Op | None = None) -> Any:
        """Create and insert an op; returns its result (or the list of its results)."""
        op = self.insert(self.create(name, operands, attrs, hint), before)
        return op.results[0] if len(op.results) == 1 else op.results

    # -- changing ops ------------------------------------------------------------------
    def set_operands(self, op: Op, operands: list[Value]) -> None:
        self._unindex(op)
        op.operands = list(operands)
        self._index(op)

    def replace_all_uses(self, old: Value, new: Value, where=None) -> None:
        """Every read of ``old`` (by the ops ``where(op)`` accepts, default all, and the
        function's returns when ``where`` is None) reads ``new``."""
        for user in self.users(old):
            if where is None or where(user):
                self.set_operands(user, [new if o is old else o for o in user.operands])
        if where is None:
            self.fn.returns = [new if v is old else v for v in self.fn.returns]

    def replace_with(self, op: Op, values: list[Value]) -> None:
        """The uses of ``op``'s results read ``values`` instead; ``op`` is erased."""
        for r, v in zip(op.results, values, strict=True):
            self.replace_all_uses(r, v)
        self.erase(op)

    def replace_op(self, op: Op, name: str, operands: list[Value], attrs: dict[str, Any] | None = None) -> Any:
        """``op`` becomes the op ``name`` on ``operands``, at the same place: its results keep
        the names and the uses of the old ones (their types are inferred anew). Returns the
        new result (or the list of them)."""
        old = op.results
        new = typed_op(name, operands, attrs, [r.name for r in old], lambda h: h)
        if len(new.results) != len(old):
            raise AssertionError(f"op '{name}' has {len(new.results)} results, the op it replaces {len(old)}")
        self.insert(new, before=op)
        for r, v in zip(old, new.results):
            self.replace_all_uses(r, v)
        self.erase(op)
        return new.results[0] if len(new.results) == 1 else new.results

    def replace_ops(self, ops: list[Op], name: str, operands: list[Value], attrs: dict[str, Any] | None,
                    outputs: list[Value]) -> Op:
        """One new op ``name`` on ``operands`` in place of ``ops`` (in program order): it goes
        where the last of them was, its results take the names and the outside uses of
        ``outputs`` (values of ``ops``), and ``ops`` are erased."""
        new = typed_op(name, operands, attrs, [v.name for v in outputs], lambda h: h)
        self.insert(new, before=ops[-1])
        inside = set(ops)
        for old, v in zip(outputs, new.results, strict=True):
            self.replace_all_uses(old, v, where=lambda user: user not in inside)
            self.fn.returns = [v if r is old else r for r in self.fn.returns]
        for op in reversed(ops):
            self.erase(op)
        return new

    def erase(self, op: Op) -> None:
        """Remove ``op``; none of its results may still be used."""
        used = [r for r in op.results if self.is_used(r)]
        if used:
            raise AssertionError(f"cannot erase {op.describe()}: {used[0].ref} is still used")
        self._unindex(op)
        self.fn.ops.remove(op)

    def reorder(self, ops: list[Op]) -> bool:
        """Put the function's ops in the order ``ops`` (a permutation of them); returns
        whether the order changed. The caller keeps every value defined before its uses."""
        if len(ops) != len(self.fn.ops) or set(ops) != set(self.fn.ops):
            raise AssertionError("reorder needs a permutation of the function's ops")
        changed = any(a is not b for a, b in zip(ops, self.fn.ops))
        self.fn.ops = list(ops)
        return changed
