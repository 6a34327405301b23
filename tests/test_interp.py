"""The reference interpreter against hand-computed cases and against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import boldc
from boldc.errors import InterpretError

from conftest import GOLDEN
from opbuild import run_single

T, F_ = True, False
X = np.array([[T, F_, T], [F_, T, T]])
W = np.array([[T, T, F_], [F_, T, T]])  # rows are output neurons


def pm(b: np.ndarray) -> np.ndarray:
    """e(b): T -> +1, F -> -1."""
    return np.where(b, 1.0, -1.0).astype(np.float32)


def test_blinear_xnor_hand_case():
    y = run_single("blinear", [X], [W], {"logic": "xnor"})
    assert y.tolist() == [[-1, -1], [-1, 3]]
    assert y.dtype == np.int8


def test_blinear_xor_hand_case():
    assert run_single("blinear", [X], [W], {"logic": "xor"}).tolist() == [[1, 1], [1, -3]]


def test_blinear_bias_adds_e_of_bias():
    y = run_single("blinear", [X], [W, np.array([T, F_])], {"logic": "xnor"})
    assert y.tolist() == [[0, -2], [0, 2]]
    y = run_single("blinear", [X], [W, np.array([T, F_])], {"logic": "xor"})
    assert y.tolist() == [[2, 0], [2, -4]]


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 5), st.integers(1, 130), st.integers(1, 9), st.sampled_from(["xnor", "xor"]),
       st.integers(0, 2**32 - 1))
def test_blinear_is_pm1_matmul(k, m, n, logic, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.random((k, m)) < 0.5, rng.random((n, m)) < 0.5
    want = (pm(x) @ pm(w).T) * (1 if logic == "xnor" else -1)
    # xnor: m - 2 popcount(x XOR w)
    pop = (x[:, None, :] ^ w[None, :, :]).sum(-1)
    assert np.array_equal(want, (m - 2 * pop) * (1 if logic == "xnor" else -1))
    got = run_single("blinear", [x], [w], {"logic": logic})
    assert got.dtype == (np.int8 if m <= 127 else np.int16)
    assert np.array_equal(got, want)


def _torch_conv(x, w, stride, pad, dilation, groups, pad_value=0.0):
    pt, pl, pb, pr = pad
    xt = F.pad(torch.from_numpy(x), (pl, pr, pt, pb), value=pad_value)
    return F.conv2d(xt, torch.from_numpy(w), stride=stride, dilation=dilation, groups=groups).numpy()


conv_cases = st.fixed_dictionaries({
    "n": st.integers(1, 2), "groups": st.sampled_from([1, 1, 2]), "cg": st.integers(1, 5), "mg": st.integers(1, 5),
    "h": st.integers(3, 9), "w": st.integers(3, 9), "kh": st.integers(1, 3), "kw": st.integers(1, 3),
    "stride": st.lists(st.integers(1, 3), min_size=2, max_size=2),
    "pad": st.lists(st.integers(0, 2), min_size=4, max_size=4),
    "dilation": st.lists(st.integers(1, 2), min_size=2, max_size=2),
    "seed": st.integers(0, 2**32 - 1),
})


def _conv_arrays(c, x_bool: bool):
    rng = np.random.default_rng(c["seed"])
    cin, m = c["cg"] * c["groups"], c["mg"] * c["groups"]
    x = rng.random((c["n"], cin, c["h"], c["w"])) < 0.5 if x_bool else \
        rng.standard_normal((c["n"], cin, c["h"], c["w"])).astype(np.float32)
    w = rng.random((m, c["cg"], c["kh"], c["kw"])) < 0.5
    attrs = {"stride": c["stride"], "pad": c["pad"], "dilation": c["dilation"], "groups": c["groups"]}
    return x, w, attrs


def _fits(c) -> bool:
    return all(size + p0 + p1 >= d * (k - 1) + 1 for size, p0, p1, d, k in
               [(c["h"], c["pad"][0], c["pad"][2], c["dilation"][0], c["kh"]),
                (c["w"], c["pad"][1], c["pad"][3], c["dilation"][1], c["kw"])])


@settings(max_examples=60, deadline=None)
@given(conv_cases, st.sampled_from(["xnor", "xor"]), st.sampled_from(["false", "neutral"]))
def test_bconv2d_equals_float_conv_on_pm1(c, logic, pad_mode):
    assume(_fits(c))
    x, w, attrs = _conv_arrays(c, x_bool=True)
    # pad_mode "false": padded positions are F bits, i.e. -1 in the +-1 picture; "neutral": 0.
    want = _torch_conv(pm(x), pm(w), c["stride"], c["pad"], c["dilation"], c["groups"],
                       -1.0 if pad_mode == "false" else 0.0) * (1 if logic == "xnor" else -1)
    got = run_single("bconv2d", [x], [w], dict(attrs, logic=logic, pad_mode=pad_mode))
    assert np.issubdtype(got.dtype, np.integer)
    assert np.array_equal(got, want.astype(np.int64))


def test_bconv2d_without_padding_equals_plain_float_conv():
    rng = np.random.default_rng(5)
    x, w = rng.random((2, 7, 6, 6)) < 0.5, rng.random((5, 7, 3, 3)) < 0.5
    want = F.conv2d(torch.from_numpy(pm(x)), torch.from_numpy(pm(w))).numpy()
    assert np.array_equal(run_single("bconv2d", [x], [w]), want)
    bias = rng.random(5) < 0.5
    got = run_single("bconv2d", [x], [w, bias])
    assert np.array_equal(got, want + pm(bias).reshape(1, -1, 1, 1))


@settings(max_examples=40, deadline=None)
@given(conv_cases, st.sampled_from(["xnor", "xor"]))
def test_mconv2d_is_conv_with_pm1_weights(c, logic):
    assume(_fits(c))
    x, w, attrs = _conv_arrays(c, x_bool=False)
    want = _torch_conv(x, pm(w), c["stride"], c["pad"], c["dilation"], c["groups"]) * (1 if logic == "xnor" else -1)
    got = run_single("mconv2d", [x], [w], dict(attrs, logic=logic))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(conv_cases)
def test_float_conv2d_matches_torch(c):
    assume(_fits(c))
    x, wb, attrs = _conv_arrays(c, x_bool=False)
    w = np.random.default_rng(c["seed"] + 1).standard_normal(wb.shape).astype(np.float32)
    b = np.random.default_rng(c["seed"] + 2).standard_normal(w.shape[0]).astype(np.float32)
    want = _torch_conv(x, w, c["stride"], c["pad"], c["dilation"], c["groups"]) + b.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(run_single("conv2d", [x], [w, b], attrs), want, rtol=1e-4, atol=1e-5)


def test_mlinear_and_linear():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 10)).astype(np.float32)
    w = rng.random((3, 10)) < 0.5
    np.testing.assert_allclose(run_single("mlinear", [x], [w]), x @ pm(w).T, rtol=1e-6)
    np.testing.assert_allclose(run_single("mlinear", [x], [w], {"logic": "xor"}), -(x @ pm(w).T), rtol=1e-6)
    wf = rng.standard_normal((3, 10)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    np.testing.assert_allclose(run_single("linear", [x], [wf, b]), x @ wf.T + b, rtol=1e-5)
    # a float layer reads b1 input as +-1
    xb = rng.random((4, 10)) < 0.5
    np.testing.assert_allclose(run_single("linear", [xb], [wf]), pm(xb) @ wf.T, rtol=1e-5)


def test_threshold_scalar_tau():
    s = np.array([[-2, -1, 0, 1, 2]], dtype=np.int16)
    assert run_single("threshold", [s]).tolist() == [[F_, F_, T, T, T]]
    assert run_single("threshold", [s], [], {"tau": 1}).tolist() == [[F_, F_, F_, T, T]]
    assert run_single("threshold", [s], [], {"tau": -1.5}).tolist() == [[F_, T, T, T, T]]
    f = np.array([[-0.5, 0.0, 0.49, 0.5]], dtype=np.float32)
    assert run_single("threshold", [f], [], {"tau": 0.5}).tolist() == [[F_, F_, F_, T]]


def test_threshold_per_channel_tau_and_direction():
    s = np.arange(-3, 3, dtype=np.int8).reshape(1, 2, 3)  # channel 0: -3,-2,-1; channel 1: 0,1,2
    tau = np.array([-2, 1], dtype=np.int8)
    assert run_single("threshold", [s], [tau]).tolist() == [[[F_, T, T], [F_, T, T]]]
    ge = np.array([F_, T])  # channel 0 uses s <= tau
    assert run_single("threshold", [s], [tau, ge]).tolist() == [[[T, T, F_], [F_, T, T]]]
    ftau = np.array([-2.5, 0.5], dtype=np.float32)
    assert run_single("threshold", [s], [ftau]).tolist() == [[[F_, T, T], [F_, T, T]]]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(2, 9), st.integers(1, 3), st.integers(1, 3), st.integers(0, 1),
       st.booleans(), st.integers(0, 2**32 - 1))
def test_bmaxpool_is_or_and_max_of_pm1(c, hw, k, s, p, ceil, seed):
    assume(hw + 2 * p >= k and p <= k // 2)
    x = np.random.default_rng(seed).random((2, c, hw, hw)) < 0.4
    attrs = {"kernel": [k, k], "stride": [s, s], "pad": [p] * 4, "ceil_mode": ceil}
    got = run_single("bmaxpool2d", [x], [], attrs)
    want = F.max_pool2d(torch.from_numpy(pm(x)), k, s, p, ceil_mode=ceil).numpy()
    assert np.array_equal(pm(got), want)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 9), st.integers(1, 4), st.integers(1, 3), st.integers(0, 2), st.booleans(), st.booleans(),
       st.integers(0, 2**32 - 1))
def test_float_pools_match_torch(hw, k, s, p, ceil, include_pad, seed):
    assume(hw + 2 * p >= k and p <= k // 2)
    x = np.random.default_rng(seed).standard_normal((2, 3, hw, hw)).astype(np.float32)
    base = {"kernel": [k, k], "stride": [s, s], "pad": [p] * 4, "ceil_mode": ceil}
    got = run_single("maxpool2d", [x], [], base)
    np.testing.assert_array_equal(got, F.max_pool2d(torch.from_numpy(x), k, s, p, ceil_mode=ceil).numpy())
    got = run_single("avgpool2d", [x], [], dict(base, count_include_pad=include_pad))
    want = F.avg_pool2d(torch.from_numpy(x), k, s, p, ceil_mode=ceil, count_include_pad=include_pad).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_batchnorm_softmax_global_pool_relu():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    scale, bias, mean = (rng.standard_normal(3).astype(np.float32) for _ in range(3))
    var = rng.random(3).astype(np.float32) + 0.1
    want = F.batch_norm(torch.from_numpy(x), torch.from_numpy(mean), torch.from_numpy(var),
                        torch.from_numpy(scale), torch.from_numpy(bias), eps=1e-3).numpy()
    got = run_single("batchnorm", [x], [scale, bias, mean, var], {"epsilon": 1e-3})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run_single("global_avgpool", [x]), x.mean(axis=(2, 3), keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(run_single("softmax", [x], [], {"axis": 1}),
                               torch.softmax(torch.from_numpy(x), 1).numpy(), rtol=1e-6)
    assert np.array_equal(run_single("relu", [x]), np.maximum(x, 0))


def test_add_types_and_broadcasting():
    a = np.array([[100, -100]], dtype=np.int8)
    y = run_single("add", [a, a])
    assert y.dtype == np.int16 and y.tolist() == [[200, -200]]  # exact: one step wider
    b = np.array([[T, F_]])
    assert run_single("add", [a, b]).tolist() == [[101, -101]]  # b1 enters as e(b)
    x = np.ones((2, 3, 2, 2), np.float32)
    bias = np.arange(3, dtype=np.float32).reshape(1, 3, 1, 1)
    assert np.array_equal(run_single("add", [x], [bias]), x + bias)


def test_shape_ops():
    x = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    assert np.array_equal(run_single("flatten", [x]), x.reshape(2, 12))
    assert np.array_equal(run_single("reshape", [x], [], {"shape": ["N", -1, 2]}), x.reshape(2, 6, 2))
    assert np.array_equal(run_single("reshape", [x], [], {"shape": [-1, 12]}), x.reshape(2, 12))
    assert np.array_equal(run_single("concat", [x, x[:, :1]], [], {"axis": 1}),
                          np.concatenate([x, x[:, :1]], 1))


@pytest.mark.parametrize("b", [2, 3])
def test_pixel_shuffles_match_torch_and_onnx(b):
    """CRD is PyTorch's pixel_shuffle / pixel_unshuffle, DCR ONNX's reference DepthToSpace and
    SpaceToDepth; the two ops invert each other; b1 maps move like floats."""
    from onnx.reference.ops.op_depth_to_space import DepthToSpace
    from onnx.reference.ops.op_space_to_depth import SpaceToDepth

    x = np.random.default_rng(b).standard_normal((2, 3 * b * b, 2, 3)).astype(np.float32)
    crd = run_single("depth_to_space", [x], attrs={"blocksize": b, "mode": "CRD"})
    assert np.array_equal(crd, F.pixel_shuffle(torch.from_numpy(x), b).numpy())
    assert np.array_equal(run_single("space_to_depth", [crd], attrs={"blocksize": b, "mode": "CRD"}),
                          F.pixel_unshuffle(torch.from_numpy(crd), b).numpy())
    dcr = run_single("depth_to_space", [x], attrs={"blocksize": b})
    assert np.array_equal(dcr, DepthToSpace._run(None, x, blocksize=b, mode="DCR")[0])
    assert not np.array_equal(dcr, crd)
    for mode, y in (("DCR", dcr), ("CRD", crd)):
        back = run_single("space_to_depth", [y], attrs={"blocksize": b, "mode": mode})
        assert np.array_equal(back, x)
        assert np.array_equal(back, SpaceToDepth._run(None, y, blocksize=b, mode=mode)[0])
    bits = x > 0
    assert np.array_equal(run_single("depth_to_space", [bits], attrs={"blocksize": b, "mode": "CRD"}), crd > 0)


def test_casts():
    b = np.array([[T, F_]])
    assert run_single("cast", [b], [], {"to": "f32"}).tolist() == [[1.0, -1.0]]
    assert run_single("cast", [b], [], {"to": "i8"}).tolist() == [[1, -1]]
    f = np.array([[-0.0, -1e-9, 2.5, 3.5, 1e12]], dtype=np.float32)
    assert run_single("cast", [f], [], {"to": "b1"}).tolist() == [[T, F_, T, T, T]]
    assert run_single("cast", [f], [], {"to": "i16"}).tolist() == [[0, 0, 2, 4, 32767]]
    i = np.array([[-3, 0]], dtype=np.int16)
    assert run_single("cast", [i], [], {"to": "b1"}).tolist() == [[F_, T]]


def test_interpreter_input_errors():
    m = boldc.load(GOLDEN / "boolean_mlp.bir")
    with pytest.raises(InterpretError, match=r"input %x of @forward must be f32\[N, 64\], got an array of shape \[2,"):
        boldc.interpret(m, np.zeros((2, 63), np.float32))
    with pytest.raises(InterpretError, match=r"needs a numeric array, got <U1"):
        boldc.interpret(m, np.full((2, 64), "a"))
    with pytest.raises(InterpretError, match=r"takes 1 inputs \(x\), got 2"):
        boldc.interpret(m, [np.zeros((2, 64)), np.zeros((2, 64))])
    with pytest.raises(InterpretError, match=r"missing: \['x'\]"):
        boldc.interpret(m, {"y": np.zeros((2, 64))})
    with pytest.raises(boldc.BoldcError, match=r"module has no function @train_step \(it has: @forward\)"):
        boldc.interpret(m, np.zeros((2, 64)), func="train_step")
    bare = boldc.parse(boldc.dumps(m, weights=False))
    with pytest.raises(InterpretError, match=r"param @fc0.w has no tensor"):
        boldc.interpret(bare, np.zeros((2, 64)))


def test_interpreter_accepts_dict_and_float64():
    m = boldc.load(GOLDEN / "float_mlp.bir")
    x = np.random.default_rng(0).standard_normal((3, 64))
    a = boldc.interpret(m, {"x": x})
    b = boldc.interpret(m, x.astype(np.float32))
    assert a.dtype == np.float32 and np.array_equal(a, b)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-5)


def test_average_pools_read_b1_as_pm1():
    x = np.random.default_rng(3).random((2, 3, 4, 4)) < 0.5
    np.testing.assert_allclose(run_single("global_avgpool", [x]), pm(x).mean(axis=(2, 3), keepdims=True), rtol=1e-6)
    got = run_single("avgpool2d", [x], [], {"kernel": [2, 2], "stride": [2, 2]})
    want = F.avg_pool2d(torch.from_numpy(pm(x)), 2, 2).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
