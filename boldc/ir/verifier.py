"""The verifier: checks a Module against the op registry and normalizes attributes.

For every op: the op exists, its operand count and attributes are right (defaults are
filled in, in declared order), and the result types declared in the IR equal the
types its definition infers. Values must be defined before use; returns must match
the signature. Params' tensors must match their declared types.

It raises ``VerifyError`` naming file:line:col (or function and op index for ops
built in memory) and the op, on one line.
"""

from __future__ import annotations

from boldc.errors import VerifyError
from boldc.ir.catalog import TypeCheck, op_definition
from boldc.ir.core import Function, Module, Op, Param, Value


def _where(fn: Function, index: int, op: Op) -> str:
    return str(op.loc) if op.loc else f"@{fn.name}, op {index}"


def check_op(op: Op) -> list:
    """Check one op in isolation (arity, attributes, inferred result types), filling
    defaults into ``op.attrs``. Returns the inferred types; raises TypeCheck."""
    opdef = op_definition(op.name)
    if opdef is None:
        raise TypeCheck(f"unknown op '{op.name}'")
    lo, hi = opdef.arity()
    n = len(op.operands)
    if n < lo or (hi is not None and n > hi):
        want = f"{lo}" if lo == hi else (f"{lo} to {hi}" if hi is not None else f"at least {lo}")
        names = ", ".join(opdef.operands)
        raise TypeCheck(f"takes {want} operands ({names}), got {n}")
    op.attrs = opdef.normalize_attrs(op.attrs)
    inferred = opdef.infer([o.type for o in op.operands], op.attrs)
    return inferred


def _check_param_writes(op: Op, where: str, updated: dict[str, int], index: int) -> None:
    """Ops that update params (the optimizer): the updated operands are params, each param
    is updated at most once per function and never read after its update, so running the
    updates in place in op order equals committing them all at the end (docs/training.md)."""
    for operand in op.operands:
        if isinstance(operand, Param) and operand.name in updated:
            raise VerifyError(f"{where}: error: op {op.describe()}: reads param @{operand.name} after op "
                              f"{updated[operand.name]} updated it; a param's update must follow all its uses")
    opdef = op_definition(op.name)
    for pos in opdef.updated_positions(len(op.operands)):
        operand = op.operands[pos]
        if not isinstance(operand, Param):
            raise VerifyError(f"{where}: error: op {op.describe()}: operand {pos} %{operand.name} is updated "
                              "in place and must be a param")
        updated[operand.name] = index


def verify_function(module: Module, fn: Function) -> None:
    defined: set[Value] = set()
    updated: dict[str, int] = {}
    for a in fn.args:
        defined.add(a)
    for index, op in enumerate(fn.ops):
        where = _where(fn, index, op)
        for pos, operand in enumerate(op.operands):
            if isinstance(operand, Param):
                if module.params.get(operand.name) is not operand:
                    raise VerifyError(f"{where}: error: op {op.describe()}: param @{operand.name} is not in the module")
            elif operand not in defined:
                raise VerifyError(f"{where}: error: op {op.describe()}: operand {pos} %{operand.name} "
                                  "is used before it is defined")
        try:
            inferred = check_op(op)
        except TypeCheck as exc:
            raise VerifyError(f"{where}: error: op {op.describe()}: {exc}") from None
        _check_param_writes(op, where, updated, index)
        if len(inferred) != len(op.results):
            raise VerifyError(f"{where}: error: op {op.describe()}: has {len(inferred)} results, "
                              f"{len(op.results)} declared")
        for res, want in zip(op.results, inferred):
            if res.type != want:
                raise VerifyError(f"{where}: error: op {op.describe()}: type mismatch: %{res.name} is declared "
                                  f"{res.type} but the op gives {want}")
            if res in defined:
                raise VerifyError(f"{where}: error: op {op.describe()}: %{res.name} is defined twice")
            defined.add(res)
    ret_where = str(fn.return_loc) if fn.return_loc else f"@{fn.name}, return"
    for v in fn.returns:
        if not isinstance(v, Param) and v not in defined:
            raise VerifyError(f"{ret_where}: error: returned value %{v.name} is not defined in @{fn.name}")
    declared = fn.declared_result_types()
    got = [v.type for v in fn.returns]
    if declared != got:
        raise VerifyError(f"{ret_where}: error: @{fn.name} returns ({', '.join(map(str, got))}) but its "
                          f"signature says ({', '.join(map(str, declared))})")


def verify_params(module: Module) -> None:
    for p in module.params.values():
        where = str(p.loc) if p.loc else f"param @{p.name}"
        if p.data is None:
            continue
        if p.data.dtype != p.type.dtype.numpy or p.data.shape != tuple(p.type.shape):
            raise VerifyError(f"{where}: error: param @{p.name}: tensor {p.data.dtype}{list(p.data.shape)} "
                              f"does not match {p.type}")


def verify(module: Module) -> Module:
    """Verify the module in place (filling attribute defaults); returns it."""
    verify_params(module)
    for fn in module.functions.values():
        verify_function(module, fn)
    return module
