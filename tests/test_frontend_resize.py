"""ONNX Resize and Upsample: the imported ``resize`` against onnxruntime, PyTorch's F.interpolate,
the refusals, and a Resize after a Boolean layer through ``boldc.convert`` and the C backend.

Linear results equal onnxruntime within 1e-5. Nearest results are compared pixel by pixel
(each input pixel holds its own index): boldc computes the source coordinate exactly, and
onnxruntime in float32, so where the exact coordinate is on a rounding boundary (an integer
for floor and ceil, a half for the round modes) its float32 value may fall on the other
side; such a pixel may be the neighbour, and every other pixel must be the same
(docs/convert.md, "Resize").
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx import helper

import boldc
from boldc.errors import BoldcError
from boldc.frontend.api import fuse_layers
from boldc.ops.registry import TypeCheck
from boldc.ops.resize_ops import COORDINATE_MODES, NEAREST_MODES, axis_scale, source_coordinate

from onnxgraph import model, op_names, ort_run, rand

N = helper.make_node
H, W = 7, 5
# (name, scales or None, sizes or None): up and down, non-integer scales, one axis up and one down
TARGETS = [("scales-up", [2.5, 1.7], None), ("scales-down", [0.6, 0.45], None), ("scales-mixed", [0.6, 2.3], None),
           ("sizes-up", None, [11, 9]), ("sizes-down", None, [3, 4]), ("sizes-to-1", None, [1, 2])]
OPSET = {"tf_half_pixel_for_nn": 11, "half_pixel_symmetric": 19}  # where the mode exists; else 13


def resize_model(opset: int, scales=None, sizes=None, shape=(2, 3, H, W), **attrs):
    """One Resize of a [N, C, H, W] input; scales / sizes of H and W (N and C kept)."""
    inits, inputs = {}, ["x"]
    if opset >= 11:
        inits["roi"] = np.zeros(0, np.float32)
        inputs.append("roi")
    if scales is not None:
        inits["scales"] = np.array([1, 1, *scales], np.float32)
        inputs.append("scales")
    else:
        inits["scales"] = np.zeros(0, np.float32)
        inits["sizes"] = np.array([shape[0], shape[1], *sizes], np.int64)
        inputs += ["scales", "sizes"]
    return model([N("Resize", inputs, ["y"], **attrs)], {"x": list(shape)}, ["y"], inits, opset)


def pixel_indices(shape) -> np.ndarray:
    """Each element holds its own flat index (exact in float32)."""
    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)


def assert_same_pixels(module, m, x):
    """The source pixel of every output pixel equals onnxruntime's, except where the exact
    coordinate is on a rounding boundary (see the module docstring)."""
    got = boldc.interpret(module, [x])
    (want,) = ort_run(m, {"x": x})
    assert got.shape == want.shape
    op = next(op for op in module.ops() if op.name == "resize")
    h, w = x.shape[2:]
    for axis, (size, ours, theirs) in enumerate([(h, got[0, 0, :, 0] // w, want[0, 0, :, 0] // w),
                                                 (w, got[0, 0, 0, :] % w, want[0, 0, 0, :] % w)]):
        scale = axis_scale(op.attrs, axis, size)
        out = op.attrs["size"][axis]
        for o in np.flatnonzero(ours != theirs):
            x_o = source_coordinate(int(o), size, out, scale, op.attrs["coordinate_transformation_mode"])
            boundary = x_o if op.attrs["nearest_mode"] in ("floor", "ceil") else x_o - Fraction(1, 2)
            assert abs(ours[o] - theirs[o]) == 1 and boundary.denominator == 1, \
                f"axis {axis} position {o}: {ours[o]} vs onnxruntime {theirs[o]} (coordinate {x_o})"
    # the other pixels follow from the two axes (and the batch and channels are kept)
    rows, cols = got[0, 0, :, 0] // w, got[0, 0, 0, :] % w
    assert np.array_equal(got[1, 2], x[1, 2][rows.astype(int)][:, cols.astype(int)])


@pytest.mark.parametrize("target", TARGETS, ids=[t[0] for t in TARGETS])
@pytest.mark.parametrize("nearest", NEAREST_MODES)
@pytest.mark.parametrize("coord", COORDINATE_MODES)
def test_nearest_against_onnxruntime(coord, nearest, target):
    _, scales, sizes = target
    m = resize_model(OPSET.get(coord, 13), scales, sizes, mode="nearest", coordinate_transformation_mode=coord,
                     nearest_mode=nearest)
    module = boldc.import_onnx(m)
    assert op_names(module) == ["resize"]
    assert_same_pixels(module, m, pixel_indices((2, 3, H, W)))


@pytest.mark.parametrize("target", TARGETS, ids=[t[0] for t in TARGETS])
@pytest.mark.parametrize("coord", COORDINATE_MODES)
def test_linear_against_onnxruntime(coord, target):
    _, scales, sizes = target
    m = resize_model(OPSET.get(coord, 13), scales, sizes, mode="linear", coordinate_transformation_mode=coord)
    x = rand(2, 3, H, W)
    got = boldc.interpret(boldc.import_onnx(m), [x])
    (want,) = ort_run(m, {"x": x})
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_scales_are_their_decimals_and_sizes_keep_the_symbolic_batch():
    m = resize_model(13, [0.6, 2.3], shape=["N", 3, H, W], mode="linear")
    module = boldc.import_onnx(m)
    op = module.ops()[0]
    assert op.attrs["scales"] == [0.6, 2.3] and op.attrs["size"] == [4, 11]  # floor(7·0.6), floor(5·2.3)
    text = boldc.dumps(module)
    assert "scales = [0.6, 2.3]" in text and boldc.dumps(boldc.parse(text)) == text
    m = model([N("Shape", ["x"], ["s"]), N("Slice", ["s", "zero", "two"], ["nc"]), N("Concat", ["nc", "hw"], ["sz"],
                                                                                      axis=0),
               N("Resize", ["x", "", "", "sz"], ["y"], mode="nearest")],
              {"x": ["N", 3, H, W]}, ["y"], {"zero": np.array([0]), "two": np.array([2]), "hw": np.array([9, 2])}, 13)
    module = boldc.import_onnx(m)
    assert module.function().returns[0].type.shape == ("N", 3, 9, 2)
    x = pixel_indices((2, 3, H, W))
    np.testing.assert_array_equal(boldc.interpret(module, [x]), ort_run(m, {"x": x})[0])


@pytest.mark.parametrize("opset", [10, 9, 7])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_10_and_upsample_are_asymmetric(opset, mode):
    """Resize-10 and Upsample: x = o / scale, nearest rounds down enlarging and up reducing; an
    axis of each kind is resized one after the other."""
    op_type = "Resize" if opset == 10 else "Upsample"
    for scales in ([2.0, 3.0], [1.5, 2.5]) + (([0.6, 0.45], [1.5, 0.45]) if opset == 10 else ()):
        full = np.array([1, 1, *scales], np.float32)
        attrs = {"scales": full.tolist()} if opset < 9 else {}
        inits = {} if opset < 9 else {"scales": full}
        m = model([N(op_type, ["x"] + (["scales"] if opset >= 9 else []), ["y"], mode=mode, **attrs)],
                  {"x": [2, 3, H, W]}, ["y"], inits, opset)
        module = boldc.import_onnx(m)
        split = mode == "nearest" and min(scales) < 1 <= max(scales)
        assert op_names(module) == ["resize"] * (2 if split else 1)
        if mode == "nearest":
            x = pixel_indices((2, 3, H, W))
            np.testing.assert_array_equal(boldc.interpret(module, [x]), ort_run(m, {"x": x})[0])
        else:
            x = rand(2, 3, H, W)
            np.testing.assert_allclose(boldc.interpret(module, [x]), ort_run(m, {"x": x})[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("axes,values,kind,policy", [
    ([3, 2], [2.5, 0.6], "scales", "stretch"), ([2, 3], [11, 4], "sizes", "stretch"),
    ([-1, -2], [3, 9], "sizes", "stretch"), ([2, 3], [11, 4], "sizes", "not_larger"),
    ([2, 3], [11, 4], "sizes", "not_smaller"), ([3, 2], [3, 9], "sizes", "not_larger")])
def test_opset_18_axes_and_aspect_ratio(axes, values, kind, policy):
    """axes (negative too) and keep_aspect_ratio_policy (which applies to sizes only)."""
    inits = {kind: np.array(values, np.float32 if kind == "scales" else np.int64)}
    inputs = ["x", "", "scales"] if kind == "scales" else ["x", "", "", "sizes"]
    m = model([N("Resize", inputs, ["y"], mode="nearest", axes=axes, keep_aspect_ratio_policy=policy)],
              {"x": [2, 3, H, W]}, ["y"], inits, 18)
    assert_same_pixels(boldc.import_onnx(m), m, pixel_indices((2, 3, H, W)))


@pytest.mark.parametrize("attrs,scales,sizes,shape,match", [
    ({"mode": "cubic"}, [2, 2], None, None, "mode 'cubic' is not supported"),
    ({"coordinate_transformation_mode": "tf_crop_and_resize"}, None, [4, 4], None,
     "coordinate_transformation_mode 'tf_crop_and_resize' .* is not supported"),
    ({"mode": "linear", "antialias": 1}, [0.5, 0.5], None, None, "antialias=1 when reducing a map"),
    ({"exclude_outside": 1}, [2, 2], None, None, "exclude_outside=1 is not supported with mode 'nearest'"),
    ({}, None, [4, 4], (2, 3, 5, 6, 7), "only 4-D \\(NCHW\\) inputs are resized"),
    ({}, [0.1, 0.1], None, None, "scales .* give an empty output"),
])
def test_refusals_name_the_node_and_the_attribute(attrs, scales, sizes, shape, match):
    if shape is not None:
        m = model([N("Resize", ["x", "", "", "sizes"], ["y"])], {"x": list(shape)}, ["y"],
                  {"sizes": np.array(list(shape[:3]) + sizes, np.int64)}, 19)
    else:
        m = resize_model(19, scales, sizes, **attrs)
    with pytest.raises(BoldcError, match=f"node '.*' \\(Resize\\): {match}") as info:
        boldc.import_onnx(m)
    assert "\n" not in str(info.value)


def test_refusals_of_the_batch_and_channel_axes():
    m = model([N("Resize", ["x", "", "s"], ["y"])], {"x": [2, 3, H, W]}, ["y"],
              {"s": np.array([1, 2, 2, 2], np.float32)}, 13)
    with pytest.raises(BoldcError, match="scale 2.0 resizes the channel axis; only H and W can be resized"):
        boldc.import_onnx(m)
    m = model([N("Resize", ["x", "", "", "s"], ["y"])], {"x": ["N", 3, H, W]}, ["y"],
              {"s": np.array([1, 3, 9, 9], np.int64)}, 13)
    with pytest.raises(BoldcError, match=r"resize the batch axis \(N -> 1\)"):
        boldc.import_onnx(m)
    m = model([N("Upsample", ["x", "s"], ["y"])], {"x": [2, 3, H, W]}, ["y"],
              {"s": np.array([1, 1, 0.5, 2], np.float32)}, 9)
    with pytest.raises(BoldcError, match=r"must be >= 1 \(Upsample enlarges"):
        boldc.import_onnx(m)


@pytest.mark.parametrize("op,dtype,shape,attrs,match", [
    ("resize", "b1", (2, 3, 4, 4), {"mode": "linear", "size": [8, 8]}, "input of linear resize must be f32, got b1"),
    ("resize", "f32", (2, 4, 4), {"size": [8, 8]}, "input must have rank 4"),
    ("resize", "f32", (2, 3, 4, 4), {"size": [0, 8]}, r"size \[0, 8\] must be >= 1"),
    ("resize", "f32", (2, 3, 4, 4), {"size": [8, 8], "scales": [2.0]}, "must be empty or two positive numbers"),
    ("resize", "f32", (2, 3, 4, 4), {"size": [8, 8], "nearest_mode": "round"}, "'round' is not one of"),
    ("resize_grad", "f32", (2, 3, 8, 7), {"size": [8, 8], "input_hw": [4, 4]}, "is not of the resized size"),
])
def test_the_ops_refuse_what_they_do_not_define(op, dtype, shape, attrs, match):
    fb = boldc.FunctionBuilder(boldc.Module(), "forward", [("x", boldc.tensor(dtype, *shape))])
    with pytest.raises(TypeCheck, match=match):
        fb.op(op, list(fb.args), attrs)


class Decoder(torch.nn.Module):
    """A DeepLab-style head: a pooled branch upsampled 1x1 -> HxW, logits upsampled bilinearly
    (align_corners False and True), and an EDSR-style nearest x2."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        h = self.conv(x)
        pooled = F.interpolate(F.adaptive_avg_pool2d(h, 1), size=h.shape[2:], mode="bilinear", align_corners=False)
        up = F.interpolate(h + pooled, scale_factor=2, mode="nearest")
        a = F.interpolate(up, size=(13, 7), mode="bilinear", align_corners=False)
        b = F.interpolate(up, size=(5, 11), mode="bilinear", align_corners=True)
        return torch.cat([a.flatten(1), b.flatten(1)], 1)


