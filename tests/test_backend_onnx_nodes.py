"""The C backend against ONNX's own node test cases (onnx.backend.test.case.node).

For the float ops the backend implements (Conv, Gemm, MatMul, MaxPool, AveragePool,
GlobalAveragePool, Relu, Add, Flatten, Softmax, BatchNormalization, Concat, and the ops of
dense prediction OPS adds), every
single-node case goes through ``boldc.import_onnx`` and ``boldc.compile`` and must
either match ONNX's expected outputs (within the float tolerance of backend_check)
or be rejected at import with a one-line BoldcError; a rejected case is reported as a
skip giving that message (not as a pass), and the number of accepted cases may not
fall below MIN_PASSES.

Two adaptations, both about the importer's input contract, not about the ops:
- onnx 1.23 writes these cases at opset 22; boldc reads opsets 7-21, so a case refused
  for its opset is converted with onnx.version_converter to opset 21 (opset 22 only
  added element types to these ops);
- boldc compiles models whose weights are constants; a case refused because its
  weights (or another constant operand, such as Expand's shape, an int64 graph input)
  are graph inputs is imported with the case's own values turned into initializers
  ("frozen"), and checked against the same expected outputs.
All accepted cases are compiled as one module (one function per case). A case whose stored
outputs depart from the op's definition (REFERENCE_DEPARTS) is checked against onnxruntime.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper, version_converter

import boldc
from boldc.errors import BoldcError

from backend_check import build_variant, float_close

OPS = {"Conv", "Gemm", "MatMul", "MaxPool", "AveragePool", "GlobalAveragePool", "Relu", "Add", "Flatten", "Softmax",
       "BatchNormalization", "Concat"}
# The ops of dense prediction (issue 15), with the node cases each passes: ConvTranspose 9 of 11
# (1-D and 3-D refused), DepthToSpace 2, SpaceToDepth 3 of 4 (the CRD case is written at opset 28,
# which ONNX's converter cannot bring to 21), LRN 2 of 2, Expand 2 of 2 (its shape frozen), Resize
# 22 of 39 (cubic, antialias when reducing and tf_crop_and_resize refused), Upsample 1 of 1.
OPS |= {"ConvTranspose", "DepthToSpace", "SpaceToDepth", "LRN", "Expand", "Resize", "Upsample"}
# What this backend and the importer achieved when the test was written (73), plus those cases.
MIN_PASSES = 73 + 14 + 4 + 23
# Cases whose stored outputs come from ONNX's reference implementation where it departs from the
# op's definition (and from onnxruntime): checked against onnxruntime, and the stored outputs must
# still differ (so that a corrected reference shows up here).
REFERENCE_DEPARTS = {
    "test_resize_downsample_scales_linear_align_corners":
        "align_corners divides by the fractional output width scale·in - 1 instead of length_resized - 1",
}


def _cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the collector's own numpy overflow warnings
        cases = collect_testcases()
    return sorted((c for c in cases if len(c.model.graph.node) == 1 and c.model.graph.node[0].op_type in OPS),
                  key=lambda c: c.name)


CASES = _cases()


def _import(model):
    try:
        return boldc.import_onnx(model)
    except BoldcError as exc:
        if "opset" not in str(exc):
            raise
        try:
            converted = version_converter.convert_version(model, 21)
        except Exception as failed:  # the case uses what opset 21 cannot say (SpaceToDepth's mode CRD)
            reason = (str(failed).strip().splitlines() or [type(failed).__name__])[-1]
            raise BoldcError(f"{exc}; onnx.version_converter cannot bring it to opset 21: {reason}") from None
        return boldc.import_onnx(converted)


def _freeze(model, values):
    """The model with graph inputs 1.. turned into initializers holding ``values``."""
    frozen = onnx.ModelProto()
    frozen.CopyFrom(model)
    g = frozen.graph
    for vi, v in zip(list(g.input)[1:], values[1:]):
        g.initializer.append(numpy_helper.from_array(np.asarray(v), vi.name))
    first = onnx.ValueInfoProto()
    first.CopyFrom(g.input[0])
    del g.input[:]
    g.input.append(first)
    return frozen


def _constant_operand_refused(case, message: str) -> bool:
    """An input after the first (Expand's shape, an integer graph input) refused for its
    element type: an operand boldc takes as a constant, frozen like the weights."""
    later = [vi.name for vi in list(case.model.graph.input)[1:]]
    return "imports float32 inputs only" in message and any(f"input '{n}'" in message for n in later)


def _prepare(case):
    """(module, inputs, expected outputs, how) or (None, reason, None, "rejected")."""
    inputs, outputs = case.data_sets[0]
    try:
        try:
            return _import(case.model), list(inputs), list(outputs), "as is"
        except BoldcError as exc:
            if "must be a constant" not in str(exc) and not _constant_operand_refused(case, str(exc)):
                raise
            return _import(_freeze(case.model, inputs)), [inputs[0]], list(outputs), "frozen"
    except BoldcError as exc:
        return None, str(exc), None, "rejected"


@pytest.fixture(scope="module")
def prepared():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {c.name: _prepare(c) for c in CASES}


def _merged(prepared) -> boldc.Module:
    """One module holding every accepted case as function @<case name>."""
    merged = boldc.Module()
    for name, (module, *_rest) in prepared.items():
        if module is None:
            continue
        for p in module.params.values():
            p.name = f"{name}.{p.name}"
            merged.params[p.name] = p
        fn = module.function("forward")
        fn.name = name
        merged.add_function(fn)
    boldc.verify(merged)
    return merged


@pytest.fixture(scope="module", params=["simd", "portable"])
def compiled(request, prepared):
    module = _merged(prepared)
    return build_variant(module, request.param, max_batch=8, functions=list(module.functions))


@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_node_case(name, prepared, compiled):
    module, inputs, outputs, how = prepared[name]
    if how == "rejected":
        assert inputs and "\n" not in inputs, "a rejection must be a one-line message"
        pytest.skip(f"boldc refuses this ONNX case at import (one-line error): {inputs}")
    got = compiled.run(name, inputs)
    if name in REFERENCE_DEPARTS:
        stored, outputs = outputs, _onnxruntime_outputs(name)
        assert not all(float_close(g, w) for g, w in zip(got, stored)), f"{name}: {REFERENCE_DEPARTS[name]}?"
    assert len(got) == len(outputs)
    for g, want in zip(got, outputs):
        assert g.shape == want.shape, f"{name} ({how}): shape {g.shape} != {want.shape}"
        ok = float_close(g, want) if want.dtype.kind == "f" else np.array_equal(g, want)
        assert ok, f"{name} ({how}): max abs error {np.abs(g.astype(np.float64) - want).max():.3g}"


def _onnxruntime_outputs(name: str) -> list[np.ndarray]:
    """onnxruntime's outputs of the case (frozen, at an IR version onnxruntime reads)."""
    import onnxruntime as ort

    case = next(c for c in CASES if c.name == name)
    inputs = case.data_sets[0][0]
    frozen = _freeze(case.model, inputs)
    frozen.ir_version = 10
    session = ort.InferenceSession(frozen.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {frozen.graph.input[0].name: inputs[0]})


def test_pass_count_and_rejects(prepared):
    accepted = [n for n, p in prepared.items() if p[3] != "rejected"]
    rejects = {n: p[1] for n, p in prepared.items() if p[3] == "rejected"}
    report = "\n".join(f"  {n}: {why}" for n, why in sorted(rejects.items()))
    print(f"\nONNX node cases: {len(CASES)}, compiled and checked: {len(accepted)} "
          f"({sum(p[3] == 'frozen' for p in prepared.values())} with frozen weights), rejected: {len(rejects)}\n"
          + report)
    assert len(CASES) >= 100, "the ONNX node test collection shrank: check the op filter"
    assert len(accepted) >= MIN_PASSES, f"fewer cases pass than before ({len(accepted)} < {MIN_PASSES}):\n{report}"
