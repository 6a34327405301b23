"""The example models: the float import equals onnxruntime (1e-4 relative), and the
shipped digits models are what the example script describes."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from onnx import helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import boldc

from onnxgraph import EXAMPLES, check_against_ort, example_input, example_model, model, ort_run, rand, rel_error

MODELS = ["digits_mlp", "digits_cnn", "vgg_small", "resnet18"]


@pytest.mark.parametrize("name", MODELS)
def test_float_import_equals_onnxruntime(name):
    m = example_model(name)
    module = boldc.import_onnx(m)
    batch = 1 if name == "resnet18" else 4  # ResNet-18 at 224x224 through numpy: once
    x = example_input(name, batch)
    got = boldc.interpret(module, x)
    (want,) = ort_run(m, {"x": x})
    assert rel_error(got, want) <= 1e-4
    assert module.function().args[0].type.shape[0] == "N"  # the dynamic batch stays symbolic


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_shipped_digits_models_are_small_and_accurate(name):
    path = EXAMPLES / f"{name}.onnx"
    assert path.stat().st_size < 2_000_000
    x, y = load_digits(return_X_y=True)
    _, x_te, _, y_te = train_test_split(x.astype(np.float32), y, test_size=0.25, stratify=y, random_state=0)
    if name == "digits_cnn":
        x_te = x_te.reshape(-1, 1, 8, 8)
    logits = boldc.interpret(boldc.import_onnx(path), x_te)  # raw pixels 0..16, as documented
    assert (logits.argmax(1) == y_te).mean() > 0.9


@pytest.mark.parametrize("name", ["vgg_small", "resnet18"])
def test_large_model_structure(name):
    ops = [op.name for op in boldc.import_onnx(example_model(name)).ops()]
    convs = 6 if name == "vgg_small" else 20  # ResNet-18: stem, 16 block convs, 3 downsample convs
    assert ops.count("conv2d") == convs
    assert ops.count("batchnorm") == convs + (1 if name == "vgg_small" else 0)
    if name == "resnet18":
        assert ops.count("add") == 8 and ops.count("global_avgpool") == 1


@pytest.mark.parametrize("opset", [9, 11, 13, 15, 18, 20])
def test_torch_exports_across_opsets(opset):
    """The digits CNN and MLP (untrained, random BatchNorm statistics) exported by torch at
    several opsets import to the same function onnxruntime computes."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        from onnx_export import export_onnx
        from torch_models import DigitsCNN, DigitsMLP
    finally:
        sys.path.remove(str(EXAMPLES))
    torch.manual_seed(opset)
    for net, shape, name in ((DigitsCNN(), (1, 1, 8, 8), "digits_cnn"), (DigitsMLP(), (1, 64), "digits_mlp")):
        with torch.no_grad():
            for mod in net.modules():
                if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                    mod.running_mean.normal_(0, 0.5)
                    mod.running_var.uniform_(0.5, 2.0)
        m = export_onnx(net, shape, opset=opset)
        x = example_input(name, 5)
        (want,) = ort_run(m, {"x": x})
        assert rel_error(boldc.interpret(boldc.import_onnx(m), x), want) <= 1e-4


@pytest.mark.parametrize("opset", range(7, 22))
def test_cnn_block_graph_at_every_opset(opset):
    """Conv, BatchNormalization, Relu, MaxPool, AveragePool, GlobalAveragePool, Flatten, Gemm,
    Softmax written by hand at each opset 7..21."""
    c = 4
    bn = {k: np.abs(rand(c, seed=i)) + 0.2 for i, k in enumerate(("s", "b", "m", "v"))}
    inits = {"w": rand(c, 3, 3, 3, seed=9), "wb": rand(c, seed=8), "fc": rand(10, c * 4, seed=7),
             "fcb": rand(10, seed=6), **bn}
    nodes = [helper.make_node("Conv", ["x", "w", "wb"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["a", "s", "b", "m", "v"], ["n"]),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("AveragePool", ["p"], ["q"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["p"], ["g"]),
             helper.make_node("Flatten", ["q"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["l"], transB=1),
             helper.make_node("Softmax", ["l"], ["y"], axis=1),
             helper.make_node("Flatten", ["g"], ["z"])]
    m = model(nodes, {"x": ["N", 3, 8, 8]}, ["y", "z"], inits, opset)
    check_against_ort(m, {"x": rand(3, 3, 8, 8)})