@pytest.mark.parametrize("opset", [11, 13, 17, 19])
def test_pytorch_interpolate_with_a_dynamic_batch(opset):
    from boldc.torch.onnx_export import export

    torch.manual_seed(0)
    net = Decoder().eval()
    proto = export(net, torch.zeros(1, 3, 6, 9), opset=opset)
    module = boldc.import_onnx(proto)
    assert op_names(module).count("resize") == 4
    assert module.function().args[0].type.shape[0] == "N"
    x = rand(3, 3, 6, 9)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(boldc.interpret(module, [x]), want, rtol=0, atol=1e-5)


def _segmenter():
    """conv -> ReLU -> conv -> ReLU -> nearest x2 -> conv -> ReLU -> bilinear -> conv 1x1, lowered."""
    w = [rand(6, 3, 3, 3, seed=1), rand(6, 6, 3, 3, seed=2), rand(6, 6, 3, 3, seed=3), rand(2, 6, 1, 1, seed=4)]
    m = model([N("Conv", ["x", "w0"], ["a"], pads=[1, 1, 1, 1]), N("Relu", ["a"], ["r"]),
               N("Conv", ["r", "w1"], ["b"], pads=[1, 1, 1, 1]), N("Relu", ["b"], ["q"]),
               N("Resize", ["q", "", "s"], ["u"], mode="nearest"),
               N("Conv", ["u", "w2"], ["c"], pads=[1, 1, 1, 1]), N("Relu", ["c"], ["p"]),
               N("Resize", ["p", "", "s2"], ["v"], mode="linear"), N("Conv", ["v", "w3"], ["y"])],
              {"x": ["N", 3, 4, 5]}, ["y"],
              {**{f"w{i}": wi for i, wi in enumerate(w)}, "s": np.array([1, 1, 2, 2], np.float32),
               "s2": np.array([1, 1, 1.5, 2.5], np.float32)}, 13)
    return boldc.convert(m, fuse=False)


