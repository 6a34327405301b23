"""lower-boolean (boldc.convert): properties of the lowered IR on the example models and
on small graphs, and its semantics against an independent ±1 computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx import helper

import boldc
from boldc.errors import BoldcError
from boldc.interp import run
from boldc.ops.registry import lookup
from boldc.ops.traits import Boolean, Layer

from onnxgraph import example_input, example_model, model, op_names, rand


def convert_unfused(*args, **options):
    """boldc.convert without fusion: these tests look at the lowered ops themselves."""
    return boldc.convert(*args, fuse=False, **options)


N = helper.make_node
MODELS = ["digits_mlp", "digits_cnn", "vgg_small", "resnet18"]


def arithmetic(module):
    return [op for op in module.ops() if lookup(op.name).has(Layer)]


def is_boolean(op) -> bool:
    return lookup(op.name).has(Boolean)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("keep_bn", [False, True])
def test_lowered_example_models(name, keep_bn):
    m = example_model(name)
    float_ir = boldc.import_onnx(m)
    low = convert_unfused(m, keep_bn=keep_bn)
    ops = op_names(low)
    assert "relu" not in ops
    assert ops.count("batchnorm") == (op_names(float_ir).count("batchnorm") if keep_bn else 0)
    layers = arithmetic(low)
    assert len(layers) == len(arithmetic(float_ir))
    assert not is_boolean(layers[0]) and not is_boolean(layers[-1])
    assert all(is_boolean(op) for op in layers[1:-1])
    assert all(op.operands[0].type.dtype.is_bool for op in layers[1:-1])  # every Boolean layer reads bits
    # the float layers keep their f32 weights; Boolean ones have b1 weights of the same name
    assert layers[0].operands[1].type.dtype.is_float and layers[-1].operands[1].type.dtype.is_float
    for op in layers[1:-1]:
        p = op.operands[1]
        assert p.type.dtype.is_bool and p.name in float_ir.params and p.attrs == {"init": "sign"}
    again = boldc.parse(boldc.dumps(low))  # verifies and round-trips with the weights
    assert boldc.dumps(again) == boldc.dumps(low)
    if name != "resnet18":  # ResNet-18 runs through the interpreter below
        x = example_input(name, 3)
        y = boldc.interpret(low, x)
        assert y.shape == (3, 10) and np.isfinite(y).all()


def test_resnet18_residual_adds_and_downsample():
    low = convert_unfused(example_model("resnet18"))
    adds = [op for op in low.ops() if op.name == "add"]
    assert len(adds) == 8
    for op in adds:
        kinds = sorted("b1" if v.type.dtype.is_bool else "int" for v in op.operands)
        assert kinds in (["b1", "int"], ["int", "int"])  # identity shortcut enters as e(b)
        assert op.results[0].type.dtype.is_int
    assert sum(1 for op in adds if all(v.type.dtype.is_int for v in op.operands)) == 3  # the downsample blocks
    assert [op.name for op in low.ops()].count("bmaxpool2d") == 1
    y = boldc.interpret(low, example_input("resnet18", 1))
    assert y.shape == (1, 1000) and np.isfinite(y).all()


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn", "vgg_small"])
def test_sign_init_bits(name):
    m = example_model(name)
    float_ir = boldc.import_onnx(m)
    for logic in ("xnor", "xor"):
        low = convert_unfused(m, logic=logic)
        for op in arithmetic(low)[1:-1]:
            assert op.attrs["logic"] == logic
            w = float_ir.params[op.operands[1].name].data
            want = w >= 0 if logic == "xnor" else w < 0
            assert np.array_equal(op.operands[1].data, want)
            if len(op.operands) > 2:  # the bias enters as e(w0), whatever the logic
                assert np.array_equal(op.operands[2].data, float_ir.params[op.operands[2].name].data >= 0)


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_xor_with_sign_init_computes_what_xnor_does(name):
    m = example_model(name)
    x = example_input(name, 8)
    a = boldc.interpret(convert_unfused(m, logic="xnor"), x)
    b = boldc.interpret(convert_unfused(m, logic="xor"), x)
    assert np.array_equal(a, b)


def test_random_init_is_seeded():
    m = example_model("digits_cnn")

    def bits(seed):
        low = convert_unfused(m, init="random", seed=seed)
        return [op.operands[1] for op in arithmetic(low)[1:-1]]

    a, b, c = bits(1), bits(1), bits(2)
    assert all(np.array_equal(p.data, q.data) for p, q in zip(a, b))
    assert not all(np.array_equal(p.data, q.data) for p, q in zip(a, c))
    assert a[0].attrs == {"init": "random", "seed": 1}
    frac = np.mean(np.concatenate([p.data.ravel() for p in a]))
    assert 0.45 < frac < 0.55


def test_float_layer_selection():
    m = example_model("digits_mlp")
    names = [op.operands[1].name for op in arithmetic(boldc.import_onnx(m))]

    def kinds(float_layers):
        return ["B" if is_boolean(op) else "f" for op in arithmetic(convert_unfused(m, float_layers=float_layers))]

    assert kinds(None) == ["f", "B", "B", "f"]
    assert kinds("none") == ["B", "B", "B", "B"]
    assert kinds("all") == ["f", "f", "f", "f"]
    assert kinds(["first"]) == ["f", "B", "B", "B"]
    assert kinds("0,2") == ["f", "B", "f", "B"]
    assert kinds("-1") == ["B", "B", "B", "f"]
    assert kinds([names[1]]) == ["B", "f", "B", "B"]
    with pytest.raises(BoldcError, match="unknown float layer 'fc9'.*body.0.weight"):
        convert_unfused(m, float_layers="fc9")
    with pytest.raises(BoldcError, match="index 7 is out of range"):
        convert_unfused(m, float_layers="7")


def test_all_boolean_thresholds_the_input_and_casts_for_float_ops():
    w1, w2 = rand(8, 5, seed=1), rand(8, 3, seed=2)
    m = model([N("Gemm", ["x", "w1"], ["a"], transB=1), N("Relu", ["a"], ["h"]),
               N("Gemm", ["h", "w2"], ["s"]), N("Softmax", ["s"], ["y"], axis=1)],
              {"x": ["N", 5]}, ["y"], {"w1": w1, "w2": w2}, 13)
    low = convert_unfused(m, float_layers="none")
    assert op_names(low) == ["threshold", "blinear", "threshold", "blinear", "cast", "softmax"]
    y = boldc.interpret(low, rand(4, 5))
    assert np.allclose(y.sum(1), 1.0, atol=1e-6)


def test_activation_in_a_float_part_stays():
    """A sigmoid after the last (float) layer is an output activation, not a neuron's."""
    ws = [rand(6, 6, seed=i) for i in range(3)]
    m = model([N("MatMul", ["x", "w0"], ["a"]), N("Tanh", ["a"], ["h"]), N("MatMul", ["h", "w1"], ["b"]),
               N("LeakyRelu", ["b"], ["g"]), N("MatMul", ["g", "w2"], ["c"]), N("Sigmoid", ["c"], ["y"])],
              {"x": ["N", 6]}, ["y"], {f"w{i}": w for i, w in enumerate(ws)}, 13)
    assert op_names(convert_unfused(m)) == ["linear", "threshold", "blinear", "threshold", "linear", "sigmoid"]
    assert op_names(convert_unfused(m, float_layers="all")) == op_names(boldc.import_onnx(m))


