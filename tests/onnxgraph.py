"""Helpers for frontend tests: small ONNX graphs built with onnx.helper, run by onnxruntime."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import boldc

RTOL = 1e-4  # interpreter vs onnxruntime: max |difference| relative to max |reference|


def model(nodes, inputs: dict[str, list], outputs: list[str], inits: dict[str, np.ndarray] | None = None,
          opset: int = 17) -> onnx.ModelProto:
    """A float32 graph; ``inputs`` maps names to shapes (None entries or strings are dynamic)."""
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs]
    init = [numpy_helper.from_array(np.asarray(a), n) for n, a in (inits or {}).items()]
    graph = helper.make_graph(nodes, "test", ins, outs, init)
    ops = [helper.make_opsetid("", opset)]
    m = helper.make_model(graph, opset_imports=ops)
    m.ir_version = min(max(helper.find_min_ir_version_for(ops), 7), 10)  # IR 3 wants output shapes
    return m


def ort_run(m: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def rel_error(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(float(np.abs(want).max(initial=0.0)), 1e-6)
    return float(np.abs(got.astype(np.float64) - want).max(initial=0.0)) / scale


def check_against_ort(m: onnx.ModelProto, feeds: dict[str, np.ndarray], input_shapes=None) -> boldc.Module:
    """interpret(import_onnx(m)) equals onnxruntime within RTOL on every output; returns the module."""
    module = boldc.import_onnx(m, input_shapes=input_shapes)
    boldc.parse(boldc.dumps(module))  # the imported module verifies and round-trips
    got = boldc.interpret(module, feeds)
    got = got if isinstance(got, tuple) else (got,)
    want = ort_run(m, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        err = rel_error(g, w)
        assert err <= RTOL, f"relative error {err:.2e}"
    return module


def rand(*shape, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def op_names(module: boldc.Module) -> list[str]:
    return [op.name for op in module.ops("forward")]


# --- the example models ------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
INPUT_SHAPES = {"digits_mlp": (64,), "digits_cnn": (1, 8, 8), "vgg_small": (3, 32, 32), "resnet18": (3, 224, 224)}


@functools.cache
def example_model(name: str) -> onnx.ModelProto:
    """A shipped digits model, or VGG-Small / ResNet-18 exported now by the example script
    (cached for the session: the ResNet-18 export takes a few seconds)."""
    if name.startswith("digits"):
        return onnx.load(str(EXAMPLES / f"{name}.onnx"))
    sys.path.insert(0, str(EXAMPLES))
    try:
        from export_large import build
        from onnx_export import export_onnx
    finally:
        sys.path.remove(str(EXAMPLES))
    net, shape = build(name)
    return export_onnx(net, shape)


def example_input(name: str, batch: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if name.startswith("digits"):  # raw pixel values 0..16
        return rng.integers(0, 17, (batch, *INPUT_SHAPES[name])).astype(np.float32)
    return rng.standard_normal((batch, *INPUT_SHAPES[name])).astype(np.float32)
