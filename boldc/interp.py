"""The reference interpreter: runs a function of a Module on numpy arrays.

It is generic: each op's numpy semantics is its ``evaluate`` in the registry (the
living definition of docs/method.md §2). Inputs are checked against the function signature;
symbolic dimensions (the batch ``N``, a sequence length ``L``, in any position) are bound
from the inputs' shapes at each call (inputs that disagree on one are an error) and
substituted into shape-valued attributes. Every result is checked against its
declared type, so an op whose semantics disagree with its type inference is caught.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from boldc.errors import InterpretError
from boldc.ir.core import Function, Module, Op, Param, Value
from boldc.ir.types import TensorType
from boldc.ops.registry import lookup

Inputs = np.ndarray | Sequence[np.ndarray] | Mapping[str, np.ndarray]


def interpret(module: Module, inputs: Inputs, func: str = "forward") -> Any:
    """Run ``func`` on ``inputs`` (an array, a list in argument order, or a dict by
    argument name). Returns the single output array, or a tuple if there are several."""
    fn = module.function(func)
    env = run(module, fn, inputs)
    outs = [env[v] for v in fn.returns]
    return outs[0] if len(outs) == 1 else tuple(outs)


def run(module: Module, fn: Function, inputs: Inputs,
        on_op: Callable[[Op, list[np.ndarray]], None] | None = None, commit: bool = True) -> dict[Value, np.ndarray]:
    """Run ``fn`` and return every value's array, keyed by the value.

    ``on_op(op, results)`` is called after each op (for traces and comparisons): its
    results, then the new values of the params it updates (an update op has only those).

    Parameter updates (ops declaring ``updates``, e.g. the optimizer in @train_step) are
    staged and committed together when the function returns, so every op of a step reads
    the params as they were at its start; if an op fails, no param changes. With
    ``commit=False`` the updates are computed but not applied."""
    args = _bind_inputs(fn, inputs)
    bindings: dict[str, int] = {}
    env: dict[Value, np.ndarray] = {}
    for value, arr in zip(fn.args, args):
        env[value] = check_input(fn, value, arr, bindings)
    for p in module.params.values():
        if p.data is None:
            raise InterpretError(f"param @{p.name} has no tensor (the module was loaded without weights)")
    staged: dict[str, np.ndarray] = {}
    for op in fn.ops:
        opdef = lookup(op.name)
        operands = [o.data if isinstance(o, Param) else env[o] for o in op.operands]
        results = opdef.evaluate(operands, resolve_attrs(opdef, op.attrs, bindings))
        # results first, then the new values of the params the op updates (if any)
        _stage_updates(op, opdef, results[len(op.results):], staged)
        for value, arr in zip(op.results, results):
            _check_result(op, value, arr, bindings)
            env[value] = arr
        if on_op is not None:
            on_op(op, results)
    if commit:
        for name, arr in staged.items():
            module.params[name].data = arr
    return env


def _stage_updates(op: Op, opdef, new_values: list[np.ndarray], staged: dict[str, np.ndarray]) -> None:
    """Check an update op's new param values against the params' types and stage them."""
    for pos, arr in zip(opdef.updated_positions(len(op.operands)), new_values, strict=True):
        param = op.operands[pos]
        want = param.type
        if arr.dtype != want.dtype.numpy or arr.shape != tuple(want.shape):
            raise AssertionError(f"op {op.describe()} produced {arr.dtype}{list(arr.shape)} for @{param.name}, "
                                 f"declared {want} (bug in its definition)")
        staged[param.name] = arr


def _bind_inputs(fn: Function, inputs: Inputs) -> list[np.ndarray]:
    names = [a.name for a in fn.args]
    if isinstance(inputs, Mapping):
        unknown = sorted(set(inputs) - set(names))
        missing = [n for n in names if n not in inputs]
        if unknown or missing:
            raise InterpretError(f"@{fn.name} takes inputs ({', '.join(names)}); "
                                 f"missing: {missing or 'none'}, unknown: {unknown or 'none'}")
        return [np.asarray(inputs[n]) for n in names]
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    inputs = list(inputs)
    if len(inputs) != len(names):
        raise InterpretError(f"@{fn.name} takes {len(names)} inputs ({', '.join(names)}), got {len(inputs)}")
    return [np.asarray(x) for x in inputs]


def check_input(fn: Function, value: Value, arr: np.ndarray, bindings: dict[str, int]) -> np.ndarray:
    """Check an input array against its argument's type, binding symbolic dimensions in
    ``bindings``; returns it converted to the argument's dtype (shared with the C backend)."""
    t = value.type
    what = f"input %{value.name} of @{fn.name}"
    if arr.ndim != t.rank:
        raise InterpretError(f"{what} must be {t}, got an array of shape {list(arr.shape)}")
    for dim, size in zip(t.shape, arr.shape):
        if isinstance(dim, str):
            if bindings.setdefault(dim, size) != size:
                raise InterpretError(f"{what}: dimension {dim} is {size} here but {bindings[dim]} elsewhere")
        elif dim != size:
            raise InterpretError(f"{what} must be {t}, got an array of shape {list(arr.shape)}")
    return _convert(arr, t, what)


def _convert(arr: np.ndarray, t: TensorType, what: str) -> np.ndarray:
    """Accept arrays of a compatible kind and convert them to the value's dtype."""
    d = t.dtype
    if d.is_bool:
        if arr.dtype != np.bool_:
            raise InterpretError(f"{what} is b1 and needs a bool array, got {arr.dtype}")
        return arr
    if d.is_float:
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise InterpretError(f"{what} is {d} and needs a numeric array, got {arr.dtype}")
        return arr.astype(np.float32, copy=False)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InterpretError(f"{what} is {d} and needs an integer array, got {arr.dtype}")
    lo, hi = d.int_range
    if arr.size and (arr.min() < lo or arr.max() > hi):
        raise InterpretError(f"{what} is {d}; values outside [{lo}, {hi}]")
    return arr.astype(d.numpy, copy=False)


def resolve_attrs(opdef, attrs: dict, bindings: dict[str, int]) -> dict:
    """The op's attributes with bound sizes substituted for symbols in shape-valued ones."""
    out = attrs
    for spec in opdef.attrs:
        if spec.kind == "shape" and any(isinstance(d, str) for d in attrs[spec.name]):
            out = dict(out) if out is attrs else out
            out[spec.name] = [bindings[d] if isinstance(d, str) else d for d in attrs[spec.name]]
    return out


def _check_result(op: Op, value: Value, arr: np.ndarray, bindings: dict[str, int]) -> None:
    want_shape = value.type.concrete(bindings)
    if arr.dtype != value.type.dtype.numpy or arr.shape != want_shape:
        raise AssertionError(f"op {op.describe()} produced {arr.dtype}{list(arr.shape)}, "
                             f"declared {value.type} (bug in its definition)")
