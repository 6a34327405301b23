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
            grads[op.operands[0].name] = env[op.operands[1]]
    return float(env[fn.returns[0]]), grads


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


def small_cnn(logic: str, pad_mode: str) -> boldc.Module:
    """A small Boolean CNN: float conv (1->8), Boolean conv (8->16, 3x3) with its padding
    mode, OR-pool, Boolean conv (16->16, stride 2), flatten, float linear (->10)."""
    rng = np.random.default_rng(3)
    m = boldc.Module()
    fb = boldc.FunctionBuilder(m, "forward", [("x", boldc.tensor("f32", "N", 1, 8, 8))])
    w0 = m.add_param("c0.w", boldc.tensor("f32", 8, 1, 3, 3), (rng.standard_normal((8, 1, 3, 3)) / 3).astype("f4"))
    w1 = m.add_param("c1.w", boldc.tensor("b1", 16, 8, 3, 3), rng.random((16, 8, 3, 3)) < 0.5)
    w2 = m.add_param("c2.w", boldc.tensor("b1", 16, 16, 3, 3), rng.random((16, 16, 3, 3)) < 0.5)
    b2 = m.add_param("c2.b", boldc.tensor("b1", 16), rng.random(16) < 0.5)
    w3 = m.add_param("fc.w", boldc.tensor("f32", 10, 64), (rng.standard_normal((10, 64)) / 8).astype("f4"))
    b3 = m.add_param("fc.b", boldc.tensor("f32", 10), np.zeros(10, "f4"))
    pad = {"pad": [1, 1, 1, 1]}
    h = fb.op("threshold", [fb.op("conv2d", [fb.args[0], w0], pad)])
    h = fb.op("threshold", [fb.op("bconv2d", [h, w1], {**pad, "logic": logic, "pad_mode": pad_mode})])
    h = fb.op("bmaxpool2d", [h], {"kernel": [2, 2], "stride": [2, 2]})
    s = fb.op("bconv2d", [h, w2, b2], {**pad, "stride": [2, 2], "logic": logic, "pad_mode": pad_mode})
    h = fb.op("flatten", [fb.op("threshold", [s])])
    fb.ret(fb.op("linear", [h, w3, b3]))
    return m
