"""Local response normalization (ONNX LRN, the ``lrn`` op and ``lrn_grad``): the interpreter
against onnxruntime (odd sizes, which onnxruntime takes) and against ONNX's formula written
out here (even sizes, which it refuses), the gradient against finite differences and against
torch's autograd of ``local_response_norm``, and where the Boolean lowering removes it
(between a Boolean layer and its activation) and where it keeps it (docs/convert.md).

The C and the torch engine are checked op by op against the interpreter by the cases of
test_backend_ops.py / train_cases.py (``dense_prediction_cases``) and test_torch_ops.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx import helper

import boldc
from boldc.errors import BoldcError
from boldc.ops.lrn_ops import lrn_denominator
from boldc.ops.registry import lookup

from backend_check import check_all, compile_variant
from onnxgraph import check_against_ort, model, op_names, rand
from trainutil import assert_c_steps_match

N = helper.make_node


def _lrn(x, **attrs):
    return lookup("lrn").evaluate([x], lookup("lrn").normalize_attrs(attrs))[0]


def _lrn_grad(dy, x, **attrs):
    return lookup("lrn_grad").evaluate([dy, x], lookup("lrn_grad").normalize_attrs(attrs))[0]


def _onnx_formula(x, size, alpha, beta, bias):
    """ONNX's definition, channel by channel: square_sum[c] = Σ x[c']² for c' in
    [max(0, c - floor((size-1)/2)), min(C-1, c + ceil((size-1)/2))]."""
    x = x.astype(np.float64)
    out = np.empty_like(x)
    for c in range(x.shape[1]):
        lo = max(0, c - math.floor((size - 1) / 2))
        hi = min(x.shape[1] - 1, c + math.ceil((size - 1) / 2))
        square_sum = (x[:, lo:hi + 1] ** 2).sum(axis=1)
        out[:, c] = x[:, c] / (bias + alpha / size * square_sum) ** beta
    return out


# --- forward ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 3, 5, 7])
@pytest.mark.parametrize("opset", [7, 13, 21])
def test_lrn_matches_onnxruntime(size, opset):
    m = model([N("LRN", ["x"], ["y"], size=size, alpha=0.5, beta=0.9, bias=1.5)], {"x": ["N", 9, 4, 5]}, ["y"],
              opset=opset)
    mod = check_against_ort(m, {"x": rand(2, 9, 4, 5, scale=3)})
    assert op_names(mod) == ["lrn"]
    assert mod.ops()[0].attrs == {"size": size, "alpha": 0.5, "beta": 0.9, "bias": 1.5}


def test_lrn_defaults_match_onnxruntime():
    """alpha 1e-4, beta 0.75, bias 1 (AlexNet's LRN with size 5), on a 3-channel map (the window past both ends)."""
    m = model([N("LRN", ["x"], ["y"], size=5)], {"x": ["N", 3, 6, 6]}, ["y"], opset=13)
    mod = check_against_ort(m, {"x": rand(2, 3, 6, 6, scale=40)})
    assert mod.ops()[0].attrs == {"size": 5, "alpha": 1e-4, "beta": 0.75, "bias": 1.0}


@pytest.mark.parametrize("size", [2, 4, 6, 8])
def test_even_sizes_follow_the_onnx_formula(size):
    """onnxruntime refuses even sizes; ONNX defines them (one channel more after c than
    before), and so does the interpreter."""
    x = rand(3, 7, 2, 3, seed=size, scale=2)
    got = _lrn(x, size=size, alpha=0.7, beta=0.8, bias=1.2)
    want = _onnx_formula(x, size, 0.7, 0.8, 1.2)
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
def test_torch_local_response_norm_is_the_same_for_odd_sizes_and_mirrored_for_even(size):
    """PyTorch's window puts the extra channel of an even size before c: on the channels
    reversed it is ONNX's window (docs/convert.md)."""
    x = rand(2, 8, 3, 3, seed=10 + size, scale=2)
    got = _lrn(x, size=size, alpha=0.4, beta=0.75, bias=1.0)
    t = torch.from_numpy(x).double()
    if size % 2:
        want = F.local_response_norm(t, size, alpha=0.4, beta=0.75, k=1.0)
    else:
        want = F.local_response_norm(t.flip(1), size, alpha=0.4, beta=0.75, k=1.0).flip(1)
        plain = F.local_response_norm(t, size, alpha=0.4, beta=0.75, k=1.0).numpy()
        assert not np.allclose(got, plain, rtol=1e-4)  # the windows do differ
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-6)


def test_lrn_reads_bits_as_signs_and_integers_as_values():
    x = np.random.default_rng(3).random((2, 6, 2, 2)) < 0.5
    np.testing.assert_array_equal(_lrn(x, size=3, alpha=1.0), _lrn(np.where(x, 1.0, -1.0).astype(np.float32),
                                                                    size=3, alpha=1.0))
    s = np.random.default_rng(4).integers(-50, 50, (2, 5, 3)).astype(np.int16)
    np.testing.assert_array_equal(_lrn(s, size=3, alpha=1e-3), _lrn(s.astype(np.float32), size=3, alpha=1e-3))


