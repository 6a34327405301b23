"""Helpers for tests: single-op modules built from the registry."""

from __future__ import annotations

import numpy as np

import boldc
from boldc import FunctionBuilder, Module
from boldc.ir.types import dtype_of_numpy, tensor


def single_op(op_name: str, inputs: list[np.ndarray], params: list[np.ndarray] = (), attrs=None,
              batch_symbolic: bool = True, module: Module | None = None, fname: str = "forward") -> Module:
    """A module whose forward applies one op to function inputs then params.

    Inputs get a symbolic first dimension ``N`` when ``batch_symbolic``. With ``module``
    the function ``fname`` is added to that module instead (params ``<fname>.p<i>``)."""
    m = Module() if module is None else module
    prefix = "p" if module is None else f"{fname}.p"
    args = []
    for i, x in enumerate(inputs):
        shape = list(x.shape)
        if batch_symbolic and shape:
            shape[0] = "N"
        args.append((f"x{i}", tensor(dtype_of_numpy(x), *shape)))
    fb = FunctionBuilder(m, fname, args)
    ps = [m.add_param(f"{prefix}{i}", tensor(dtype_of_numpy(p), *p.shape), p) for i, p in enumerate(params)]
    out = fb.op(op_name, list(fb.args) + ps, attrs or {}, name="y")
    fb.ret(*(out if isinstance(out, list) else [out]))  # an op of several results returns them all
    return m


def run_single(op_name: str, inputs, params=(), attrs=None) -> np.ndarray:
    m = single_op(op_name, list(inputs), list(params), attrs)
    boldc.verify(boldc.parse(boldc.dumps(m)))  # what we run also round-trips
    return boldc.interpret(m, list(inputs))
