"""Fuzzing the ONNX frontend: byte-level and structural mutations of the shipped digits
models through ``boldc.import_onnx`` and ``boldc.convert``. Rule (tests/fuzzutil.py):
converted into a module that verifies and round-trips, or refused with a one-line
BoldcError; never another exception, never a hang."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from fuzzutil import Outcomes, byte_edit, fuzz_settings
from hypothesis import given
from hypothesis import strategies as st
from onnx import helper

import boldc

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MODELS = ("digits_mlp.onnx", "digits_cnn.onnx")


def _structure_spans(raw: bytes, model: onnx.ModelProto) -> list[tuple[int, int]]:
    """The byte ranges of the file outside the initializers' raw data (names, nodes,
    attributes, shapes: where a mutation tests the reader rather than a weight)."""
    weights = []
    for t in model.graph.initializer:
        at = raw.find(t.raw_data) if t.raw_data else -1
        if at >= 0:
            weights.append((at, at + len(t.raw_data)))
    spans, start = [], 0
    for lo, hi in sorted(weights):
        if lo > start:
            spans.append((start, lo))
        start = max(start, hi)
    spans.append((start, len(raw)))
    return [s for s in spans if s[1] > s[0]]


@pytest.fixture(scope="module")
def sources():
    out = {}
    for name in MODELS:
        raw = (EXAMPLES / name).read_bytes()
        model = onnx.load_from_string(raw)
        out[name] = (raw, model, _structure_spans(raw, model))
    return out


def _check_accepted(module: boldc.Module) -> None:
    """An accepted model is a valid module: it verifies and its text round-trips."""
    boldc.verify(module)
    assert boldc.dumps(boldc.parse(boldc.dumps(module))) == boldc.dumps(module)


def _convert_case(outcomes: Outcomes, source) -> None:
    with outcomes.case():
        floating = boldc.import_onnx(source)
        _check_accepted(floating)
        _check_accepted(boldc.convert(source))


@st.composite
def byte_mutation(draw, sources):
    name = draw(st.sampled_from(MODELS))
    raw, _, spans = sources[name]
    # mostly the structure; a third of the cases anywhere (a weight: usually still a valid model)
    span = (0, len(raw)) if draw(st.integers(0, 2)) == 0 else draw(st.sampled_from(spans))
    return name, byte_edit(draw, raw, span)


def test_fuzz_onnx_bytes(sources, tmp_path):
    outcomes = Outcomes("onnx bytes (import_onnx + convert)")

    @fuzz_settings(examples=60)
    @given(byte_mutation(sources))
    def case(mutation):
        name, data = mutation
        path = tmp_path / name
        path.write_bytes(data)
        _convert_case(outcomes, path)

    case()
    outcomes.report(minimum_run=60)


# --- structural mutations of the ModelProto --------------------------------------------------------

OP_TYPES = ["Relu", "Gemm", "Conv", "MaxPool", "Flatten", "BatchNormalization", "Add", "Identity", "Reshape",
            "Sigmoid", "Transpose", "Concat", "NoSuchOp", ""]
NUMBERS = st.one_of(st.integers(-3, 70), st.sampled_from([0, -1, 2**31, 2**62]))
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([0.0, -1.0, 1e-5]))


def _names(model: onnx.ModelProto) -> list[str]:
    g = model.graph
    names = {i.name for i in g.input} | {t.name for t in g.initializer} | {o.name for o in g.output}
    for n in g.node:
        names.update(n.input)
        names.update(n.output)
    return sorted(names - {""})


@st.composite
def structural_mutation(draw, sources):
    """One to three edits of the model's graph, opsets, nodes, attributes, initializers."""
    name = draw(st.sampled_from(MODELS))
    model = onnx.ModelProto()
    model.CopyFrom(sources[name][1])
    kinds = [_edit(draw, model) for _ in range(draw(st.integers(1, 3)))]
    return name, kinds, model