@pytest.mark.parametrize("attrs,message", [
    ({"size": 0}, "node 'n' \\(LRN\\): size must be a positive number of channels, got 0"),
    ({}, "node 'n' \\(LRN\\): invalid ONNX node: Required attribute 'size' is missing"),
])
def test_bad_lrn_is_one_line_naming_the_node(attrs, message):
    m = model([N("LRN", ["x"], ["y"], name="n", **attrs)], {"x": ["N", 3, 4, 4]}, ["y"], opset=13)
    with pytest.raises(BoldcError, match=message) as err:
        boldc.import_onnx(m)
    assert "\n" not in str(err.value)


# --- backward ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
def test_lrn_grad_matches_finite_differences(size):
    """dx of Σ dy·y, against central differences of the forward in float64."""
    rng = np.random.default_rng(size)
    attrs = lookup("lrn").normalize_attrs({"size": size, "alpha": 0.8, "beta": 0.7, "bias": 1.3})
    x = rng.standard_normal((2, 6, 2, 3))
    dy = rng.standard_normal(x.shape)

    def loss(v):
        return float((dy * v / lrn_denominator(v, attrs) ** attrs["beta"]).sum())

    eps = 1e-6
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        numeric[i] = (loss(x + e) - loss(x - e)) / (2 * eps)
    got = _lrn_grad(dy.astype(np.float32), x.astype(np.float32), **attrs)
    np.testing.assert_allclose(got, numeric, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", [3, 4, 5])
def test_lrn_grad_matches_torch_autograd(size):
    """torch's autograd of local_response_norm (mirrored for an even size, as above)."""
    rng = np.random.default_rng(20 + size)
    x = rng.standard_normal((3, 7, 2, 2)).astype(np.float32) * 2
    dy = rng.standard_normal(x.shape).astype(np.float32)
    t = torch.from_numpy(x).double().requires_grad_(True)
    flip = size % 2 == 0
    y = F.local_response_norm(t.flip(1) if flip else t, size, alpha=0.3, beta=0.75, k=2.0)
    (y.flip(1) if flip else y).backward(torch.from_numpy(dy).double())
    got = _lrn_grad(dy, x, size=size, alpha=0.3, beta=0.75, bias=2.0)
    np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-5, atol=1e-6)


# --- lowering: removed between a Boolean layer and its activation, kept elsewhere -------------


def _alexnet(order: str):
    """conv (float, first) -> [relu, LRN] -> maxpool -> conv -> [relu, LRN] -> maxpool -> conv ->
    [relu, LRN] -> flatten -> gemm (float, last); ``order`` "relu-lrn" (AlexNet's) or "lrn-relu"."""
    nodes, prev = [], "x"
    weights = {}
    for k, (cin, cout) in enumerate([(3, 8), (8, 16), (16, 16)]):
        weights[f"w{k}"] = rand(cout, cin, 3, 3, seed=k)
        nodes.append(N("Conv", [prev, f"w{k}"], [f"c{k}"], pads=[1, 1, 1, 1]))
        first, second = (("Relu", "LRN") if order == "relu-lrn" else ("LRN", "Relu"))
        for j, op in enumerate((first, second)):
            attrs = {"size": 5, "alpha": 1e-2, "beta": 0.75, "bias": 2.0} if op == "LRN" else {}
            nodes.append(N(op, [f"c{k}" if j == 0 else f"a{k}"], [f"a{k}" if j == 0 else f"b{k}"], **attrs))
        prev = f"b{k}"
        if k < 2:
            nodes.append(N("MaxPool", [prev], [f"p{k}"], kernel_shape=[2, 2], strides=[2, 2]))
            prev = f"p{k}"
    weights["g"] = rand(10, 16 * 3 * 3, seed=9)
    nodes += [N("Flatten", [prev], ["f"]), N("Gemm", ["f", "g"], ["y"], transB=1)]
    return model(nodes, {"x": ["N", 3, 12, 12]}, ["y"], weights, opset=13)


def _readers(module, name):
    """(the op producing each LRN's input, what reads its result) in @forward."""
    ops = module.ops("forward")
    producer = {r: op for op in ops for r in op.results}
    out = []
    for op in ops:
        if op.name == name:
            readers = [u.name for u in ops if op.results[0] in u.operands]
            out.append((producer[op.operands[0]].name, op.operands[0].type.dtype.name, readers))
    return out


def test_alexnet_order_keeps_every_lrn_after_its_threshold():
    """conv -> relu -> LRN: each LRN follows the activation, not the layer, so it stays; after a
    Boolean layer's threshold it reads the bits (±1)."""
    m = boldc.convert(_alexnet("relu-lrn"), fuse=False)
    assert _readers(m, "lrn") == [("threshold", "b1", ["maxpool2d"]), ("threshold", "b1", ["maxpool2d"]),
                                  ("threshold", "b1", ["flatten"])]
    assert [op.name for op in m.ops("forward")].count("bconv2d") == 2


