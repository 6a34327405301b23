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


def assert_finite_differences(module: Module, target, eps: float = 1e-2, tol: float = 2e-2,
                              label: str = "") -> dict[str, np.ndarray]:
    """Every f32 param's gradient from @train_step (``gradients`` on ``target``) against central
    differences (loss(p + eps) - loss(p - eps)) / 2eps of the same loss, one element at a time;
    asserts they agree within ``tol`` (relative and absolute). Returns the gradients."""
    _, grads = gradients(module, [target])
    for name, p in module.params.items():
        if not p.type.dtype.is_float or name not in grads:
            continue
        base = p.data.copy()
        numeric = np.zeros(base.shape)
        for idx in np.ndindex(base.shape):
            losses = []
            for sign in (1, -1):
                pert = base.copy()
                pert[idx] += sign * eps
                p.data = pert
                losses.append(float(boldc.interpret(module, [target], "train_step")))
            numeric[idx] = (losses[0] - losses[1]) / (2 * eps)
        p.data = base
        np.testing.assert_allclose(grads[name], numeric, rtol=tol, atol=tol, err_msg=f"{label}d/d@{name}")
    return grads


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


def tiny_fcn(seed: int = 0, classes: int = 3) -> boldc.Module:
    """A fully convolutional segmentation model: float conv (2->8, 3x3), Boolean conv (8->8,
    3x3), a 1x1 float conv to per-pixel logits [N, classes, 6, 6]."""
    rng = np.random.default_rng(seed)
    m = boldc.Module()
    fb = boldc.FunctionBuilder(m, "forward", [("x", boldc.tensor("f32", "N", 2, 6, 6))])
    w0 = m.add_param("c0.w", boldc.tensor("f32", 8, 2, 3, 3), (rng.standard_normal((8, 2, 3, 3)) / 3).astype("f4"))
    w1 = m.add_param("c1.w", boldc.tensor("b1", 8, 8, 3, 3), rng.random((8, 8, 3, 3)) < 0.5)
    w2 = m.add_param("c2.w", boldc.tensor("f32", classes, 8, 1, 1),
                     (rng.standard_normal((classes, 8, 1, 1)) / 3).astype("f4"))
    pad = {"pad": [1, 1, 1, 1]}
    h = fb.op("threshold", [fb.op("conv2d", [fb.args[0], w0], pad)])
    h = fb.op("cast", [fb.op("threshold", [fb.op("bconv2d", [h, w1], pad)])], {"to": "f32"})
    fb.ret(fb.op("conv2d", [h, w2]))
    return m


def tiny_decoder(seed: int = 0) -> boldc.Module:
    """An upsampling decoder: float conv (2->8, 3x3), Boolean conv (8->8, 3x3), its bits cast to
    ±1, a float transposed convolution (8->8, 3x3, stride 2, pad 1, output padding 1, bias), ReLU,
    and a pixel shuffle (CRD, 2) to [N, 2, 16, 16]."""
    rng = np.random.default_rng(seed)
    m = boldc.Module()
    fb = boldc.FunctionBuilder(m, "forward", [("x", boldc.tensor("f32", "N", 2, 4, 4))])
    w0 = m.add_param("c0.w", boldc.tensor("f32", 8, 2, 3, 3), (rng.standard_normal((8, 2, 3, 3)) / 3).astype("f4"))
    w1 = m.add_param("c1.w", boldc.tensor("b1", 8, 8, 3, 3), rng.random((8, 8, 3, 3)) < 0.5)
    wt = m.add_param("up.w", boldc.tensor("f32", 8, 8, 3, 3), (rng.standard_normal((8, 8, 3, 3)) / 8).astype("f4"))
    bt = m.add_param("up.b", boldc.tensor("f32", 8), (rng.standard_normal(8) / 4).astype("f4"))
    pad = {"pad": [1, 1, 1, 1]}
    h = fb.op("threshold", [fb.op("conv2d", [fb.args[0], w0], pad)])
    h = fb.op("cast", [fb.op("threshold", [fb.op("bconv2d", [h, w1], pad)])], {"to": "f32"})
    u = fb.op("conv_transpose2d", [h, wt, bt], {"stride": [2, 2], **pad, "output_padding": [1, 1]})
    fb.ret(fb.op("depth_to_space", [fb.op("relu", [u])], {"blocksize": 2, "mode": "CRD"}))
    return m


def segmentation_data(count: int, seed: int = 0, ignore_index: int = -100, ignored: float = 0.2):
    """(x [count, 2, 6, 6], labels [count, 6, 6] in 0..2): a pixel's class is read off its two
    channels; a fraction ``ignored`` of the labels is ``ignore_index``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((count, 2, 6, 6)).astype(np.float32)
    y = ((x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5)).astype(np.int32)
    y[rng.random(y.shape) < ignored] = ignore_index
    return x, y


def assert_c_steps_match(module: boldc.Module, batches, max_batch: int, variant: str = "simd", rtol: float = 1e-5,
                         **opts) -> boldc.Module:
    """Training steps of the generated C (``compile(train=True, **opts)`` on a backend_check
    variant) against the interpreter's @train_step, from the same state on ``batches``
    [(x, target)]: each loss within ``rtol``, b1 and integer params bit for bit, f32 params
    within ``rtol`` of their scale. Returns the interpreter's training module."""
    from boldc.backend.training import TrainOptions, training_module

    from backend_check import build_variant

    ref = training_module(module, TrainOptions.from_kwargs(opts))
    cm = build_variant(module, variant, train=True, max_batch=max_batch, **opts)
    for step, (x, y) in enumerate(batches):
        assert_step_matches(ref, cm, x, y, step, rtol)
    return ref


def assert_step_matches(ref: boldc.Module, cm, x, y, step: int, rtol: float = 1e-5) -> None:
    """One training step of the compiled ``cm`` and of the interpreter's training module ``ref``
    on (x, y), from the same state: the losses within ``rtol``, b1 and integer params bit for
    bit, f32 params within ``rtol`` of their scale (``step`` names the step in a failure)."""
    want = float(boldc.interpret(ref, [x, y], "train_step"))
    got = cm.train_step(x, y)
    assert abs(got - want) <= rtol * abs(want), f"step {step}: loss {got} vs {want}"
    for name, p in ref.params.items():
        c = cm.get_param(name)
        if p.type.dtype.is_bool or p.type.dtype.is_int:
            assert np.array_equal(c, p.data), f"step {step}: @{name} differs"
        else:
            err = float(np.abs(c.astype(np.float64) - p.data).max())
            assert err <= rtol * float(np.abs(p.data).max()), f"step {step}: @{name} differs by {err:.3g}"
