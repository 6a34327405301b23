"""The text format round-trips exactly: golden files and random well-typed modules."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import boldc
from boldc import FunctionBuilder, Module, tensor
from boldc.ir.printer import format_value
from boldc.ops.registry import TypeCheck

from conftest import GOLDEN

GOLDEN_FILES = sorted(GOLDEN.glob("*.bir"))


def test_golden_files_exist():
    names = {p.stem for p in GOLDEN_FILES}
    assert {"float_mlp", "boolean_mlp", "boolean_cnn"} <= names


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_golden_roundtrip_exact(path):
    text = path.read_text()
    module = boldc.parse(text, filename=str(path))
    assert boldc.dumps(module) == text
    # and again through save/load, through a second file
    assert boldc.dumps(boldc.parse(boldc.dumps(module))) == text


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_golden_structure_only_roundtrip(path):
    module = boldc.load(path)
    structure = boldc.dumps(module, weights=False)
    assert "resources" not in structure
    again = boldc.parse(structure)
    assert not again.has_weights
    assert boldc.dumps(again, weights=False) == structure


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_golden_modules_run(path):
    module = boldc.load(path)
    x_type = module.function().args[0].type
    shape = [3 if isinstance(d, str) else d for d in x_type.shape]
    y = boldc.interpret(module, np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    assert y.shape[0] == 3 and np.isfinite(y).all()


def test_module_ops_api():
    module = boldc.load(GOLDEN / "boolean_mlp.bir")
    ops = module.ops("forward")
    assert [op.name for op in ops] == ["linear", "threshold", "blinear", "threshold", "blinear", "threshold",
                                       "linear"]
    assert ops[2].attrs["logic"] == "xnor" and ops[4].attrs["logic"] == "xor"
    assert str(ops[2].result_types[0]) == "i8[N, 32]"
    assert ops[3].attrs == {"tau": 1}


@pytest.mark.parametrize("value", [0, -3, 1.0, 0.5, 1e-05, -2.5e+20, float("inf"), float("-inf"), True, False,
                                   "xnor", 'quote " and \\ backslash', [1, 2], [], [1.5, "a", [True]],
                                   {"a": 1, "b.c": [0.25]}])
def test_attribute_values_roundtrip(value):
    m = boldc.parse(f'bir 1\nattributes {{v = {format_value(value)}}}\n')
    got = m.attrs["v"]
    assert type(got) is type(value) and got == value
    assert boldc.dumps(m) == f"bir 1\nattributes {{v = {format_value(value)}}}\n"


def test_odd_names_are_quoted_and_roundtrip():
    m = Module()
    w = m.add_param("onnx::Gemm 7", tensor("f32", 2, 2), np.eye(2, dtype=np.float32))
    fb = FunctionBuilder(m, "forward", [("input:0", tensor("f32", "batch", 2))])
    fb.ret(fb.op("linear", [fb.args[0], w], name="out put"))
    text = boldc.dumps(m)
    assert '@"onnx::Gemm 7"' in text and '%"input:0"' in text
    assert boldc.dumps(boldc.parse(text)) == text


# --- random well-typed modules -----------------------------------------------------------


@st.composite
def random_module(draw):
    """A chain of randomly chosen ops, each well typed by construction."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    m = Module()
    n_in = draw(st.integers(1, 12))
    fb = FunctionBuilder(m, "forward", [("x", tensor("f32", "N", n_in))])
    cur = fb.args[0]
    for i in range(draw(st.integers(1, 7))):
        feat = cur.type.shape[-1]
        kind = draw(st.sampled_from(["linear", "blinear", "mlinear", "threshold", "relu", "cast", "add", "softmax"]))
        out = draw(st.integers(1, 9))
        if kind == "blinear":
            x = cur if cur.type.dtype.is_bool else fb.op("threshold", [cur], {"tau": draw(st.integers(-2, 2))})
            w = m.add_param(f"w{i}", tensor("b1", out, feat), rng.random((out, feat)) < 0.5)
            args = [x, w]
            if draw(st.booleans()):
                args.append(m.add_param(f"b{i}", tensor("b1", out), rng.random(out) < 0.5))
            cur = fb.op("blinear", args, {"logic": draw(st.sampled_from(["xnor", "xor"]))})
        elif kind in ("linear", "mlinear"):
            x = cur if kind == "linear" or not cur.type.dtype.is_bool else fb.op("cast", [cur], {"to": "f32"})
            wt = "f32" if kind == "linear" else "b1"
            data = rng.standard_normal((out, feat)).astype(np.float32) if wt == "f32" else rng.random((out, feat)) < .5
            w = m.add_param(f"w{i}", tensor(wt, out, feat), data)
            cur = fb.op(kind, [x, w])
        elif kind == "threshold":
            if cur.type.dtype.is_bool:
                continue
            cur = fb.op("threshold", [cur], {"tau": draw(st.sampled_from([0, 1, -0.5, 2.25]))})
        elif kind == "relu":
            if cur.type.dtype.is_bool:
                continue
            cur = fb.op("relu", [cur])
        elif kind == "cast":
            to = draw(st.sampled_from(["f32", "b1", "i32"]))
            try:
                cur = fb.op("cast", [cur], {"to": to})
            except TypeCheck:
                continue
        elif kind == "add":
            cur = fb.op("add", [cur, cur])
        elif kind == "softmax" and cur.type.dtype.is_float:
            cur = fb.op("softmax", [cur])
    fb.ret(cur)
    return m


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_module())
def test_random_modules_roundtrip(module):
    text = boldc.dumps(module)
    again = boldc.parse(text)
    assert boldc.dumps(again) == text
    for name, p in module.params.items():
        q = again.params[name]
        assert q.data.dtype == p.data.dtype and np.array_equal(q.data, p.data)
    x = np.random.default_rng(1).standard_normal((2, module.function().args[0].type.shape[1])).astype(np.float32)
    a, b = boldc.interpret(module, x), boldc.interpret(again, x)
    assert a.dtype == b.dtype and np.array_equal(a, b)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["f32", "i8", "i16", "i32", "b1"]),
       st.lists(st.integers(0, 9), min_size=0, max_size=4), st.integers(0, 2**32 - 1))
def test_param_tensors_roundtrip_bit_for_bit(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    t = tensor(dtype, *shape)
    if dtype == "b1":
        data = rng.random(shape) < 0.5
    elif dtype == "f32":
        data = rng.standard_normal(shape).astype(np.float32)
    else:
        lo, hi = t.dtype.int_range
        data = rng.integers(lo, hi, size=shape, endpoint=True).astype(t.dtype.numpy)
    m = Module()
    m.add_param("p", t, data)
    back = boldc.parse(boldc.dumps(m)).params["p"].data
    assert back.dtype == data.dtype and back.shape == data.shape
    assert back.tobytes() == data.tobytes()