def _edit(draw, model: onnx.ModelProto) -> str:
    g = model.graph
    if not len(g.node):
        return "none"
    kinds = ["op_type", "drop_node", "swap_nodes", "rename_input", "rename_output", "attr_value", "drop_attr",
             "new_attr", "init_dims", "init_type", "init_data", "input_dims", "input_type", "opset", "output",
             "duplicate_node", "domain"]
    kind = draw(st.sampled_from(kinds))
    k = draw(st.integers(0, len(g.node) - 1))
    node = g.node[k]
    if kind == "op_type":
        node.op_type = draw(st.sampled_from(OP_TYPES))
    elif kind == "drop_node":
        del g.node[k]
    elif kind == "swap_nodes":
        j = draw(st.integers(0, len(g.node) - 1))
        a, b = onnx.NodeProto(), onnx.NodeProto()
        a.CopyFrom(g.node[k])
        b.CopyFrom(g.node[j])
        g.node[k].CopyFrom(b)
        g.node[j].CopyFrom(a)
    elif kind in ("rename_input", "rename_output"):
        field = node.input if kind == "rename_input" else node.output
        if len(field):
            i = draw(st.integers(0, len(field) - 1))
            field[i] = draw(st.one_of(st.sampled_from(_names(model)), st.text(max_size=6)))
    elif kind == "attr_value" and len(node.attribute):
        a = node.attribute[draw(st.integers(0, len(node.attribute) - 1))]
        if a.type == onnx.AttributeProto.INT:
            a.i = draw(NUMBERS)
        elif a.type == onnx.AttributeProto.FLOAT:
            a.f = draw(FLOATS)
        elif a.type == onnx.AttributeProto.INTS:
            del a.ints[:]
            a.ints.extend(draw(st.lists(NUMBERS, max_size=6)))
        else:
            a.type = draw(st.sampled_from([onnx.AttributeProto.INT, onnx.AttributeProto.STRING]))
    elif kind == "drop_attr" and len(node.attribute):
        del node.attribute[draw(st.integers(0, len(node.attribute) - 1))]
    elif kind == "new_attr":
        node.attribute.append(helper.make_attribute(draw(st.sampled_from(["alpha", "axis", "kernel_shape", "zz"])),
                                                    draw(st.one_of(NUMBERS, st.lists(NUMBERS, min_size=1,
                                                                                     max_size=4)))))
    elif kind.startswith("init_") and len(g.initializer):
        t = g.initializer[draw(st.integers(0, len(g.initializer) - 1))]
        if kind == "init_dims":
            del t.dims[:]
            t.dims.extend(draw(st.lists(st.integers(0, 70), max_size=4)))
        elif kind == "init_type":
            t.data_type = draw(st.sampled_from([0, 2, 3, 6, 7, 8, 9, 10, 11, 16, 99]))
        else:
            cut = draw(st.integers(0, len(t.raw_data)))
            t.raw_data = t.raw_data[:cut] + draw(st.binary(max_size=3))
    elif kind == "input_dims" and len(g.input) and len(g.input[0].type.tensor_type.shape.dim):
        dims = g.input[0].type.tensor_type.shape.dim
        d = dims[draw(st.integers(0, len(dims) - 1))]
        choice = draw(st.one_of(st.integers(-2, 70), st.sampled_from(["N", "", "batch"])))
        if isinstance(choice, int):
            d.dim_value = choice
        else:
            d.dim_param = choice
    elif kind == "input_type" and len(g.input):
        g.input[0].type.tensor_type.elem_type = draw(st.sampled_from([0, 2, 6, 7, 10, 11, 99]))
    elif kind == "opset":
        model.opset_import[0].version = draw(st.integers(-1, 30))
    elif kind == "output" and len(g.output):
        g.output[0].name = draw(st.one_of(st.sampled_from(_names(model)), st.text(max_size=6)))
    elif kind == "duplicate_node":
        g.node.insert(draw(st.integers(0, len(g.node))), node)
    elif kind == "domain":
        node.domain = draw(st.sampled_from(["ai.onnx", "com.microsoft", "ai.onnx.ml", "x"]))
    return kind


def test_fuzz_onnx_structure(sources):
    outcomes = Outcomes("onnx structure (import_onnx + convert)")

    @fuzz_settings(examples=80)
    @given(structural_mutation(sources))
    def case(mutation):
        _convert_case(outcomes, mutation[2])

    case()
    outcomes.report(minimum_run=80)
