"""Helpers for the training tests: small models built in memory, digits data, gradients."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

import boldc
from boldc import FunctionBuilder, Module
from boldc.interp import run
from boldc.ir.types import dtype_of_numpy, tensor
from boldc.passes import PassManager


def _example():
    """examples/train_digits_interp.py, which defines the recipe's model and data."""
    path = Path(__file__).resolve().parent.parent / "examples" / "train_digits_interp.py"
    spec = importlib.util.spec_from_file_location("train_digits_interp", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_EXAMPLE = _example()
digits_mlp = _EXAMPLE.digits_mlp  # (seed, hidden) -> Module: float first/last, Boolean hidden layers
digits_split = _EXAMPLE.digits_split  # digits in [0, 1], 75/25 stratified split, random_state=0


def single_op_trainable(op_name: str, params: list[np.ndarray], attrs=None) -> Module:
    """@forward() = op(@p0, @p1, ...): every operand is a param, so autodiff trains the
    f32 and b1 ones; the prediction must be f32 (cast it otherwise)."""
    m = Module()
    fb = FunctionBuilder(m, "forward", [])
    ps = [m.add_param(f"p{i}", tensor(dtype_of_numpy(p), *p.shape), p) for i, p in enumerate(params)]
    y = fb.op(op_name, ps, attrs or {}, name="y")
    if not y.type.dtype.is_float:
        y = fb.op("cast", [y], {"to": "f32"}, name="yf")
    fb.ret(y)
    return m


def gradients(module: Module, inputs) -> tuple[float, dict[str, np.ndarray]]:
    """Run @train_step (before insert-optimizer) once; (loss, {param name: gradient})."""
    grads: dict[str, np.ndarray] = {}
    fn = module.function("train_step")
    env = run(module, fn, inputs)
    for op in fn.ops:
        if op.name == "param_grad":
            grads[op.operands[0].name] = env[id(op.operands[1])]
    return float(env[id(fn.returns[0])]), grads


def make_train_step(module: Module, autodiff: str = "", optimizer: str | None = None) -> Module:
    pipeline = f"autodiff{{{autodiff}}}" if autodiff else "autodiff"
    if optimizer is not None:
        pipeline += f",insert-optimizer{{{optimizer}}}" if optimizer else ",insert-optimizer"
    PassManager(pipeline).run(module)
    return module


def roundtrip(module: Module) -> Module:
    """Print and parse back (weights included); asserts the text is a fixed point."""
    text = boldc.dumps(module, weights=True)
    back = boldc.parse(text)
    assert boldc.dumps(back, weights=True) == text
    return back
