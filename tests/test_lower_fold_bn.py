"""fold-bn: threshold(batchnorm(s)) -> threshold(s, @tau, @ge), exactly.

Exactness is checked against the interpreter's own float32 evaluation of batchnorm
followed by threshold, over every integer of the pre-activation's type (i8, i16),
which contains the layer's finite range [-(m+1), m+1]."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import boldc
from boldc import FunctionBuilder, Module, tensor
from boldc.passes import PassManager

from onnxgraph import example_input, example_model, op_names


def convert_unfused(*args, **options):
    """boldc.convert without fusion: these tests look at the lowered ops themselves."""
    return boldc.convert(*args, fuse=False, **options)


def bn_threshold_module(dtype: str, scale, bias, mean, var, eps: float = 1e-5, tau: int = 0) -> Module:
    c = len(scale)
    m = Module()
    fb = FunctionBuilder(m, "forward", [("s", tensor(dtype, "N", c))])
    ps = [m.add_param(f"bn.{n}", tensor("f32", c), np.asarray(a, np.float32))
          for n, a in (("weight", scale), ("bias", bias), ("mean", mean), ("var", var))]
    y = fb.op("batchnorm", [fb.args[0], *ps], {"epsilon": eps}, name="y")
    fb.ret(fb.op("threshold", [y], {"tau": tau}, name="h"))
    return m


def folded(m: Module) -> Module:
    out = m.copy()
    PassManager("fold-bn").run(out)
    assert op_names(out) == ["threshold"]
    return out


def every_integer(dtype: str, channels: int) -> np.ndarray:
    info = np.iinfo(dtype.replace("i", "int"))
    col = np.arange(info.min, info.max + 1, dtype=np.int64)
    return np.repeat(col[:, None], channels, axis=1).astype(info.dtype)


def assert_exact(m: Module, dtype: str) -> Module:
    f = folded(m)
    s = every_integer(dtype, len(m.params["bn.weight"].data))
    assert np.array_equal(boldc.interpret(m, s), boldc.interpret(f, s))
    return f


def test_negative_and_zero_scales():
    scale = [1.5, -2.0, 0.0, 0.0, -0.25, 3.0]
    bias = [0.3, -0.7, 0.5, -0.5, 0.0, -1e9]  # zero scale: constant T, constant F; huge bias: constant F
    f = assert_exact(bn_threshold_module("i8", scale, bias, [1.2, -3.4, 0.0, 0.0, 7.0, 0.0], [1.0, 4.0, 1.0, 1.0,
                                                                                                0.5, 1.0]), "i8")
    thr = f.ops()[0]
    tau, ge = thr.operands[1].data, thr.operands[2].data
    assert ge.tolist() == [True, False, True, True, False, True]
    assert tau[2] == -128 and tau[3] > 127 and tau[5] > 127  # constant channels: tau outside the range


def test_rounding_at_the_boundary():
    """Algebra gives s >= mean - bias·sqrt(var+eps)/scale = 32.0, but the float32 computation
    of batchnorm at s = 32 is -1.9e-17 < 0: the fold must follow the computation."""
    m = bn_threshold_module("i8", [0.13831818], [-9.461167e-08], [31.999998], [7.775507])
    s = np.array([[31], [32], [33]], dtype=np.int8)
    assert boldc.interpret(m, s)[:, 0].tolist() == [False, False, True]
    f = assert_exact(m, "i8")
    assert f.ops()[0].operands[1].data.tolist() == [33]


def test_threshold_tau_attribute_is_honoured():
    m = bn_threshold_module("i8", [1.0, -1.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0], tau=2)
    assert_exact(m, "i8")


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.sampled_from(["i8", "i16"]), st.integers(0, 2**32 - 1))
def test_fold_is_exact_over_the_whole_range(channels, dtype, seed):
    rng = np.random.default_rng(seed)
    sign = rng.choice([-1.0, 0.0, 1.0], channels, p=[0.45, 0.1, 0.45])
    scale = sign * 10.0 ** rng.uniform(-4, 3, channels)
    var = 10.0 ** rng.uniform(-4, 3, channels)
    hi = 127 if dtype == "i8" else 4000
    mean = rng.uniform(-hi, hi, channels)
    bias = rng.normal(0, 2, channels)
    eps = float(rng.choice([1e-5, 1e-3, 0.0]))
    assert_exact(bn_threshold_module(dtype, scale, bias, mean, var, eps), dtype)


def test_i32_input_near_tau_and_over_a_layer_range():
    """Sums of pre-activations are i32; bisection still finds tau exactly."""
    scale, bias, mean, var = [0.7, -1.3, 0.0], [0.1, 0.2, -0.1], [1234.5, -987.25, 0.0], [2.0, 0.5, 1.0]
    m = bn_threshold_module("i32", scale, bias, mean, var)
    f = folded(m)
    tau = f.ops()[0].operands[1].data.astype(np.int64)
    # every i32 value but the maximum, which a constant-F channel's tau takes (see fold_bn.py)
    near = np.clip(np.concatenate([tau[None, :] + d for d in range(-3, 4)], axis=0), -2**31, 2**31 - 2)
    assert tau[2] == 2**31 - 1  # scale 0, bias < 0: constant F
    layer_range = np.repeat(np.arange(-5000, 5001)[:, None], 3, axis=1)
    for s in (near, layer_range):
        s = s.astype(np.int32)
        assert np.array_equal(boldc.interpret(m, s), boldc.interpret(f, s))


def test_float_input_and_shared_results_are_left_alone():
    m = bn_threshold_module("f32", [1.0], [0.0], [0.0], [1.0])
    out = m.copy()
    assert [(r.name, r.modified) for r in PassManager("fold-bn").run(out)] == [("fold-bn", False)]
    assert op_names(out) == ["batchnorm", "threshold"]


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn", "vgg_small"])
def test_folded_network_equals_the_kept_bn_network(name):
    """Same b1 activations everywhere, hence bit-identical outputs."""
    m = example_model(name)
    kept = convert_unfused(m, keep_bn=True)
    fold = convert_unfused(m, fold_bn=True)
    ops = op_names(fold)
    assert ops.count("batchnorm") == 1  # only the BN after the first (float) layer stays
    assert all(len(op.operands) >= 2 for op in fold.ops() if op.name == "threshold" and
               op.operands[0].type.dtype.is_int)
    x = example_input(name, 16, seed=3)
    assert np.array_equal(boldc.interpret(kept, x), boldc.interpret(fold, x))


def test_a_normalization_that_is_not_per_channel_is_left_alone():
    """A LayerNorm-like op (a normalization over the features, not a per-channel affine map)
    between a Boolean layer and its threshold must not be folded as if it were BatchNorm."""
    from boldc.ops.registry import REGISTRY, NotDifferentiable, OpDef, register
    from boldc.ops.traits import Normalization

    @register
    class FeatureNorm(OpDef):
        """y = gamma · (x - mean_j x) / sqrt(var_j x + 1e-5) over the last axis (a test op)."""

        name = "test_feature_norm"
        operands = ("x", "gamma")
        traits = (Normalization(),)
        backward = NotDifferentiable("a test op")

        def cost(self, ctx):
            return []

        def infer(self, types, attrs):
            return [types[0].with_dtype(boldc.DType.f32)]

        def evaluate(self, args, attrs):
            x = args[0].astype(np.float64)
            z = (x - x.mean(axis=-1, keepdims=True)) / np.sqrt(x.var(axis=-1, keepdims=True) + 1e-5)
            return [(z * args[1]).astype(np.float32)]

    try:
        m = Module()
        gamma = m.add_param("ln.gamma", tensor("f32", 4), np.array([1, -2, 3, 0.5], np.float32))
        fb = FunctionBuilder(m, "forward", [("s", tensor("i8", "N", 4))])
        y = fb.op("test_feature_norm", [fb.args[0], gamma], name="y")
        fb.ret(fb.op("threshold", [y], name="h"))
        out = m.copy()
        changed = PassManager("fold-bn").run(out)
        assert [r.modified for r in changed] == [False]
        assert op_names(out) == ["test_feature_norm", "threshold"]
        s = np.array([[3, -1, 2, 0], [-5, 4, 4, 1]], np.int8)
        assert np.array_equal(boldc.interpret(out, s), boldc.interpret(m, s))
    finally:
        REGISTRY.pop("test_feature_norm", None)