def test_maxpool_before_the_activation_stays_integer():
    w = [rand(4, 4, 3, 3, seed=i) for i in range(2)] + [rand(4, 4, 1, 1, seed=2)]
    m = model([N("Conv", ["x", "w0"], ["a"], pads=[1, 1, 1, 1]), N("Relu", ["a"], ["r"]),
               N("Conv", ["r", "w1"], ["b"], pads=[1, 1, 1, 1]), N("MaxPool", ["b"], ["p"], kernel_shape=[2, 2],
                                                                      strides=[2, 2]),
               N("Relu", ["p"], ["q"]), N("MaxPool", ["q"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
               N("Conv", ["p2", "w2"], ["y"])],
              {"x": ["N", 4, 8, 8]}, ["y"], {f"w{i}": a for i, a in enumerate(w)}, 13)
    low = convert_unfused(m)
    assert op_names(low) == ["conv2d", "threshold", "bconv2d", "maxpool2d", "threshold", "bmaxpool2d", "conv2d"]
    assert low.ops()[3].results[0].type.dtype.is_int


def test_transposed_convolution_stays_float_and_is_not_a_counted_layer():
    """conv_transpose2d has no Boolean form: `last` selects the conv after it, its b1 input is cast
    to ±1, and the ReLU after it stays (the search for a Boolean layer stops at it)."""
    w = [rand(4, 3, 3, 3, seed=0), rand(4, 4, 3, 3, seed=1), rand(4, 2, 2, 2, seed=2), rand(3, 2, 1, 1, seed=3)]
    m = model([N("Conv", ["x", "w0"], ["a"], pads=[1, 1, 1, 1]), N("Relu", ["a"], ["r"]),
               N("Conv", ["r", "w1"], ["b"], pads=[1, 1, 1, 1]), N("Relu", ["b"], ["s"]),
               N("ConvTranspose", ["s", "w2"], ["u"], strides=[2, 2]), N("Relu", ["u"], ["v"]),
               N("Conv", ["v", "w3"], ["y"])],
              {"x": ["N", 3, 4, 4]}, ["y"], {f"w{i}": a for i, a in enumerate(w)}, 13)
    low = convert_unfused(m)
    assert op_names(low) == ["conv2d", "threshold", "bconv2d", "threshold", "cast", "conv_transpose2d", "relu",
                             "conv2d"]
    assert [op.name for op in arithmetic(low)] == ["conv2d", "bconv2d", "conv2d"]
    assert low.ops()[5].operands[1].type.dtype.is_float
    assert op_names(convert_unfused(m, float_layers="all")) == op_names(boldc.import_onnx(m))
    y = boldc.interpret(low, rand(2, 3, 4, 4))
    assert y.shape == (2, 3, 8, 8) and np.isfinite(y).all()


def test_dropout_and_identity_are_removed():
    w = rand(4, 4, seed=1)
    m = model([N("Dropout", ["x"], ["d"]), N("MatMul", ["d", "w"], ["a"]), N("Identity", ["a"], ["y"])],
              {"x": ["N", 4]}, ["y"], {"w": w}, 13)
    assert op_names(convert_unfused(m, float_layers="all")) == ["linear"]


def test_boolean_conv_semantics_against_torch():
    """The middle layer of conv-relu-conv-relu-conv computes, on the bits of the first
    layer's output, the ±1 convolution with sign(W) (padding with F = -1), plus e(sign(b))."""
    w0, w1, w2 = rand(6, 3, 3, 3, seed=1), rand(5, 6, 3, 3, seed=2), rand(2, 5, 1, 1, seed=3)
    b1 = rand(5, seed=4)
    m = model([N("Conv", ["x", "w0"], ["a"], pads=[1, 1, 1, 1]), N("Relu", ["a"], ["r"]),
               N("Conv", ["r", "w1", "b1"], ["s"], pads=[1, 1, 1, 1], strides=[2, 2]), N("Relu", ["s"], ["q"]),
               N("Conv", ["q", "w2"], ["y"])],
              {"x": ["N", 3, 7, 7]}, ["y"], {"w0": w0, "w1": w1, "w2": w2, "b1": b1}, 13)
    low = convert_unfused(m)
    x = rand(2, 3, 7, 7)
    env = run(low, low.function(), [x])
    first, bconv = low.ops()[0], low.ops()[2]
    assert bconv.name == "bconv2d"
    a = torch.from_numpy(env[first.results[0]])
    bits = torch.where(a >= 0, 1.0, -1.0)
    padded = F.pad(bits, (1, 1, 1, 1), value=-1.0)  # pad_mode "false": F bits
    want = F.conv2d(padded, torch.from_numpy(np.where(w1 >= 0, 1.0, -1.0).astype(np.float32)), stride=2)
    want += torch.from_numpy(np.where(b1 >= 0, 1.0, -1.0).astype(np.float32)).reshape(1, -1, 1, 1)
    assert np.array_equal(env[bconv.results[0]], want.numpy().astype(np.int16))


def test_pass_option_errors():
    m = example_model("digits_mlp")
    with pytest.raises(BoldcError, match="logic must be one of xnor, xor"):
        convert_unfused(m, logic="and")
    with pytest.raises(BoldcError, match="init must be one of sign, random"):
        convert_unfused(m, init="zeros")


def test_global_maxpool_of_bits_is_their_or():
    w0, w1, fc = rand(4, 3, 3, 3, seed=1), rand(6, 4, 3, 3, seed=2), rand(5, 6, seed=3)
    m = model([N("Conv", ["x", "w0"], ["a"]), N("Relu", ["a"], ["r"]), N("Conv", ["r", "w1"], ["b"]),
               N("Relu", ["b"], ["q"]), N("GlobalMaxPool", ["q"], ["g"]), N("Flatten", ["g"], ["f"]),
               N("Gemm", ["f", "fc"], ["y"], transB=1)],
              {"x": ["N", 3, 7, 7]}, ["y"], {"w0": w0, "w1": w1, "fc": fc}, 13)
    low = convert_unfused(m)
    assert op_names(low) == ["conv2d", "threshold", "bconv2d", "threshold", "global_maxpool", "flatten", "linear"]
    env = run(low, low.function(), [rand(3, 3, 7, 7)])
    bits, pooled = (env[low.ops()[i].results[0]] for i in (3, 4))
    assert pooled.dtype == np.bool_ and np.array_equal(pooled[:, :, 0, 0], bits.any(axis=(2, 3)))


def test_pipeline_spelling_and_training_functions():
    from boldc.passes import PassManager

    m = boldc.import_onnx(example_model("digits_mlp"))
    PassManager("lower-boolean{float-layers=[none],logic=xor},fold-bn").run(m)
    assert sum(1 for op in arithmetic(m) if is_boolean(op)) == 4
    m = boldc.import_onnx(example_model("digits_mlp"))
    m.functions["train_step"] = m.functions["forward"]
    with pytest.raises(BoldcError, match="also has @train_step"):
        PassManager("lower-boolean").run(m)