def test_resize_after_a_boolean_layer_converts_and_compiles():
    """Nearest resizes the threshold's bits (b1 in, b1 out); linear refuses b1 and the lowering
    casts its input to f32 (±1). The C equals the interpreter; the energy model costs both."""
    low = _segmenter()
    assert op_names(low) == ["conv2d", "threshold", "bconv2d", "threshold", "resize", "bconv2d", "threshold", "cast",
                             "resize", "conv2d"]
    nearest, linear = (op for op in low.ops() if op.name == "resize")
    assert nearest.operands[0].type.dtype.is_bool and nearest.results[0].type.dtype.is_bool
    assert linear.operands[0].type.dtype.is_float and linear.results[0].type.shape[2:] == (12, 25)
    x = rand(3, 3, 4, 5)
    want = boldc.interpret(low, [x])
    (got,) = boldc.compile(low).run("forward", [x])
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    fused = fuse_layers(low.copy())  # the cast joins the Boolean layer's threshold as an epilogue
    assert any(op.name == "fused" and op.attrs["body"][-1]["op"] == "cast" for op in fused.ops())
    for phase in ("inference", "training"):
        rows = [r for r in boldc.energy(fused, batch=4, phase=phase).rows if r.opname == "resize"]
        assert len(rows) == (2 if phase == "inference" else 4)
        assert all(sum(r.memory_pj.values()) > 0 for r in rows)