def test_lrn_between_a_boolean_layer_and_its_activation_goes():
    """conv -> LRN -> relu: after the float first layer the LRN stays; after the Boolean layers
    it is removed (the activation becomes the threshold of the layer's integers)."""
    onnx_model = _alexnet("lrn-relu")
    m = boldc.convert(onnx_model, fuse=False)
    assert _readers(m, "lrn") == [("conv2d", "f32", ["threshold"])]
    names = [op.name for op in m.ops("forward")]
    assert names.count("bconv2d") == 2 and names.count("bmaxpool2d") == 2
    # keep-bn keeps normalizations, LRN too: between a Boolean layer and its threshold it reads the integers
    kept = boldc.convert(onnx_model, keep_bn=True, fuse=False)
    assert [r[:2] for r in _readers(kept, "lrn")] == [("conv2d", "f32"), ("bconv2d", "i8"), ("bconv2d", "i16")]
    # and the removal is exact: x / d^beta (d > 0) has the sign of x, so the thresholds see the same bits
    x = rand(5, 3, 12, 12, seed=7, scale=2)
    np.testing.assert_array_equal(boldc.interpret(m, x), boldc.interpret(kept, x))


def test_batchnorm_is_still_removed_everywhere():
    """BatchNorm's rule is unchanged: removed after a float layer too (docs/convert.md)."""
    m = model([N("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
               N("BatchNormalization", ["c", "s", "b", "mu", "v"], ["n"]), N("Relu", ["n"], ["r"]),
               N("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1])], {"x": ["N", 3, 6, 6]}, ["y"],
              {"w": rand(4, 3, 3, 3), "w2": rand(2, 4, 3, 3), "s": rand(4) + 2, "b": rand(4), "mu": rand(4),
               "v": np.abs(rand(4)) + 1}, opset=13)
    assert "batchnorm" not in [op.name for op in boldc.convert(m, float_layers="all").ops("forward")]


@pytest.mark.parametrize("order", ["relu-lrn", "lrn-relu"])
def test_lowered_alexnet_runs_in_c_and_on_torch(order):
    m = boldc.convert(_alexnet(order), fuse=False)
    x = rand(6, 3, 12, 12, seed=8, scale=2)
    builds = compile_variant(m, "simd", max_batch=6)
    problems = check_all(m, builds, "forward", [x])
    assert not problems, "; ".join(problems)
    from boldc.torch import to_torch

    got = to_torch(m, train=False).infer(x)
    np.testing.assert_allclose(got, boldc.interpret(m, x), rtol=1e-5, atol=1e-5)


def test_energy_prices_lrn_and_its_gradient():
    """Per element: size + 4 operations forward (docs: the hook's docstring), 2·size + 9 for
    the gradient in a training step."""
    m = boldc.convert(_alexnet("relu-lrn"), fuse=False)
    lrns = [op for op in m.ops("forward") if op.name == "lrn"]
    numel = sum(math.prod(32 if d == "N" else d for d in op.results[0].type.shape) for op in lrns)
    report = boldc.energy(m, batch=32, fuse=False)
    assert sum(r.arith_ops for r in report.rows if r.opname == "lrn") == numel * (5 + 4)
    train = boldc.energy(m, batch=32, phase="training", fuse=False)
    rows = [r for r in train.rows if r.opname == "lrn"]  # the gradient is reported under its op
    assert sum(r.arith_ops for r in rows if r.label == "forward") == numel * (5 + 4)
    assert sum(r.arith_ops for r in rows if r.label == "signal") == numel * (2 * 5 + 9)


def test_training_steps_through_lrn_match_the_interpreter():
    """Three C training steps of the lowered AlexNet-style model (lrn_grad of the float first
    layer's maps) against the interpreter."""
    rng = np.random.default_rng(5)
    batches = [(rand(8, 3, 12, 12, seed=30 + k, scale=2), rng.integers(0, 10, 8).astype(np.int32)) for k in range(3)]
    ref = assert_c_steps_match(boldc.convert(_alexnet("lrn-relu")), batches, max_batch=8, eta=10.0, total_steps=3,
                               lr=3e-3)
    assert "lrn_grad" in [op.name for op in ref.ops("train_step")]


@pytest.mark.parametrize("bias, alpha", [(0.0, 1e-4), (-1.0, 1e-4), (1.0, -0.5)])
def test_lrn_without_a_positive_denominator_is_refused(bias, alpha):
    """bias <= 0 or alpha < 0 lets the denominator reach 0 or below (no sign-keeping, d^beta
    undefined): the import refuses the node in one line instead of lowering a different function."""
    m = model([N("LRN", ["x"], ["y"], size=3, alpha=alpha, beta=0.75, bias=bias, name="norm1")],
              {"x": ["N", 4, 3, 3]}, ["y"])
    with pytest.raises(BoldcError, match="bias > 0 and alpha >= 0") as info:
        boldc.import_onnx(m)
    assert "\n" not in str(info.value) and "norm1" in str(info.value)
