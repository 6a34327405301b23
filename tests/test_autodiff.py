"""autodiff: float rules against finite differences, Boolean rules against docs/method.md §3."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import boldc
from boldc import FunctionBuilder, Module, tensor
from boldc.errors import BoldcError
from boldc.ops.registry import NotDifferentiable, lookup

from opbuild import run_single
from trainutil import assert_finite_differences, digits_mlp, gradients, make_train_step, roundtrip, single_op_trainable

T, F_ = True, False
RNG = np.random.default_rng(1234)


def pm(b) -> np.ndarray:
    return np.where(b, 1.0, -1.0)


def f32(*shape, scale=1.0) -> np.ndarray:
    return (RNG.normal(size=shape) * scale).astype(np.float32)


# --- float rules vs finite differences -----------------------------------------------------


def finite_difference_check(op_name, params, attrs=None, eps=1e-2, tol=2e-2):
    """Loss = Σ (y - t)² (mse, reduction sum) of y = op(params); every f32 param's gradient
    from @train_step against central differences of the same loss."""
    m = single_op_trainable(op_name, params, attrs)
    make_train_step(m, "loss=mse,reduction=sum")
    pred = boldc.interpret(m, [], "forward")
    target = f32(*pred.shape)
    grads = assert_finite_differences(m, target, eps, tol, label=f"{op_name}: ")
    assert any(m.params[name].type.dtype.is_float for name in grads), f"{op_name}: no f32 param got a gradient"
    return m, grads


CONV = {"stride": [2, 1], "pad": [1, 0, 2, 1], "dilation": [1, 2], "groups": 2}
POOL = {"kernel": [3, 2], "stride": [2, 2], "pad": [1, 0, 1, 1], "ceil_mode": True}
TRANSPOSED = {"stride": [2, 3], "pad": [1, 0, 2, 1], "output_padding": [1, 2], "dilation": [1, 2], "groups": 2}
SHUFFLE_RNG = np.random.default_rng(16)  # the transposed conv / pixel shuffle cases' own: RNG's draws stay as they were


def dense_input(*shape) -> np.ndarray:
    return SHUFFLE_RNG.standard_normal(shape).astype(np.float32)

RESIZE_RNG = np.random.default_rng(17)  # the resize cases' own generator: the draws of RNG stay as they were


def resize_input(*shape) -> np.ndarray:
    return RESIZE_RNG.standard_normal(shape).astype(np.float32)


FLOAT_CASES = [
    ("linear", [f32(3, 4), f32(5, 4), f32(5)], {}),
    ("conv2d", [f32(2, 4, 6, 7), f32(6, 2, 3, 2), f32(6)], CONV),
    ("conv2d", [f32(1, 3, 5, 5), f32(2, 3, 3, 3)], {"pad": [1, 1, 1, 1]}),
    ("batchnorm", [f32(3, 4, 2, 2), f32(4), f32(4), f32(4), np.abs(f32(4)) + 0.5], {}),
    ("relu", [f32(3, 5)], {}),
    ("maxpool2d", [f32(2, 2, 5, 6)], POOL),
    ("avgpool2d", [f32(2, 2, 5, 6)], {**POOL, "count_include_pad": False}),
    ("avgpool2d", [f32(2, 2, 5, 6)], {**POOL, "count_include_pad": True}),
    ("global_avgpool", [f32(2, 3, 3, 4)], {}),
    ("add", [f32(3, 4), f32(4)], {}),
    ("add", [f32(2, 3, 1, 2), f32(3, 4, 1)], {}),
    ("flatten", [f32(2, 3, 2)], {}),
    ("reshape", [f32(2, 6)], {"shape": [3, -1]}),
    ("concat", [f32(2, 3), f32(2, 2)], {"axis": 1}),
    ("softmax", [f32(3, 5)], {}),
    ("mlinear", [f32(3, 6), RNG.random((4, 6)) < 0.5], {"logic": "xor"}),
    ("mconv2d", [f32(1, 2, 5, 5), RNG.random((3, 2, 3, 3)) < 0.5], {"pad": [1, 1, 1, 1], "stride": [2, 2]}),
    # ops of the ONNX frontend's families
    ("leaky_relu", [f32(3, 5)], {"alpha": 0.2}),
    ("prelu", [f32(2, 3, 2, 2), f32(3, 1, 1)], {}),
    # Inputs on a grid at least 0.01 from the bounds: a finite difference across a kink would fail.
    ("clip", [np.linspace(-1.2, 1.3, 15, dtype=np.float32).reshape(3, 5)], {"min": -0.5, "max": 0.7}),
    ("sigmoid", [f32(3, 4)], {}),
    ("tanh", [f32(3, 4)], {}),
    ("log_softmax", [f32(3, 5)], {"axis": 1}),
    ("mul", [f32(2, 3, 4), f32(3, 1)], {}),
    ("global_maxpool", [f32(2, 2, 3, 3)], {}),
    ("transpose", [f32(2, 3, 4)], {"perm": [2, 0, 1]}),
    ("pad", [f32(2, 3, 2)], {"pads": [0, 1, 0, 0, 2, 1], "value": 0.5}),
    # dense prediction: transposed convolutions and pixel shuffles
    ("conv_transpose2d", [dense_input(2, 4, 3, 4), dense_input(4, 3, 3, 2), dense_input(6)], TRANSPOSED),
    ("conv_transpose2d", [dense_input(1, 3, 3, 3), dense_input(3, 2, 2, 2)], {"stride": [2, 2]}),
    ("conv_transpose2d", [dense_input(1, 4, 2, 3), dense_input(4, 1, 3, 3), dense_input(4)],
     {"pad": [1, 1, 1, 1], "groups": 4}),
    ("depth_to_space", [dense_input(2, 8, 2, 3)], {"blocksize": 2}),
    ("depth_to_space", [dense_input(1, 18, 2, 2)], {"blocksize": 3, "mode": "CRD"}),
    ("space_to_depth", [dense_input(2, 2, 4, 6)], {"blocksize": 2, "mode": "CRD"}),
    # resizing: bilinear up and down, nearest (a gather: linear in x as well)
    ("resize", [resize_input(2, 3, 4, 5)], {"mode": "linear", "size": [7, 3]}),
    ("resize", [resize_input(1, 2, 3, 3)], {"mode": "linear", "coordinate_transformation_mode": "align_corners",
                                            "size": [5, 4]}),
    ("resize", [resize_input(2, 2, 3, 4)], {"nearest_mode": "ceil", "size": [5, 3]}),
    # slicing in the forward pass (x[:, 0] of an encoder's [CLS] token, Split); drawn by resize_input
    ("slice_axis", [resize_input(2, 5, 3)], {"axis": 1, "start": 0, "stop": 1}),
    ("slice_axis", [resize_input(2, 3, 6)], {"axis": -1, "start": 2, "stop": 5}),
]


@pytest.mark.parametrize("op_name, params, attrs", FLOAT_CASES, ids=[c[0] for c in FLOAT_CASES])
def test_float_rules_match_finite_differences(op_name, params, attrs):
    finite_difference_check(op_name, params, attrs)


def test_batchnorm_statistics_get_no_gradient():
    _, grads = finite_difference_check("batchnorm", [f32(3, 4, 2), f32(4), f32(4), f32(4), np.abs(f32(4)) + 1], {})
    assert set(grads) == {"p0", "p1", "p2"}  # x, scale, bias; not mean, var


def test_mixed_weight_signal_is_product_with_input():
    x, w = f32(3, 6), RNG.random((4, 6)) < 0.5
    m = single_op_trainable("mlinear", [x, w], {"logic": "xor"})
    make_train_step(m, "loss=mse,reduction=sum")
    y = boldc.interpret(m, [], "forward")
    target = f32(*y.shape)
    _, grads = gradients(m, [target])
    dy = 2 * (y.astype(np.float64) - target)
    np.testing.assert_allclose(grads["p1"], -(dy.T @ x), rtol=1e-5, atol=1e-5)  # q = ∓ dyᵀ x (xor: -)


def test_conv_transpose_gradients_match_torch_autograd():
    """conv_transpose2d with asymmetric pads, output padding, dilation and groups: the forward
    and dx, dW, db from @train_step against torch's conv_transpose2d and autograd in double
    (torch pads symmetrically: computed unpadded, with the output padding the crop needs)."""
    x, w, b = dense_input(2, 4, 3, 4), dense_input(4, 3, 3, 2), dense_input(6)
    m = single_op_trainable("conv_transpose2d", [x, w, b], TRANSPOSED)
    make_train_step(m, "loss=mse,reduction=sum")
    y = boldc.interpret(m, [], "forward")
    target = dense_input(*y.shape)
    _, grads = gradients(m, [target])
    pt, pl, pb, pr = TRANSPOSED["pad"]
    extra = [max(0, o - p) for o, p in zip(TRANSPOSED["output_padding"], (pb, pr))]
    tx, tw, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    full = F.conv_transpose2d(tx, tw, None, stride=TRANSPOSED["stride"], output_padding=extra,
                              dilation=TRANSPOSED["dilation"], groups=TRANSPOSED["groups"])
    ty = full[:, :, pt:pt + y.shape[2], pl:pl + y.shape[3]] + tb.view(1, -1, 1, 1)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-6, atol=1e-6)
    ((ty - torch.tensor(target, dtype=torch.float64)) ** 2).sum().backward()
    for name, t in (("p0", tx), ("p1", tw), ("p2", tb)):
        want = t.grad.numpy()
        np.testing.assert_allclose(grads[name], want, rtol=1e-5, atol=1e-5 * np.abs(want).max(), err_msg=f"d/d@{name}")


@pytest.mark.parametrize("mode,align_corners,size", [("nearest", None, (8, 6)), ("nearest", None, (2, 9)),
                                                    ("bilinear", False, (7, 11)), ("bilinear", False, (2, 2)),
                                                    ("bilinear", True, (7, 2)), ("bilinear", True, (1, 5))])
def test_resize_gradient_matches_torch_interpolate(mode, align_corners, size):
    """resize_grad from @train_step against torch autograd of F.interpolate in double: nearest is
    PyTorch's floor(o · in/out) (asymmetric, floor; sizes where its float computation is exact),
    bilinear without align_corners is half_pixel (PyTorch clamps negative coordinates to 0 as the
    op does), with align_corners align_corners."""
    x = resize_input(2, 3, 4, 3)
    coord = {None: "asymmetric", False: "half_pixel", True: "align_corners"}[align_corners]
    attrs = {"mode": "nearest" if mode == "nearest" else "linear", "coordinate_transformation_mode": coord,
             "nearest_mode": "floor", "size": list(size)}
    m = single_op_trainable("resize", [x], attrs)
    make_train_step(m, "loss=mse,reduction=sum")
    y = boldc.interpret(m, [], "forward")
    target = resize_input(*y.shape)
    _, grads = gradients(m, [target])
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ty = F.interpolate(tx, size=size, mode=mode, align_corners=align_corners)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-6, atol=1e-6)
    ((ty - torch.tensor(target, dtype=torch.float64)) ** 2).sum().backward()
    np.testing.assert_allclose(grads["p0"], tx.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_fan_out_sums_with_add():
    """h feeds two layers: its gradient is the sum of both paths, through an explicit add."""
    m = Module()
    fb = FunctionBuilder(m, "forward", [])
    x = m.add_param("x", tensor("f32", 3, 4), f32(3, 4))
    w0 = m.add_param("w0", tensor("f32", 5, 4), f32(5, 4))
    w1 = m.add_param("w1", tensor("f32", 2, 5), f32(2, 5))
    w2 = m.add_param("w2", tensor("f32", 2, 5), f32(2, 5))
    h = fb.op("linear", [x, w0], name="h")
    y = fb.op("add", [fb.op("linear", [h, w1]), fb.op("linear", [h, w2])], name="y")
    fb.ret(y)
    make_train_step(m, "loss=mse,reduction=sum")
    adds = [op for op in m.function("train_step").ops if op.name == "add" and op.results[0].name.startswith("d.h")]
    assert len(adds) == 1
    target = f32(3, 2)
    _, grads = gradients(m, [target])
    # reference: torch autograd
    tx, t0, t1, t2 = (torch.tensor(p.data, dtype=torch.float64, requires_grad=True) for p in (x, w0, w1, w2))
    th = tx @ t0.T
    loss = ((th @ t1.T + th @ t2.T - torch.tensor(target, dtype=torch.float64)) ** 2).sum()
    loss.backward()
    for name, t in (("x", tx), ("w0", t0), ("w1", t1), ("w2", t2)):
        np.testing.assert_allclose(grads[name], t.grad.numpy(), rtol=1e-5, atol=1e-5)


# --- Boolean rules vs docs/method.md §3 ---------------------------------------------------------------

X = np.array([[T, F_, T], [F_, T, T]])
W = np.array([[T, T, F_], [F_, T, T]])
Z = np.array([[1, -2], [0.5, 1]], dtype=np.float32)
G_XOR = np.array([[-3, 1, 3], [0.5, -1.5, -0.5]])
Q_XOR = np.array([[-0.5, 0.5, -1.5], [3, -3, 1]])


def boolean_signals(op_name, x, w, z, attrs, bits="f32"):
    """(g, q) from autodiff for s = op(x, w) with both b1 operands params and the signal
    δLoss/δs = z (mse with reduction sum against the target s - z/2); f32 signals unless
    bits says otherwise (the formulas are compared exactly, without quantization)."""
    m = single_op_trainable(op_name, [x, w], attrs)
    make_train_step(m, f"loss=mse,reduction=sum,signal-bits={bits}")
    s = boldc.interpret(m, [], "forward")
    _, grads = gradients(m, [s - z / 2])
    return grads["p0"], grads["p1"]


@pytest.mark.parametrize("logic, sign", [("xor", 1), ("xnor", -1)])
def test_blinear_hand_case(logic, sign):
    g, q = boolean_signals("blinear", X, W, Z, {"logic": logic})
    np.testing.assert_array_equal(g, sign * G_XOR)
    np.testing.assert_array_equal(q, sign * Q_XOR)


def test_blinear_signals_are_the_spec_formulas():
    x, w = RNG.random((5, 70)) < 0.5, RNG.random((9, 70)) < 0.5
    z = f32(5, 9)
    for logic, sign in (("xnor", 1), ("xor", -1)):
        g, q = boolean_signals("blinear", x, w, z, {"logic": logic})
        np.testing.assert_allclose(g, sign * np.einsum("kj,ji->ki", z, pm(w)), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(q, sign * np.einsum("kj,ki->ji", z, pm(x)), rtol=1e-5, atol=1e-5)


def test_16_bit_signals_are_the_formulas_within_the_rounding_bound():
    """z rounded to 16 bits with a power-of-two scale s <= 2·max|z|/(2^15 − 1): each term is
    off by at most s/2, so a sum of n terms by at most n·max|z|/(2^15 − 1)."""
    x, w = RNG.random((5, 70)) < 0.5, RNG.random((9, 70)) < 0.5
    z = f32(5, 9)
    g, q = boolean_signals("blinear", x, w, z, {"logic": "xnor"}, bits="16")
    step = np.abs(z).max() / (2 ** 15 - 1)
    g_exact, q_exact = np.einsum("kj,ji->ki", z, pm(w)), np.einsum("kj,ki->ji", z, pm(x))
    assert np.abs(g - g_exact).max() <= 9 * step * 1.001 and np.abs(q - q_exact).max() <= 5 * step * 1.001
    assert not np.array_equal(g, g_exact.astype(np.float32))  # it is rounded, not the f32 path


def test_boolean_bias_signal_is_channel_sum():
    bias = np.array([T, F_])
    m = single_op_trainable("blinear", [X, W, bias], {"logic": "xor"})
    make_train_step(m, "loss=mse,reduction=sum")
    s = boldc.interpret(m, [], "forward")
    _, grads = gradients(m, [s - Z / 2])
    np.testing.assert_array_equal(grads["p2"], Z.sum(axis=0))  # q0[j] = Σ_k z[k, j], no logic sign


BCONV_CASES = [
    ({"stride": [2, 1], "pad": [1, 2, 0, 1], "dilation": [1, 2], "groups": 2}, "false", "xnor"),
    ({"stride": [2, 1], "pad": [1, 2, 0, 1], "dilation": [1, 2], "groups": 2}, "neutral", "xor"),
    ({"pad": [1, 1, 1, 1]}, "false", "xor"),
    ({"stride": [2, 2]}, "false", "xnor"),
]


@pytest.mark.parametrize("geometry, pad_mode, logic", BCONV_CASES)
def test_bconv2d_signals_match_torch(geometry, pad_mode, logic):
    """g = transposed convolution, q = correlation of e(x) (padded with e(F) = -1 or 0) with z."""
    x, w = RNG.random((2, 4, 7, 6)) < 0.5, RNG.random((6, 4 // geometry.get("groups", 1), 3, 3)) < 0.5
    attrs = {**geometry, "pad_mode": pad_mode, "logic": logic}
    s = run_single("bconv2d", [x], [w], attrs)
    z = f32(*s.shape)
    g, q = boolean_signals("bconv2d", x, w, z, attrs)

    tx = torch.tensor(pm(x), requires_grad=True)
    tw = torch.tensor(pm(w), requires_grad=True)
    pt, pl, pb, pr = geometry.get("pad", [0, 0, 0, 0])
    xp = F.pad(tx, (pl, pr, pt, pb), value=-1.0 if pad_mode == "false" else 0.0)
    ts = F.conv2d(xp, tw, stride=geometry.get("stride", [1, 1]), dilation=geometry.get("dilation", [1, 1]),
                  groups=geometry.get("groups", 1)) * (1 if logic == "xnor" else -1)
    np.testing.assert_array_equal(ts.detach().numpy(), s)  # same forward
    (ts * torch.tensor(z, dtype=torch.float64)).sum().backward()
    np.testing.assert_allclose(g, tx.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(q, tw.grad.numpy(), rtol=1e-5, atol=1e-5)


# --- threshold backward ---------------------------------------------------------------------

S = np.arange(-4, 5, dtype=np.int16).reshape(1, 9)
DY = np.linspace(-1, 1, 9, dtype=np.float32).reshape(1, 9)


@pytest.mark.parametrize("mode, deriv", [
    ("tanh", lambda u: 1 - np.tanh(u) ** 2),
    ("box", lambda u: (np.abs(u) <= 1).astype(float)),
    ("bireal", lambda u: np.maximum(0, 2 - 2 * np.abs(u))),
])
def test_threshold_grad_modes(mode, deriv):
    got = run_single("threshold_grad", [DY, S], attrs={"mode": mode, "alpha": 0.5, "tau": 1})
    np.testing.assert_allclose(got, DY * deriv(0.5 * (S - 1.0)), rtol=1e-6, atol=1e-7)


def test_threshold_grad_per_channel_tau_and_direction():
    s = np.array([[3, 3], [0, 0]], dtype=np.int8)
    dy = np.ones((2, 2), dtype=np.float32)
    tau, ge = np.array([2, -1], dtype=np.int8), np.array([T, F_])
    got = run_single("threshold_grad", [dy, s], [tau, ge], {"alpha": 1.0})
    u = s.astype(np.float64) - tau
    np.testing.assert_allclose(got, (1 - np.tanh(u) ** 2) * np.array([1, -1]), rtol=1e-6)


def test_threshold_grad_hand_values():
    got = run_single("threshold_grad", [np.array([[2.0, 2.0, 2.0]], np.float32), np.array([[0, 1, -2]], np.int8)],
                     attrs={"mode": "bireal", "alpha": 0.25})
    assert got.tolist() == [[4.0, 3.0, 2.0]]  # 2 · (2 - 2|u|) for u = 0, 0.25, -0.5


def _threshold_alphas(module):
    return [op.attrs["alpha"] for op in module.function("train_step").ops if op.name == "threshold_grad"]


def test_default_alpha_uses_the_producers_fan_in():
    m = make_train_step(digits_mlp(hidden=(32, 48)))
    # backward order: h1 (after fc1, fan-in 32), then h0 (after fc0, fan-in 64)
    want = [math.pi / (2 * math.sqrt(3 * m_in)) for m_in in (32, 64)]
    assert _threshold_alphas(m) == pytest.approx(want)


def test_fan_in_passes_through_pooling():
    m = Module()
    fb = FunctionBuilder(m, "forward", [("x", tensor("b1", "N", 3, 6, 6))])
    w = m.add_param("w", tensor("b1", 4, 3, 3, 3), RNG.random((4, 3, 3, 3)) < 0.5)
    w2 = m.add_param("w2", tensor("f32", 2, 4 * 2 * 2), f32(2, 16))
    s = fb.op("maxpool2d", [fb.op("bconv2d", [fb.args[0], w])], {"kernel": [2, 2], "stride": [2, 2]})
    h = fb.op("flatten", [fb.op("threshold", [s])])
    fb.ret(fb.op("linear", [h, w2]))
    make_train_step(m, "loss=mse")
    assert _threshold_alphas(m) == pytest.approx([math.pi / (2 * math.sqrt(3 * 27))])


def test_alpha_option_overrides_and_modes_reach_the_ir():
    m = make_train_step(digits_mlp(hidden=(16, 16)), "threshold-grad=box,alpha=0.3")
    ops = [op for op in m.function("train_step").ops if op.name == "threshold_grad"]
    assert {op.attrs["mode"] for op in ops} == {"box"} and _threshold_alphas(m) == [0.3, 0.3]


def test_rescale_option_scales_the_input_signal():
    plain = make_train_step(digits_mlp(hidden=(16, 24)))
    scaled = make_train_step(digits_mlp(hidden=(16, 24)), "rescale=true")

    def scales(module):
        return [op.attrs["scale"] for op in module.function("train_step").ops if op.name == "linear_grad_x"]

    assert scales(plain) == [1.0, 1.0]  # fc2 (float), fc1 (Boolean, xnor)
    assert scales(scaled) == pytest.approx([1.0, math.sqrt(2 / 24)])


# --- structure, options and errors ----------------------------------------------------------


def test_train_step_signature_and_round_trip():
    m = make_train_step(digits_mlp(hidden=(8, 8)))
    fn = m.function("train_step")
    assert [str(a.type) for a in fn.args] == ["f32[N, 64]", "i32[N]"]
    assert fn.declared_result_types()[0] == tensor("f32")
    sinks = [op.operands[0].name for op in fn.ops if op.name == "param_grad"]
    assert sinks == ["fc0.w", "fc0.b", "fc1.w", "fc2.w", "fc2.b"]
    back = roundtrip(m)
    x, y = RNG.random((4, 64)).astype(np.float32), np.array([0, 1, 2, 3], np.int32)
    assert gradients(back, [x, y])[0] == gradients(m, [x, y])[0]


def test_frozen_params_get_no_gradient_and_no_work():
    m = make_train_step(digits_mlp(hidden=(8, 8)), "freeze-float=true")
    fn = m.function("train_step")
    assert [op.operands[0].name for op in fn.ops if op.name == "param_grad"] == ["fc1.w"]
    # nothing computes fc0's or fc2's gradients, nor the signal below fc1
    names = {r.name for op in fn.ops for r in op.results}
    assert not names & {"d.fc0.w", "d.fc0.b", "d.fc2.w", "d.fc2.b", "d.h0", "d.a0"}
    assert {"d.fc1.w", "d.s1", "d.h1"} <= names
    m2 = make_train_step(digits_mlp(hidden=(8, 8)), "frozen=[fc0.*, fc1.w]")
    assert [op.operands[0].name for op in m2.function("train_step").ops if op.name == "param_grad"] == \
        ["fc2.w", "fc2.b"]


def test_mse_and_l1_targets_have_the_prediction_type():
    for loss in ("mse", "l1"):
        m = make_train_step(digits_mlp(hidden=(8,)), f"loss={loss}")
        assert str(m.function("train_step").args[1].type) == "f32[N, 10]"


def _relu_mlp():
    m = Module()
    fb = FunctionBuilder(m, "forward", [("x", tensor("f32", "N", 4))])
    w0 = m.add_param("w0", tensor("f32", 3, 4), f32(3, 4))
    w1 = m.add_param("w1", tensor("f32", 2, 3), f32(2, 3))
    h = fb.op("relu", [fb.op("linear", [fb.args[0], w0])], name="h")
    fb.ret(fb.op("linear", [h, w1], name="y"))
    return m


def test_not_differentiable_op_on_a_needed_path_is_an_error(monkeypatch):
    monkeypatch.setattr(lookup("relu"), "backward", NotDifferentiable("test marker"))
    with pytest.raises(BoldcError, match=r"autodiff: op 'relu' \(%h\).*reach @w0.*test marker"):
        make_train_step(_relu_mlp())


def test_not_differentiable_op_off_the_needed_paths_is_fine(monkeypatch):
    monkeypatch.setattr(lookup("relu"), "backward", NotDifferentiable("test marker"))
    m = make_train_step(_relu_mlp(), "frozen=[w0]")
    assert [op.operands[0].name for op in m.function("train_step").ops if op.name == "param_grad"] == ["w1"]


@pytest.mark.parametrize("options, message", [
    ("loss=relu", "unknown loss 'relu'"),
    ("threshold-grad=sigmoid", "threshold-grad='sigmoid'"),
    ("reduction=max", "reduction='max'"),
])
def test_bad_options(options, message):
    with pytest.raises(BoldcError, match=message):
        make_train_step(digits_mlp(hidden=(8,)), options)


def test_second_autodiff_is_refused():
    m = make_train_step(digits_mlp(hidden=(8,)))
    with pytest.raises(BoldcError, match="already has @train_step"):
        make_train_step(m)


def test_loss_needs_matching_prediction():
    m = Module()  # rank 5: softmax_xent takes logits [N, C, *spatial] with spatial rank 0 to 2
    fb = FunctionBuilder(m, "forward", [("x", tensor("f32", "N", 2, 3, 1, 1))])
    fb.ret(fb.op("relu", [fb.args[0]]))
    with pytest.raises(BoldcError, match="softmax_xent does not apply"):
        make_train_step(m)


def test_every_op_declares_its_training_behaviour():
    from boldc.ops.registry import NotDifferentiable, all_ops
    from boldc.ops.traits import SideEffect

    for d in all_ops().values():
        assert callable(d.backward) or isinstance(d.backward, NotDifferentiable), f"{d.name}: no backward rule"
        names = {o.rstrip("?*") for o in d.operands}
        assert set(d.nondiff_operands) <= names, d.name
        assert set(d.updates) <= names, d.name
        if d.updates:
            assert d.has(SideEffect), f"{d.name} updates params but is not a side effect"
