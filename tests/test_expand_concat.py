"""Expand (ONNX Expand -> ``expand``) and concat of Boolean and integer maps, the two pieces of
DeepLab's ASPP head besides its dilated convolutions: the pooled branch broadcast back to
H x W, and the branches joined along the channels (docs/convert.md, docs/ir.md).

The C and the torch engine are checked op by op against the interpreter by the cases of
test_backend_ops.py (``dense_prediction_cases``: b1, integer and f32 expands, concats of b1
with b1 and integers at odd channel counts) and test_torch_ops.py; here a whole lowered ASPP
head runs in C, on torch and for three training steps."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import boldc
from boldc.errors import BoldcError
from boldc.interp import run
from boldc.ir.types import DType, tensor
from boldc.ops.registry import TypeCheck, lookup

from backend_check import check_all, compile_variant
from onnxgraph import check_against_ort, model, op_names, rand
from trainutil import assert_c_steps_match

N = helper.make_node


# --- Expand -----------------------------------------------------------------------------------


@pytest.mark.parametrize("opset", [8, 13, 21])
def test_expand_of_a_pooled_map_matches_onnxruntime(opset):
    m = model([N("GlobalAveragePool", ["x"], ["p"]), N("Expand", ["p", "s"], ["y"])], {"x": ["N", 3, 4, 5]}, ["y"],
              {"s": np.array([1, 1, 4, 5], np.int64)}, opset)
    mod = check_against_ort(m, {"x": rand(2, 3, 4, 5)})
    assert op_names(mod) == ["global_avgpool", "expand"]
    assert mod.ops()[1].attrs["shape"] == ["N", 3, 4, 5]


def test_expand_broadcasts_both_ways_and_adds_axes():
    """ONNX's two-way broadcast: a 1 in the shape keeps the input's size, the rank may grow."""
    m = model([N("Expand", ["x", "s"], ["y"])], {"x": [3, 1]}, ["y"], {"s": np.array([2, 1, 6], np.int64)}, 13)
    mod = check_against_ort(m, {"x": rand(3, 1)})
    assert mod.ops()[0].attrs["shape"] == [2, 3, 6]


def test_expand_to_the_shape_of_a_computed_map_keeps_the_batch_symbolic():
    """ASPP's pooled branch as exporters write it: expanded to Shape() of another branch."""
    m = model([N("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), N("GlobalAveragePool", ["c"], ["p"]),
               N("Shape", ["c"], ["s"]), N("Expand", ["p", "s"], ["e"]), N("Concat", ["c", "e"], ["y"], axis=1)],
              {"x": ["N", 2, 5, 6]}, ["y"], {"w": rand(4, 2, 3, 3, seed=1)}, 13)
    mod = check_against_ort(m, {"x": rand(3, 2, 5, 6)})
    expand = next(op for op in mod.ops() if op.name == "expand")
    assert expand.attrs["shape"] == ["N", 4, 5, 6]


def test_expand_to_its_own_shape_is_no_op():
    m = model([N("Expand", ["x", "s"], ["y"])], {"x": ["N", 3, 2]}, ["y"], {"s": np.array([1, 2], np.int64)}, 13)
    mod = check_against_ort(m, {"x": rand(2, 3, 2)})
    assert op_names(mod) == []


def test_expand_that_does_not_broadcast_is_one_line():
    """ONNX's shape inference refuses it first, naming the node; the handler's own check
    covers shapes that inference leaves open (tested on the handler below)."""
    m = model([N("Expand", ["x", "s"], ["y"], name="e")], {"x": ["N", 3, 2, 2]}, ["y"],
              {"s": np.array([1, 3, 4, 4], np.int64)}, 13)
    with pytest.raises(BoldcError, match=r"Expand, node name: e\): .*Incompatible dimensions") as err:
        boldc.import_onnx(m)
    assert "\n" not in str(err.value)


def test_expand_handler_refuses_what_does_not_broadcast():
    from boldc.frontend.graph import OnnxImportError
    from boldc.frontend.tensor_handlers import expand

    class Importer:
        def value(self, node, i):
            return boldc.ir.core.Value("x", tensor("f32", "N", 3, 2, 2))

        def const_list(self, node, i, what):
            return [1, 3, 4, 4]

        def error(self, node, msg):
            return OnnxImportError(f"node 'e' (Expand): {msg}")

    with pytest.raises(OnnxImportError, match=r"node 'e' \(Expand\): cannot broadcast the input f32\[N, 3, 2, 2\] "
                                              r"to the shape \[1, 3, 4, 4\]"):
        expand(Importer(), None)


def test_expand_types():
    d = lookup("expand")
    assert d.infer([tensor("b1", "N", 70, 1, 1)], {"shape": ["N", 70, 3, 3]}) == [tensor("b1", "N", 70, 3, 3)]
    for shape in (["N", 70, 3], ["N", 71, 3, 3], [0, "N", 70, 3, 3]):
        with pytest.raises(TypeCheck, match="cannot expand"):
            d.infer([tensor("b1", "N", 70, 1, 1)], {"shape": shape})
    bits = np.random.default_rng(0).random((2, 1, 3)) < 0.5
    np.testing.assert_array_equal(d.evaluate([bits], {"shape": [4, 2, 5, 3]})[0], np.broadcast_to(bits, (4, 2, 5, 3)))


def test_expand_backward_sums_over_the_broadcast_axes():
    """The gradient of a pooled branch's broadcast is ``sum_to`` its shape (the batch symbolic)."""
    m = model([N("Conv", ["x", "w"], ["c"]), N("GlobalAveragePool", ["c"], ["p"]),
               N("Expand", ["p", "s"], ["e"]), N("Flatten", ["e"], ["f"]), N("Gemm", ["f", "g"], ["y"], transB=1)],
              {"x": ["N", 2, 3, 3]}, ["y"], {"w": rand(4, 2, 1, 1, seed=1), "s": np.array([1, 1, 3, 3], np.int64),
                                              "g": rand(5, 36, seed=2)}, 13)
    mod = boldc.import_onnx(m)
    from boldc.passes.autodiff import Autodiff

    Autodiff().run(mod)
    sums = [op for op in mod.ops("train_step") if op.name == "sum_to"]
    assert [op.attrs["shape"] for op in sums] == [["N", 4, 1, 1]]


# --- concat of bits and integers ---------------------------------------------------------------


@pytest.mark.parametrize("dtypes,want", [
    (("b1", "b1", "b1"), "b1"), (("b1", "i16"), "i16"), (("i8", "b1"), "i8"), (("i8", "i32", "b1"), "i32"),
    (("i16", "i8"), "i16"), (("f32", "f32"), "f32")])
def test_concat_type(dtypes, want):
    types = [tensor(d, "N", 3 + k, 2) for k, d in enumerate(dtypes)]
    assert lookup("concat").infer(types, {"axis": 1})[0] == tensor(want, "N", sum(3 + k for k in range(len(dtypes))), 2)


@pytest.mark.parametrize("dtypes", [("b1", "f32"), ("i16", "f32")])
def test_concat_with_f32_is_refused_and_the_lowering_casts(dtypes):
    with pytest.raises(TypeCheck, match="concat takes one element type, or b1 and integers"):
        lookup("concat").infer([tensor(d, "N", 3) for d in dtypes], {"axis": 1})


def test_concat_reads_a_bit_as_its_sign():
    bits = np.array([[True, False]])
    ints = np.array([[-7]], np.int16)
    out = lookup("concat").evaluate([bits, ints], {"axis": 1})[0]
    assert out.dtype == np.int16 and out.tolist() == [[1, -1, -7]]


# --- a Boolean ASPP head --------------------------------------------------------------------------


def _aspp(activated: bool):
    """conv (float, first) -> relu -> [1x1; 3x3 rates 6, 12, 18 (past the 10x10 map); the pooled
    branch: global pool -> 1x1 -> relu -> Expand to a branch's Shape] -> Concat -> 1x1 -> relu ->
    1x1 (float, last). Without ``activated`` the rate-18 branch ends in BatchNormalization (no
    activation: its integers enter the concat)."""
    w = {"w0": rand(16, 3, 3, 3, seed=0), "wa": rand(8, 16, 1, 1, seed=1), "wp": rand(8, 16, 1, 1, seed=5),
         "wj": rand(8, 40, 1, 1, seed=6), "wo": rand(5, 8, 1, 1, seed=7)}
    nodes = [N("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]), N("Relu", ["c0"], ["r0"]),
             N("Conv", ["r0", "wa"], ["ca"]), N("Relu", ["ca"], ["ba"])]
    branches = ["ba"]
    for k, rate in enumerate((6, 12, 18)):
        w[f"w{rate}"] = rand(8, 16, 3, 3, seed=2 + k)
        nodes.append(N("Conv", ["r0", f"w{rate}"], [f"c{rate}"], pads=[rate] * 4, dilations=[rate, rate]))
        if rate == 18 and not activated:
            w.update({"s": rand(8, seed=8) + 2, "b": rand(8, seed=9), "mu": rand(8, seed=10),
                      "v": np.abs(rand(8, seed=11)) + 1})
            nodes.append(N("BatchNormalization", [f"c{rate}", "s", "b", "mu", "v"], [f"b{rate}"]))
        else:
            nodes.append(N("Relu", [f"c{rate}"], [f"b{rate}"]))
        branches.append(f"b{rate}")
    nodes += [N("GlobalAveragePool", ["r0"], ["g"]), N("Conv", ["g", "wp"], ["cp"]), N("Relu", ["cp"], ["rp"]),
              N("Shape", ["ba"], ["shape"]), N("Expand", ["rp", "shape"], ["bp"]),
              N("Concat", branches + ["bp"], ["cat"], axis=1), N("Conv", ["cat", "wj"], ["cj"]),
              N("Relu", ["cj"], ["rj"]), N("Conv", ["rj", "wo"], ["y"])]
    return model(nodes, {"x": ["N", 3, 10, 10]}, ["y"], w, 13)


@pytest.mark.parametrize("activated", [True, False])
def test_aspp_imports_as_onnxruntime_computes_it(activated):
    mod = check_against_ort(_aspp(activated), {"x": rand(2, 3, 10, 10, seed=12)})
    convs = [op for op in mod.ops() if op.name == "conv2d"]
    assert [op.attrs["dilation"] for op in convs[2:5]] == [[6, 6], [12, 12], [18, 18]]


@pytest.mark.parametrize("rate,size", [(6, 5), (12, 4), (18, 6), (2, 3)])
def test_dilations_past_the_map_match_onnxruntime(rate, size):
    """ASPP's rates on maps smaller than the dilation (padding = rate: only the centre tap
    reads the map), and a 1x1 kernel padded past its extent (border outputs are padding only)."""
    m = model([N("Conv", ["x", "w"], ["a"], pads=[rate] * 4, dilations=[rate, rate]),
               N("Conv", ["a", "w1"], ["y"], pads=[2, 1, 2, 3])], {"x": ["N", 3, size, size]}, ["y"],
              {"w": rand(4, 3, 3, 3, seed=rate), "w1": rand(2, 4, 1, 1, seed=1)}, 13)
    check_against_ort(m, {"x": rand(2, 3, size, size, seed=size)})


def _concat_and_reader(m):
    ops = m.ops("forward")
    cat = next(op for op in ops if op.name == "concat")
    return cat, [op for op in ops if cat.results[0] in op.operands]


def test_a_boolean_aspp_concatenates_bits():
    m = boldc.convert(_aspp(activated=True), fuse=False)
    cat, readers = _concat_and_reader(m)
    assert cat.results[0].type.dtype == DType.b1 and [op.name for op in readers] == ["bconv2d"]
    names = [op.name for op in m.ops("forward")]
    assert "cast" not in names and names.count("bconv2d") == 6
    assert next(op for op in m.ops("forward") if op.name == "expand").results[0].type == tensor("b1", "N", 8, 10, 10)


def test_bits_and_integers_concatenate_as_integers_and_the_threshold_is_exact():
    """The branch without an activation brings integers: the concat is i16 (bits as ±1, no
    cast to f32), the Boolean layer reading it gets a threshold, and that threshold gives
    each branch's own bits: T for a T bit, s >= 0 for an integer."""
    m = boldc.convert(_aspp(activated=False), fuse=False)
    cat, readers = _concat_and_reader(m)
    assert cat.results[0].type.dtype == DType.i16
    assert [op.name for op in readers] == ["threshold"] and "cast" not in [op.name for op in m.ops("forward")]
    values = {}
    run(m, m.function("forward"), [rand(4, 3, 10, 10, seed=3, scale=2)], on_op=lambda op, res: values.update(
        zip(op.results, res)))
    parts = [values[v] for v in cat.operands]
    assert [p.dtype for p in parts].count(np.bool_) == 4  # four branches of bits, one of integers
    want = np.concatenate([p if p.dtype == np.bool_ else p >= 0 for p in parts], axis=1)
    np.testing.assert_array_equal(values[readers[0].results[0]], want)


@pytest.mark.parametrize("activated", [True, False])
def test_lowered_aspp_runs_in_c_and_on_torch(activated):
    m = boldc.convert(_aspp(activated))
    x = rand(5, 3, 10, 10, seed=4, scale=2)
    problems = check_all(m, compile_variant(m, "simd", max_batch=5), "forward", [x])
    assert not problems, "; ".join(problems)
    from boldc.torch import to_torch

    np.testing.assert_allclose(to_torch(m, train=False).infer(x), boldc.interpret(m, x), rtol=1e-5, atol=1e-5)


def test_training_steps_of_an_aspp_head_match_the_interpreter():
    """Three C training steps (the gradients of the dilated convolutions, of expand and of the
    concat) against the interpreter."""
    batches = [(rand(4, 3, 10, 10, seed=40 + k, scale=2), rand(4, 5, 10, 10, seed=50 + k)) for k in range(3)]
    ref = assert_c_steps_match(boldc.convert(_aspp(activated=False)), batches, max_batch=4, eta=10.0, total_steps=3,
                               lr=3e-3, loss="mse")
    assert {"sum_to", "slice_axis", "conv2d_grad_x"} <= {op.name for op in ref.ops("train_step")}