@pytest.mark.parametrize("engine", ["c", "torch"])
def test_resize_trains_as_in_the_interpreter(engine):
    """Five training steps of the model above (mse on the upsampled map) through the C or the
    torch engine: the b1 weights equal the interpreter's after every step, the loss and the
    float state within 1e-5 of their scale."""
    from boldc.backend.training import TrainOptions, training_module
    from boldc.torch import from_torch, to_torch

    low = _segmenter()
    opts = {"loss": "mse", "eta": 10.0, "total_steps": 5}
    if engine == "c":
        ref = training_module(low, TrainOptions.from_kwargs(opts))
        run = boldc.compile(low, train=True, max_batch=4, **opts)
    else:
        run = to_torch(low, **opts)
        ref = run.step_ir.copy()
    flips = 0
    for step in range(5):
        x, target = rand(4, 3, 4, 5, seed=step), rand(4, 2, 12, 25, seed=10 + step)
        before = {n: p.data for n, p in ref.params.items()}
        want = float(boldc.interpret(ref, [x, target], "train_step"))
        assert abs(run.train_step(x, target) - want) <= 1e-5 * abs(want)
        state = None if engine == "c" else from_torch(run, optimizer=True).params
        for name, p in ref.params.items():
            got = run.get_param(name) if state is None else state[name].data
            if p.type.dtype.is_bool or p.type.dtype.is_int:
                assert np.array_equal(got, p.data), f"step {step}: @{name}"
                flips += int((p.data != before[name]).sum()) if p.type.dtype.is_bool else 0
            else:
                assert np.abs(got.astype(np.float64) - p.data).max() <= 1e-5 * np.abs(p.data).max(), f"@{name}"
    assert flips > 0
