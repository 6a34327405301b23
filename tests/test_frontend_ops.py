"""ONNX import, op by op: interpret(import_onnx(m)) equals onnxruntime within 1e-4 relative.

Graphs are built with onnx.helper; opsets run over 7..21 where the op's form changes.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import boldc

from onnxgraph import check_against_ort, model, op_names, rand, rel_error

N = helper.make_node
ALL_OPSETS = list(range(7, 22))


# --- convolutions ----------------------------------------------------------------------------


@pytest.mark.parametrize("group,cin,cout", [(1, 4, 6), (2, 4, 6), (4, 4, 8), (6, 6, 6)])  # 6/6: depthwise
@pytest.mark.parametrize("opset", [7, 11, 13, 21])
def test_conv_groups(group, cin, cout, opset):
    w = rand(cout, cin // group, 3, 3, seed=1)
    b = rand(cout, seed=2)
    m = model([N("Conv", ["x", "w", "b"], ["y"], group=group, pads=[1, 0, 2, 1], strides=[1, 2])],
              {"x": ["N", cin, 9, 10]}, ["y"], {"w": w, "b": b}, opset)
    mod = check_against_ort(m, {"x": rand(2, cin, 9, 10)})
    assert op_names(mod) == ["conv2d"]


# onnxruntime refuses dilations with SAME padding, so dilated cases use VALID and explicit pads.
@pytest.mark.parametrize("auto_pad,stride,dilation", [
    ("SAME_UPPER", 1, 1), ("SAME_UPPER", 2, 1), ("SAME_UPPER", 3, 1), ("SAME_LOWER", 1, 1), ("SAME_LOWER", 2, 1),
    ("SAME_LOWER", 3, 1), ("VALID", 1, 1), ("VALID", 2, 2), ("VALID", 3, 2), ("NOTSET", 2, 3)])
def test_conv_auto_pad_dilation(auto_pad, stride, dilation):
    w = rand(5, 3, 3, 4, seed=3)  # non-square kernel: even width
    pads = {"pads": [2, 1, 0, 3]} if auto_pad == "NOTSET" else {}
    m = model([N("Conv", ["x", "w"], ["y"], auto_pad=auto_pad, strides=[stride, stride],
                 dilations=[dilation, dilation], **pads)], {"x": [2, 3, 11, 12]}, ["y"], {"w": w}, 13)
    check_against_ort(m, {"x": rand(2, 3, 11, 12)})


def test_zero_pad_before_conv_becomes_conv_padding():
    w = rand(4, 3, 3, 3, seed=1)
    pads = np.array([0, 0, 1, 2, 0, 0, 2, 1], dtype=np.int64)
    m = model([N("Pad", ["x", "pads"], ["p"]), N("Conv", ["p", "w"], ["y"], pads=[1, 1, 0, 0])],
              {"x": ["N", 3, 8, 8]}, ["y"], {"w": w, "pads": pads}, 13)
    mod = check_against_ort(m, {"x": rand(2, 3, 8, 8)})
    assert op_names(mod) == ["conv2d"]
    assert mod.ops()[0].attrs["pad"] == [2, 3, 2, 1]


# --- pooling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ceil_mode", [0, 1])
@pytest.mark.parametrize("kernel,stride,pads", [([3, 3], [2, 2], [0, 0, 0, 0]), ([2, 3], [2, 1], [1, 1, 0, 1]),
                                                ([3, 3], [3, 3], [1, 1, 1, 1])])
def test_maxpool(ceil_mode, kernel, stride, pads):
    m = model([N("MaxPool", ["x"], ["y"], kernel_shape=kernel, strides=stride, pads=pads, ceil_mode=ceil_mode)],
              {"x": ["N", 3, 10, 11]}, ["y"], opset=12)
    check_against_ort(m, {"x": rand(2, 3, 10, 11)})


@pytest.mark.parametrize("opset", [7, 8, 10, 12, 21])
def test_maxpool_across_opsets(opset):
    attrs = {"dilations": [2, 1]} if opset >= 10 else {}
    m = model([N("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], pads=[1, 0, 1, 0], **attrs)],
              {"x": ["N", 2, 7, 7]}, ["y"], opset=opset)
    check_against_ort(m, {"x": rand(3, 2, 7, 7)})


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("ceil_mode", [0, 1])
@pytest.mark.parametrize("pads", [[0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 0, 1]])
def test_avgpool(count_include_pad, ceil_mode, pads):
    m = model([N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=pads,
                 count_include_pad=count_include_pad, ceil_mode=ceil_mode)],
              {"x": ["N", 3, 10, 9]}, ["y"], opset=11)
    check_against_ort(m, {"x": rand(2, 3, 10, 9)})


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pool_auto_pad(auto_pad, op):
    m = model([N(op, ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], auto_pad=auto_pad)],
              {"x": [1, 2, 9, 8]}, ["y"], opset=11)
    check_against_ort(m, {"x": rand(1, 2, 9, 8)})


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pools(op):
    m = model([N(op, ["x"], ["y"])], {"x": ["N", 5, 6, 7]}, ["y"], opset=13)
    check_against_ort(m, {"x": rand(3, 5, 6, 7)})


# --- linear layers ----------------------------------------------------------------------------


@pytest.mark.parametrize("trans_a,trans_b", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("c_shape", [None, [], [6], [1, 6]])
@pytest.mark.parametrize("opset", [7, 9, 11, 13])
def test_gemm(trans_a, trans_b, c_shape, opset):
    if c_shape is None and opset < 11:
        c_shape = [6]  # C is required before opset 11
    b = rand(*([6, 5] if trans_b else [5, 6]), seed=1)
    inits = {"b": b}
    ins = ["a", "b"]
    if c_shape is not None:
        inits["c"] = rand(*c_shape, seed=2)
        ins.append("c")
    m = model([N("Gemm", ins, ["y"], transA=trans_a, transB=trans_b, alpha=0.5, beta=2.0)],
              {"a": [5, 4] if trans_a else [4, 5]}, ["y"], inits, opset)
    mod = check_against_ort(m, {"a": rand(*([5, 4] if trans_a else [4, 5]))})
    assert "linear" in op_names(mod)


def test_matmul_add_becomes_linear_with_bias():
    w, b = rand(5, 7, seed=1), rand(7, seed=2)
    m = model([N("MatMul", ["x", "w"], ["h"]), N("Add", ["h", "b"], ["y"])],
              {"x": ["N", 3, 5]}, ["y"], {"w": w, "b": b}, 13)
    mod = check_against_ort(m, {"x": rand(2, 3, 5)})
    assert op_names(mod) == ["linear"] and len(mod.ops()[0].operands) == 3


def test_conv_add_channel_bias_is_fused():
    w, b = rand(4, 3, 1, 1, seed=1), rand(1, 4, 1, 1, seed=2)
    m = model([N("Conv", ["x", "w"], ["h"]), N("Add", ["b", "h"], ["y"])],
              {"x": ["N", 3, 5, 5]}, ["y"], {"w": w, "b": b}, 13)
    mod = check_against_ort(m, {"x": rand(2, 3, 5, 5)})
    assert op_names(mod) == ["conv2d"]


def test_add_used_twice_is_not_fused():
    w, b = rand(5, 7, seed=1), rand(7, seed=2)
    m = model([N("MatMul", ["x", "w"], ["h"]), N("Add", ["h", "b"], ["y"]), N("Relu", ["h"], ["z"])],
              {"x": ["N", 5]}, ["y", "z"], {"w": w, "b": b}, 13)
    mod = check_against_ort(m, {"x": rand(2, 5)})
    assert op_names(mod) == ["linear", "add", "relu"]


# --- elementwise and residual ------------------------------------------------------------------


@pytest.mark.parametrize("opset", [7, 13, 14, 21])
def test_elementwise_with_constants(opset):
    c = rand(4, 1, 1, seed=1)
    d = np.abs(rand(1, 4, 1, 1, seed=2)) + 0.5
    m = model([N("Sub", ["x", "c"], ["a"]), N("Sub", ["c", "a"], ["b"]), N("Mul", ["b", "x"], ["m"]),
               N("Div", ["m", "d"], ["q"]), N("Sub", ["q", "x"], ["r"]),
               # Sum broadcasts from opset 8 (onnxruntime refuses it at 7)
               N("Sum", ["r", "x", "c"] if opset >= 8 else ["r", "x", "r"], ["y"])],
              {"x": ["N", 4, 3, 3]}, ["y"], {"c": c, "d": d}, opset)
    check_against_ort(m, {"x": rand(2, 4, 3, 3)})


def test_residual_and_concat():
    w1, w2 = rand(4, 4, 3, 3, seed=1), rand(4, 4, 1, 1, seed=2)
    m = model([N("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]), N("Relu", ["a"], ["r"]),
               N("Conv", ["r", "w2"], ["b"]), N("Add", ["b", "x"], ["s"]), N("Relu", ["s"], ["t"]),
               N("Concat", ["t", "x", "r"], ["y"], axis=1)],
              {"x": ["N", 4, 6, 6]}, ["y"], {"w1": w1, "w2": w2}, 13)
    mod = check_against_ort(m, {"x": rand(2, 4, 6, 6)})
    assert op_names(mod).count("add") == 1 and "concat" in op_names(mod)


# --- normalization and activations --------------------------------------------------------------


@pytest.mark.parametrize("opset", [7, 9, 14, 15, 21])
def test_batchnorm(opset):
    c = 5
    inits = {"s": rand(c, seed=1), "b": rand(c, seed=2), "m": rand(c, seed=3),
             "v": np.abs(rand(c, seed=4)) + 0.1}
    m = model([N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)],
              {"x": ["N", c, 4, 4]}, ["y"], inits, opset)
    check_against_ort(m, {"x": rand(3, c, 4, 4)})


@pytest.mark.parametrize("onnx_momentum, ir_momentum", [(None, 0.1), (0.8, 0.2), (0.99, 0.01), (1.0, 0.0)])
def test_batchnorm_momentum_becomes_the_weight_of_the_batch_statistics(onnx_momentum, ir_momentum):
    """ONNX: running = momentum·running + (1 - momentum)·batch; the IR (PyTorch's convention)
    weighs the batch: the IR's momentum is 1 - ONNX's."""
    import boldc

    c = 3
    inits = {"s": rand(c, seed=1), "b": rand(c, seed=2), "m": rand(c, seed=3), "v": np.abs(rand(c, seed=4)) + 0.1}
    attrs = {} if onnx_momentum is None else {"momentum": onnx_momentum}
    m = model([N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], **attrs)], {"x": ["N", c, 4, 4]}, ["y"],
              inits, 15)
    bn = next(op for op in boldc.import_onnx(m).function("forward").ops if op.name == "batchnorm")
    assert bn.attrs["momentum"] == ir_momentum


@pytest.mark.parametrize("node", [
    N("Relu", ["x"], ["y"]), N("LeakyRelu", ["x"], ["y"]), N("LeakyRelu", ["x"], ["y"], alpha=0.2),
    N("Sigmoid", ["x"], ["y"]), N("Tanh", ["x"], ["y"]), N("PRelu", ["x", "slope"], ["y"]),
    N("Identity", ["x"], ["y"]), N("Dropout", ["x"], ["y"]),
], ids=lambda n: f"{n.op_type}{len(n.attribute)}")
@pytest.mark.parametrize("opset", [7, 13, 21])
def test_activations(node, opset):
    m = model([node], {"x": ["N", 3, 4, 4]}, ["y"], {"slope": rand(3, 1, 1, seed=5)} if "slope" in node.input
              else {}, opset)
    check_against_ort(m, {"x": rand(2, 3, 4, 4, scale=5.0)})


@pytest.mark.parametrize("opset", ALL_OPSETS)
@pytest.mark.parametrize("lo,hi", [(-1.0, 1.0), (0.0, 6.0), (None, 0.5), (-0.5, None)])
def test_clip(opset, lo, hi):
    if opset < 11:
        attrs = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}
        m = model([N("Clip", ["x"], ["y"], **attrs)], {"x": ["N", 8]}, ["y"], opset=opset)
    else:
        inits, ins = {}, ["x", "", ""]
        if lo is not None:
            inits["lo"], ins[1] = np.array(lo, np.float32), "lo"
        if hi is not None:
            inits["hi"], ins[2] = np.array(hi, np.float32), "hi"
        m = model([N("Clip", [i for i in ins if i] if hi is None else ins, ["y"])], {"x": ["N", 8]}, ["y"],
                  inits, opset)
    check_against_ort(m, {"x": rand(4, 8, scale=3.0)})


@pytest.mark.parametrize("opset", [7, 11, 13, 21])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("shape,axis", [([3, 10], None), ([2, 3, 4, 5], 1), ([2, 3, 4, 5], -1), ([2, 3, 4, 5], 2)])
def test_softmax(opset, op, shape, axis):
    attrs = {} if axis is None else {"axis": axis}
    shape = ["N", *shape[1:]]
    if opset < 13 and axis == 2:
        shape = [2, *shape[1:]]  # coerced 2-D over a static leading part
    m = model([N(op, ["x"], ["y"], **attrs)], {"x": shape}, ["y"], opset=opset)
    check_against_ort(m, {"x": rand(2, *shape[1:], scale=3.0)})


# --- shape ops --------------------------------------------------------------------------------


@pytest.mark.parametrize("opset", ALL_OPSETS)
def test_squeeze_unsqueeze_reshape_flatten_transpose(opset):
    if opset < 13:
        sq = N("Squeeze", ["x"], ["a"], axes=[2])
        un = N("Unsqueeze", ["a"], ["b"], axes=[1, -1] if opset >= 11 else [1, 4])  # negative axes from 11
        inits = {}
    else:
        sq, un = N("Squeeze", ["x", "ax2"], ["a"]), N("Unsqueeze", ["a", "ax"], ["b"])
        inits = {"ax2": np.array([2]), "ax": np.array([1, -1])}
    inits["shape"] = np.array([0, -1, 2], dtype=np.int64)
    nodes = [sq, un, N("Transpose", ["b"], ["t"], perm=[0, 3, 2, 1, 4]), N("Reshape", ["t", "shape"], ["r"]),
             N("Flatten", ["r"], ["y"], axis=1)]
    m = model(nodes, {"x": ["N", 3, 1, 4]}, ["y"], inits, opset)
    mod = check_against_ort(m, {"x": rand(2, 3, 1, 4)})
    assert mod.function().args[0].type.shape[0] == "N"


@pytest.mark.parametrize("opset", [9, 11, 13, 21])
def test_shape_arithmetic_keeps_the_batch_symbolic(opset):
    """x.view(x.size(0), -1) as exporters write it: Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    unsq = N("Unsqueeze", ["n"], ["n1"], axes=[0]) if opset < 13 else N("Unsqueeze", ["n", "zero1"], ["n1"])
    nodes = [N("Shape", ["x"], ["s"]), N("Constant", [], ["zero"], value=helper.make_tensor("z", 7, [], [0])),
             N("Gather", ["s", "zero"], ["n"], axis=0), unsq,
             N("Constant", [], ["minus1"], value=helper.make_tensor("m", 7, [1], [-1])),
             N("Concat", ["n1", "minus1"], ["target"], axis=0), N("Reshape", ["x", "target"], ["y"])]
    m = model(nodes, {"x": ["N", 2, 3, 4]}, ["y"], {"zero1": np.array([0])}, opset)
    mod = check_against_ort(m, {"x": rand(5, 2, 3, 4)})
    assert str(mod.function().returns[0].type) == "f32[N, 24]"


def test_slice_cast_and_generic_folding():
    """Shape -> Slice -> Cast and constant arithmetic (folded by ONNX's reference evaluator)."""
    nodes = [N("Shape", ["x"], ["s"]), N("Slice", ["s", "st", "en"], ["hw"]),
             N("Cast", ["hw"], ["hw64"], to=7), N("Concat", ["head", "hw64"], ["target"], axis=0),
             N("Reshape", ["x", "target"], ["r"]),
             N("Mul", ["w0", "two"], ["w"]), N("MatMul", ["r", "w"], ["y"])]
    inits = {"st": np.array([2]), "en": np.array([4]), "head": np.array([-1, 3], dtype=np.int64),
             "w0": rand(5, 2, seed=3), "two": np.array(2.0, np.float32)}
    m = model(nodes, {"x": ["N", 3, 4, 5]}, ["y"], inits, 13)
    mod = check_against_ort(m, {"x": rand(2, 3, 4, 5)})
    assert op_names(mod) == ["reshape", "linear"]


@pytest.mark.parametrize("opset", [7, 11, 13, 18, 21])
def test_pad(opset):
    pads = [0, 0, 1, 0, 0, 0, 2, 3]
    if opset < 11:
        node, inits = N("Pad", ["x"], ["y"], pads=pads, value=0.5), {}
    elif opset < 18:
        node = N("Pad", ["x", "pads", "v"], ["y"])
        inits = {"pads": np.array(pads, dtype=np.int64), "v": np.array(0.5, np.float32)}
    else:
        node = N("Pad", ["x", "pads", "v", "axes"], ["y"])
        inits = {"pads": np.array([1, 0, 2, 3], dtype=np.int64), "v": np.array(0.5, np.float32),
                 "axes": np.array([2, -1], dtype=np.int64)}
    m = model([node], {"x": ["N", 2, 3, 3]}, ["y"], inits, opset)
    mod = check_against_ort(m, {"x": rand(2, 2, 3, 3)})
    assert op_names(mod) == ["pad"]


def test_constant_of_shape_and_constant_attrs():
    nodes = [N("Constant", [], ["shp"], value_ints=[1, 4]),
             N("ConstantOfShape", ["shp"], ["ones"], value=helper.make_tensor("v", 1, [1], [1.5])),
             N("Constant", [], ["k"], value_float=2.0), N("Mul", ["ones", "k"], ["c"]),
             N("Add", ["x", "c"], ["y"])]
    m = model(nodes, {"x": ["N", 4]}, ["y"], opset=13)
    check_against_ort(m, {"x": rand(3, 4)})


def test_several_inputs_and_outputs():
    m = model([N("Add", ["a", "b"], ["s"]), N("Relu", ["s"], ["y"]), N("Sigmoid", ["a"], ["z"])],
              {"a": ["N", 6], "b": ["N", 6]}, ["y", "z"], opset=13)
    check_against_ort(m, {"a": rand(2, 6, seed=1), "b": rand(2, 6, seed=2)})


def test_unused_nodes_are_ignored():
    """A dead branch (even with an op boldc does not know) is neither converted nor reported."""
    m = model([N("Relu", ["x"], ["y"]), N("Erf", ["x"], ["dead"])], {"x": ["N", 3]}, ["y"], opset=13)
    mod = check_against_ort(m, {"x": rand(2, 3)})
    assert op_names(mod) == ["relu"]


def test_initializers_listed_as_graph_inputs_are_constants():
    # IR < 4 exports and keep_initializers_as_inputs=True list every weight as a graph input too
    from onnx import TensorProto

    nodes = [N("MatMul", ["x", "W"], ["a"]), N("Reshape", ["a", "S"], ["y"])]
    m = model(nodes, {"x": ["N", 4]}, ["y"], {"W": rand(4, 6), "S": np.array([-1, 2, 3], np.int64)}, 13)
    m.graph.input.extend([helper.make_tensor_value_info("W", TensorProto.FLOAT, [4, 6]),
                          helper.make_tensor_value_info("S", TensorProto.INT64, [3])])
    mod = check_against_ort(m, {"x": rand(5, 4)})
    assert [a.name for a in mod.function().args] == ["x"]


@pytest.mark.parametrize("axis,shape", [(-1, [2, 3, 4]), (-3, ["N", 3, 4, 5]), (-2, ["N", 3, 4])])
def test_flatten_negative_axis(axis, shape):
    feed_shape = [2 if isinstance(d, str) else d for d in shape]
    check_against_ort(model([N("Flatten", ["x"], ["y"], axis=axis)], {"x": shape}, ["y"], opset=13),
                      {"x": rand(*feed_shape)})


# --- pixel shuffles and transposed convolutions ------------------------------------------------


@pytest.mark.parametrize("blocksize", [2, 3])
@pytest.mark.parametrize("mode,opset", [(None, 7), ("DCR", 11), ("CRD", 11), ("DCR", 13), ("CRD", 21)])
def test_depth_to_space(blocksize, mode, opset):
    attrs = {} if mode is None else {"mode": mode}  # opset 1's DepthToSpace has no mode: DCR
    c = 2 * blocksize * blocksize
    m = model([N("DepthToSpace", ["x"], ["y"], blocksize=blocksize, **attrs)], {"x": ["N", c, 3, 4]}, ["y"],
              opset=opset)
    mod = check_against_ort(m, {"x": rand(2, c, 3, 4)})
    assert op_names(mod) == ["depth_to_space"] and mod.ops()[0].attrs["mode"] == (mode or "DCR")


@pytest.mark.parametrize("blocksize", [2, 3])
@pytest.mark.parametrize("opset", [7, 13, 21])
def test_space_to_depth(blocksize, opset):
    m = model([N("SpaceToDepth", ["x"], ["y"], blocksize=blocksize)], {"x": ["N", 3, 2 * blocksize, 3 * blocksize]},
              ["y"], opset=opset)
    mod = check_against_ort(m, {"x": rand(2, 3, 2 * blocksize, 3 * blocksize)})
    assert op_names(mod) == ["space_to_depth"]


def test_space_to_depth_inverts_depth_to_space():
    """SpaceToDepth (DCR, the only mode before opset 28) undoes DepthToSpace DCR exactly."""
    m = model([N("DepthToSpace", ["x"], ["s"], blocksize=2, mode="DCR"), N("SpaceToDepth", ["s"], ["y"], blocksize=2)],
              {"x": ["N", 12, 3, 2]}, ["y"], opset=13)
    x = rand(2, 12, 3, 2)
    mod = check_against_ort(m, {"x": x})
    assert np.array_equal(boldc.interpret(mod, [x]), x)


# (strides, pads, output_padding, dilations) of ConvTranspose
TRANSPOSED = [([1, 1], [0, 0, 0, 0], [0, 0], [1, 1]), ([2, 2], [1, 1, 1, 1], [1, 1], [1, 1]),
              ([3, 3], [0, 1, 2, 0], [2, 1], [1, 1]), ([2, 3], [1, 0, 0, 2], [0, 2], [2, 1]),
              ([3, 2], [2, 2, 1, 1], [1, 0], [3, 2])]


@pytest.mark.parametrize("group,cin,cout", [(1, 4, 6), (2, 4, 6), (4, 4, 4)])  # 4/4: depthwise
@pytest.mark.parametrize("geometry", range(len(TRANSPOSED)))
@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose(group, cin, cout, geometry, bias):
    strides, pads, output_padding, dilations = TRANSPOSED[geometry]
    inits = {"w": rand(cin, cout // group, 3, 2, seed=1)}
    if bias:
        inits["b"] = rand(cout, seed=2)
    m = model([N("ConvTranspose", ["x", "w"] + (["b"] if bias else []), ["y"], group=group, strides=strides,
                 pads=pads, output_padding=output_padding, dilations=dilations)],
              {"x": ["N", cin, 4, 5]}, ["y"], inits, 13)
    mod = check_against_ort(m, {"x": rand(2, cin, 4, 5)})
    assert op_names(mod) == ["conv_transpose2d"]


@pytest.mark.parametrize("auto_pad,stride", [("SAME_UPPER", 1), ("SAME_UPPER", 2), ("SAME_LOWER", 1),
                                             ("SAME_LOWER", 3), ("VALID", 2)])
def test_conv_transpose_auto_pad(auto_pad, stride):
    """A 4x5 kernel: at stride 1 SAME pads 3 rows and 4 columns, odd totals that the two modes
    split differently."""
    m = model([N("ConvTranspose", ["x", "w"], ["y"], auto_pad=auto_pad, strides=[stride, stride])],
              {"x": [2, 3, 5, 4]}, ["y"], {"w": rand(3, 2, 4, 5, seed=3)}, 13)
    mod = check_against_ort(m, {"x": rand(2, 3, 5, 4)})
    if auto_pad != "VALID":
        assert mod.function().returns[0].type.shape[2:] == (5 * stride, 4 * stride)


@pytest.mark.parametrize("output_shape,output_padding", [([10, 8], None), ([9, 7], None), ([8, 6], None),
                                                         ([10, 8], [1, 1])])
def test_conv_transpose_output_shape(output_shape, output_padding):
    """output_shape becomes pads (ONNX's formula); a shape one beyond the last tap becomes output
    padding (ONNX's test_convtranspose_output_shape)."""
    extra = {} if output_padding is None else {"output_padding": output_padding}
    m = model([N("ConvTranspose", ["x", "w"], ["y"], strides=[3, 2], output_shape=output_shape, **extra)],
              {"x": ["N", 2, 3, 3]}, ["y"], {"w": rand(2, 3, 3, 3, seed=4)}, 13)
    mod = check_against_ort(m, {"x": rand(2, 2, 3, 3)})
    assert mod.function().returns[0].type.shape[2:] == tuple(output_shape)


def test_pytorch_pixel_shuffle_and_conv_transpose_with_a_dynamic_batch():
    """An EDSR-style upsampler (nn.PixelShuffle: DepthToSpace CRD), nn.PixelUnshuffle (exported as
    Reshape -> Transpose -> Reshape of 6-D tensors with the batch as -1) and nn.ConvTranspose2d,
    exported with a dynamic batch: it imports with the batch symbolic, equals PyTorch, and
    converts (the transposed convolution stays float and is not counted among the layers)."""
    import torch

    from boldc.torch.onnx_export import export

    class Upsampler(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.body = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.up = torch.nn.Conv2d(8, 12, 3, padding=1)
            self.shuffle, self.unshuffle = torch.nn.PixelShuffle(2), torch.nn.PixelUnshuffle(2)
            self.decode = torch.nn.ConvTranspose2d(12, 4, 3, stride=2, padding=1, output_padding=1)

        def forward(self, x):
            h = torch.relu(self.head(x))
            h = torch.relu(self.body(h)) + h
            return self.decode(self.unshuffle(self.shuffle(self.up(h))))

    torch.manual_seed(0)
    net = Upsampler().eval()
    proto = export(net, torch.zeros(1, 3, 6, 5))
    types = {n.op_type for n in proto.graph.node}
    assert {"DepthToSpace", "ConvTranspose", "Transpose"} <= types
    mod = boldc.import_onnx(proto)
    assert op_names(mod).count("reshape") == 2 and "depth_to_space" in op_names(mod)
    assert mod.function().args[0].type.shape[0] == "N"
    x = rand(3, 3, 6, 5)
    err = rel_error(boldc.interpret(mod, [x]), net(torch.from_numpy(x)).detach().numpy())
    assert err <= 1e-5, f"relative error {err:.2e}"
    lowered = boldc.convert(proto, fuse=False)
    assert op_names(lowered) == ["conv2d", "threshold", "bconv2d", "threshold", "add", "conv2d", "depth_to_space",
                                 "reshape", "transpose", "reshape", "conv_transpose2d"]
