"""Deep copy of a Module (new Values, Ops and Params; tensors copied)."""

from __future__ import annotations

import copy

from boldc.ir.core import Function, Module, Op, Param, Value


def clone_module(module: Module) -> Module:
    out = Module()
    out.attrs = copy.deepcopy(module.attrs)
    for p in module.params.values():
        q = Param(p.name, p.type, None, copy.deepcopy(p.attrs), p.loc)
        q.data = None if p.data is None else p.data.copy()
        out.params[p.name] = q
    for fn in module.functions.values():
        mapping: dict[Value, Value] = {p: out.params[p.name] for p in module.params.values()}

        args = []
        for a in fn.args:
            mapping[a] = Value(a.name, a.type, a.loc)
            args.append(mapping[a])
        new = Function(fn.name, args, loc=fn.loc, return_loc=fn.return_loc,
                       result_types=None if fn.result_types is None else list(fn.result_types))
        for op in fn.ops:
            results = []
            for r in op.results:
                mapping[r] = Value(r.name, r.type, r.loc)
                results.append(mapping[r])
            new.ops.append(Op(op.name, [mapping[o] for o in op.operands], results, copy.deepcopy(op.attrs), op.loc))
        new.returns = [mapping[v] for v in fn.returns]
        out.functions[fn.name] = new
    return out
