"""Bad ONNX input: every case gets one clear line naming the file, node or op (BoldcError),
and the CLI exits with 2, prints no traceback and writes no output file."""

from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import helper

import boldc
from boldc.errors import BoldcError

from onnxgraph import EXAMPLES, check_against_ort, model, rand

N = helper.make_node


def import_error(m, match: str, **kw) -> str:
    with pytest.raises(BoldcError, match=match) as info:
        boldc.import_onnx(m, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_unsupported_ops_are_all_listed_before_anything_is_converted():
    nodes = [N("Sqrt", ["x"], ["a"], name="sqrt1"), N("Sqrt", ["a"], ["b"], name="sqrt2"),
             N("Relu", ["b"], ["c"]), N("Gather", ["c", "idx"], ["d"], name="pick", axis=1),
             N("Hardmax", ["d"], ["e"], name="hm"), N("MyOp", ["e"], ["y"], name="custom", domain="acme")]
    m = model(nodes, {"x": ["N", 4]}, ["y"], {"idx": np.array([0, 2])}, 13)
    m.opset_import.append(helper.make_opsetid("acme", 1))
    msg = import_error(m, "unsupported ONNX ops")
    assert "Sqrt x2 (nodes 'sqrt1', 'sqrt2')" in msg
    assert "Gather" not in msg  # a computed tensor at constant indices: slice_axis
    assert "Hardmax x1 (node 'hm')" in msg and "acme.MyOp x1 (node 'custom')" in msg
    assert "Relu" not in msg and "Nothing was converted" in msg


@pytest.mark.parametrize("kind", ["random", "text", "empty", "truncated-1", "truncated-2"])
def test_unreadable_files(tmp_path, kind):
    path = tmp_path / "bad.onnx"
    good = (EXAMPLES / "digits_mlp.onnx").read_bytes()
    data = {"random": np.random.default_rng(0).bytes(5000), "text": b"graph { node: relu }\n", "empty": b"",
            "truncated-1": good[: len(good) // 2], "truncated-2": good[:-7]}[kind]
    path.write_bytes(data)
    import_error(path, re.escape(str(path)) + ": not (a readable ONNX model|an ONNX model)")


def test_missing_file_and_directory(tmp_path):
    import_error(tmp_path / "nope.onnx", "nope.onnx: no such file")
    import_error(tmp_path, "is a directory, not an ONNX file")


@pytest.mark.parametrize("opset", [6, 22, 30])
def test_unsupported_opset(opset):
    m = model([N("Relu", ["x"], ["y"])], {"x": ["N", 3]}, ["y"], opset=min(opset, 21))
    m.opset_import[0].version = opset
    import_error(m, f"ONNX opset {opset} is not supported \\(boldc reads opsets 7 to 21\\)")


def test_no_default_opset():
    m = model([N("Relu", ["x"], ["y"])], {"x": ["N", 3]}, ["y"], opset=13)
    m.opset_import[0].domain = "acme"
    import_error(m, "declares no ai.onnx opset")


def test_dynamic_non_batch_dims_need_input_shape():
    w = rand(4, 3, 3, 3)
    m = model([N("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], {"x": ["batch", 3, "H", "W"]}, ["y"], {"w": w}, 13)
    msg = import_error(m, "input 'x' has a dynamic dimension 2 \\(H\\)")
    assert "--input-shape x=" in msg
    x = rand(2, 3, 5, 6)
    module = check_against_ort(m, {"x": x}, input_shapes={"x": "Nx3x5x6"})
    assert str(module.function().args[0].type) == "f32[N, 3, 5, 6]"
    module = boldc.import_onnx(m, input_shapes={"x": [2, 3, 5, 6]})
    assert str(module.function().args[0].type) == "f32[2, 3, 5, 6]"


def test_input_shape_errors():
    m = model([N("Relu", ["x"], ["y"])], {"x": ["N", 3, 4]}, ["y"], opset=13)
    import_error(m, "unknown input\\(s\\) z \\(the model's inputs: x\\)", input_shapes={"z": [1, 3, 4]})
    import_error(m, "gives 2 dimensions for input 'x', which has 3", input_shapes={"x": [1, 3]})
    import_error(m, "has size 3 in dimension 1, --input-shape gives 5", input_shapes={"x": [1, 5, 4]})
    import_error(m, "only the first \\(batch\\) dimension of 'x' may be N", input_shapes={"x": [1, "N", 4]})
    import_error(m, "bad shape '1x3xfour'", input_shapes={"x": "1x3xfour"})


def test_non_float_input():
    m = model([N("Relu", ["x"], ["y"])], {"x": ["N", 3]}, ["y"], opset=13)
    m.graph.input[0].type.tensor_type.elem_type = 10  # float16 (int64 and int32 import as i32, bool as b1)
    import_error(m, "input 'x' has element type float16; boldc imports float32 inputs only")


def test_malformed_graphs():
    m = model([N("Relu", ["x"], ["y"]), N("Relu", ["x"], ["y"])], {"x": ["N", 3]}, ["y"], opset=13)
    import_error(m, "node '#1 -> y' \\(Relu\\): output 'y' is already defined")
    m = model([N("Conv", ["x", "w"], ["y"], pad=[1, 1, 1, 1], name="c")], {"x": ["N", 3, 8, 8]}, ["y"],
              {"w": rand(4, 3, 3, 3)}, 13)
    import_error(m, "node 'c' \\(Conv\\): invalid ONNX node: Unrecognized attribute: pad for operator Conv")
    m = model([N("Relu", ["x"], ["y"])], {"x": ["N", 3]}, ["y"], opset=13)
    m.graph.output[0].type.tensor_type.elem_type = 7
    import_error(m, "invalid ONNX model: .*ShapeInferenceError")  # ONNX's own type checks
    w = rand(4, 5, 3, 3)  # 5 input channels, the input has 3: the frontend's type check names the node
    m = model([N("Conv", ["x", "w"], ["y"], name="conv")], {"x": ["N", 3, 8, 8]}, ["y"], {"w": w}, 13)
    import_error(m, "node 'conv' \\(Conv\\): op 'conv2d': weights f32\\[4, 5, 3, 3\\] expect 5 input channels")


def test_undefined_input_names_the_node():
    m = model([N("Relu", ["ghost"], ["y"], name="r")], {"x": ["N", 3]}, ["y"], opset=13)
    import_error(m, "(invalid ONNX model|node 'r' \\(Relu\\): input 'ghost' is not defined)")


@pytest.mark.parametrize("case,match", [
    ("gather-dynamic", "node 'n' \\(Gather\\): gathering a computed tensor at computed indices"),
    ("conv1d", "node 'n' \\(Conv\\): only 2-D convolutions"),
    ("pad-reflect", "node 'n' \\(Pad\\): mode 'reflect' is not supported"),
    ("div-int", "node 'n' \\(Div\\): division of i32\\[N, 4\\] by i32\\[N, 4\\]: only float tensors"),
    ("bn-training", "node 'n' \\(BatchNormalization\\): training_mode=1 is not supported"),
    ("dropout-mask", "node 'n' \\(Dropout\\): output 'mask' is used"),
    ("batch-arithmetic", "node 'n' \\(Mul\\): computes with a symbolic size.*--input-shape x=32x4"),
    ("constant-output", "graph output 'y' is a constant"),
])
def test_unsupported_uses_name_the_node(case, match):
    x = {"x": ["N", 4]}
    if case == "gather-dynamic":
        m = model([N("Gather", ["x", "i"], ["y"], name="n")], {"x": ["N", 4], "i": [3]}, ["y"], opset=13)
        m.graph.input[1].type.tensor_type.elem_type = 7  # int64 indices
    elif case == "conv1d":
        m = model([N("Conv", ["x", "w"], ["y"], name="n")], {"x": ["N", 2, 9]}, ["y"], {"w": rand(3, 2, 3)}, 13)
    elif case == "pad-reflect":
        m = model([N("Pad", ["x", "p"], ["y"], mode="reflect", name="n")], x, ["y"],
                  {"p": np.array([0, 1, 0, 1])}, 13)
    elif case == "div-int":  # ONNX's integer division truncates; boldc divides floats only
        m = model([N("Div", ["x", "x"], ["y"], name="n")], x, ["y"], opset=13)
        for vi in (m.graph.input[0], m.graph.output[0]):
            vi.type.tensor_type.elem_type = 7
    elif case == "bn-training":
        inits = {k: np.ones(4, np.float32) for k in "sbmv"}
        m = model([N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"], training_mode=1, name="n")],
                  {"x": [2, 4]}, ["y"], inits, 15)
    elif case == "dropout-mask":
        m = model([N("Dropout", ["x"], ["d", "mask"], name="n"), N("Cast", ["mask"], ["mf"], to=1),
                   N("Add", ["d", "mf"], ["y"])], x, ["y"], opset=13)
    elif case == "batch-arithmetic":
        m = model([N("Shape", ["x"], ["s"]), N("Mul", ["s", "two"], ["s2"], name="n"),
                   N("Reshape", ["x", "s2"], ["y"])], x, ["y"], {"two": np.array([1, 1])}, 13)
    else:
        m = model([N("Identity", ["c"], ["y"])], x, ["y"], {"c": rand(4)}, 13)
    import_error(m, match)


# --- the command line -----------------------------------------------------------------------------


def _one_line(code, out, err, pattern):
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("boldc: error: ")
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("attrs,shape,match", [
    ({}, [2, 3], "only 2-D transposed convolutions"),
    ({"strides": [2, 2], "output_padding": [2, 0]}, [2, 3, 3], r"output_padding \[2, 0\] must be >= 0 and below "
                                                                r"the stride \[2, 2\]"),
    ({"strides": [2, 2], "pads": [1, 1, 1, 1], "output_shape": [6, 6]}, [2, 3, 3], "both pads and output_shape"),
    ({"output_shape": [8, 5]}, [2, 3, 3], r"output_shape \[8, 5\] is larger than .* without cropping its start"),
    ({"strides": [2, 2], "output_padding": [1, 1], "output_shape": [9, 8]}, [2, 3, 3],
     r"output_shape \[9, 8\] needs an output padding of 2, not below the stride 2"),
])
def test_conv_transpose_refusals_name_the_node(attrs, shape, match):
    """What ConvTranspose cannot become: one line naming the node and the attribute."""
    w = rand(2, 3, *([3] * (len(shape) - 1)))  # [C_in, C_out, kernel...]
    m = model([N("ConvTranspose", ["x", "w"], ["y"], name="up", **attrs)], {"x": ["N", *shape]}, ["y"], {"w": w}, 13)
    import_error(m, r"node 'up' \(ConvTranspose\): .*" + match)


def test_cli_errors_exit_2_with_one_line_and_no_output(cli, tmp_path):
    out = tmp_path / "out.bir"
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    _one_line(*cli("convert", bad, "-o", out), "bad.onnx: not (a readable ONNX model|an ONNX model)")
    _one_line(*cli("convert", tmp_path / "missing.onnx", "-o", out), "missing.onnx: no such file")
    mlp = EXAMPLES / "digits_mlp.onnx"
    _one_line(*cli("convert", mlp, "-o", out, "--logic", "and"),
              "--logic: 'and' is not one of 'xnor', 'xor' \\(see 'boldc convert --help'\\)")
    _one_line(*cli("convert", mlp, "-o", out, "--float-layers", "nine"), "unknown float layer 'nine'")
    _one_line(*cli("convert", mlp, "-o", out, "--input-shape", "x"), "bad --input-shape 'x'")
    _one_line(*cli("convert", mlp, "-o", out, "--input-shape", "x=1x65"), "has size 64 in dimension 1")
    _one_line(*cli("convert", mlp, "-o", out, "--no-lower", "--keep-bn"), "cannot be combined with --keep-bn")
    _one_line(*cli("convert", mlp, "-o", tmp_path / "no" / "dir.bir"), "directory .* does not exist")
    unsupported = model([N("Sqrt", ["x"], ["y"], name="e")], {"x": ["N", 3]}, ["y"], opset=13)
    path = tmp_path / "erf.onnx"
    path.write_bytes(unsupported.SerializeToString())
    _one_line(*cli("convert", path, "-o", out), "unsupported ONNX op: Sqrt x1 \\(node 'e'\\)")
    assert not out.exists() and list(tmp_path.iterdir()) == sorted([bad, path], key=lambda p: p.name) or \
        set(tmp_path.iterdir()) == {bad, path}


def test_missing_external_data_file(tmp_path):
    import onnx

    m = model([N("MatMul", ["x", "W"], ["y"])], {"x": ["N", 4]}, ["y"], {"W": rand(4, 3)}, 13)
    (tmp_path / "full").mkdir()
    (tmp_path / "moved").mkdir()
    onnx.save(m, tmp_path / "full" / "m.onnx", save_as_external_data=True, location="w.dat", size_threshold=0)
    (tmp_path / "moved" / "m.onnx").write_bytes((tmp_path / "full" / "m.onnx").read_bytes())
    import_error(tmp_path / "moved" / "m.onnx", r"moved/m.onnx: cannot read the model's external data")


def test_zero_sized_input_shape_is_refused():
    m = model([N("Relu", ["x"], ["y"])], {"x": ["N", 3]}, ["y"], opset=13)
    import_error(m, r"bad shape '0x3': dimensions must be at least 1", input_shapes={"x": "0x3"})
