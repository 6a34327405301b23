"""Float ONNX (opsets 7 to 21) -> float IR. The only module of boldc that imports onnx.

Steps: read the file (or take a ModelProto); check it is an ONNX model with a
supported opset; turn the graph into plain structures (``graph.py``); list every
unsupported op at once; validate with ONNX's node checker and strict shape
inference; bind the input shapes (the batch stays the symbol ``N``, other dynamic
dimensions need ``input_shapes``, which may name them symbolically, e.g. ``L``); then
let ``importer.py`` build the module.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from boldc.frontend import (  # noqa: F401  (register the handlers)
    nn_handlers,
    patterns,
    resize_handlers,
    tensor_handlers,
    transformer_handlers,
)
from boldc.frontend.graph import Graph, GraphInput, Node, OnnxImportError
from boldc.frontend.importer import Importer, check_supported, live_nodes
from boldc.ir.core import Module
from boldc.ir.types import DType, TensorType

OPSETS = range(7, 22)  # the ai.onnx opsets whose semantics the handlers implement
BATCH = "N"
# graph input element types -> IR types (token ids: int64 values within the i32 range)
INPUT_DTYPES = {"float32": DType.f32, "int64": DType.i32, "int32": DType.i32, "bool": DType.b1}
NOT_UTF8_HINT = "(ONNX strings are UTF-8: the file is corrupt)"


def import_model(source, input_shapes: dict[str, list] | None = None) -> Module:
    """``source``: a path or an ``onnx.ModelProto``. ``input_shapes``: graph input
    name -> dims (ints; "N" for the batch), required for dynamic non-batch dims."""
    model, filename = load(source)
    graph = read_graph(model, filename)
    live = live_nodes(graph)
    nodes = patterns.recognise(graph, live)  # decomposed LayerNormalization / Gelu as one node
    check_supported(graph, nodes)
    types = input_types(graph, input_shapes or {})
    validate(model, filename, live)
    module = Importer(graph, lambda node, arrays: _fold(graph, node, arrays), types).run(nodes)
    module.attrs["source"] = Path(filename).name
    module.attrs["onnx_opset"] = graph.opset
    return module


# --- reading -----------------------------------------------------------------------------


def load(source) -> tuple[onnx.ModelProto, str]:
    if isinstance(source, onnx.ModelProto):
        return source, source.graph.name or "<model>"
    path = Path(os.fspath(source))
    if path.is_dir():
        raise OnnxImportError(f"{path}: is a directory, not an ONNX file")
    if not path.exists():
        raise OnnxImportError(f"{path}: no such file")
    try:
        model = onnx.load(str(path))
    except (DecodeError, RuntimeWarning, UnicodeDecodeError, ValueError):
        raise OnnxImportError(f"{path}: not a readable ONNX model (the file is truncated or not an "
                              "ONNX protobuf)") from None
    except onnx.checker.ValidationError as exc:  # e.g. an external data file that is missing
        reason = " ".join(str(exc).split())[:200]
        raise OnnxImportError(f"{path}: cannot read the model's external data ({reason})") from None
    except OSError as exc:  # external data files that are missing or unreadable
        raise OnnxImportError(f"{path}: cannot read the model or its external data: {exc.strerror or exc}") from None
    if not model.HasField("graph") or model.ir_version <= 0:
        raise OnnxImportError(f"{path}: not an ONNX model (no graph or no IR version in the file)")
    return model, str(path)


def opset_of(model: onnx.ModelProto, filename: str) -> int:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise OnnxImportError(f"{filename}: the model declares no ai.onnx opset")
    v = versions[0]
    if v not in OPSETS:
        raise OnnxImportError(f"{filename}: ONNX opset {v} is not supported (boldc reads opsets "
                              f"{OPSETS.start} to {OPSETS.stop - 1}); re-export the model with an opset in "
                              "that range or convert it with onnx.version_converter")
    return v


def _attr(a: onnx.AttributeProto):
    if a.type == onnx.AttributeProto.TENSOR:
        return numpy_helper.to_array(a.t)
    if a.type == onnx.AttributeProto.TENSORS:
        return [numpy_helper.to_array(t) for t in a.tensors]
    if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS, onnx.AttributeProto.SPARSE_TENSOR,
                  onnx.AttributeProto.SPARSE_TENSORS, onnx.AttributeProto.TYPE_PROTO):
        return f"<{onnx.AttributeProto.AttributeType.Name(a.type).lower()}>"
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [s.decode("utf-8", "replace") for s in v]
    return v


def read_graph(model: onnx.ModelProto, filename: str) -> Graph:
    opset = opset_of(model, filename)
    g = model.graph
    try:
        inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    except Exception as exc:  # noqa: BLE001  (corrupt tensor data: any decoding error)
        raise OnnxImportError(f"{filename}: an initializer cannot be decoded: {exc}") from None
    # Graph inputs that also have an initializer (IR < 4 exports, keep_initializers_as_inputs)
    # are constants with an overridable default: boldc compiles them as constants.
    inputs = [_graph_input(vi) for vi in g.input if vi.name not in inits]
    graph = Graph(filename, opset, inputs, [o.name for o in g.output], inits)
    for k, n in enumerate(g.node):
        outs = list(n.output)
        name = n.name or f"#{k} -> {outs[0] if outs else '?'}"
        graph.nodes.append(Node(n.op_type, name, list(n.input), outs, {a.name: _attr(a) for a in n.attribute},
                                n.domain, n))
    return graph


def _graph_input(vi: onnx.ValueInfoProto) -> GraphInput:
    t = vi.type.tensor_type
    try:
        elem = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).name
    except (KeyError, TypeError, ValueError):
        elem = _type_name(t.elem_type)
    dims: list = []
    if t.HasField("shape"):
        for d in t.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    else:
        dims = None
    return GraphInput(vi.name, elem, dims)


def _type_name(code: int) -> str:
    """ONNX's name of an element type code ("undefined", "type code 99" for codes ONNX has not)."""
    if not code:
        return "undefined"
    try:
        return onnx.TensorProto.DataType.Name(code)
    except ValueError:
        return f"type code {code}"


def validate(model: onnx.ModelProto, filename: str, nodes: list[Node]) -> None:
    """ONNX's checker on every node (attributes and arity against the op schema) and
    strict shape inference: a malformed model is refused with ONNX's own reason before
    anything is built. (Not ``check_model``: it also refuses graph outputs declared
    without a shape, which onnxruntime runs.)"""
    ctx = onnx.checker.C.CheckerContext()
    ctx.ir_version = model.ir_version
    ctx.opset_imports = {o.domain: o.version for o in model.opset_import}
    for node in nodes:
        try:
            onnx.checker.check_node(node.proto, ctx)
        except onnx.checker.ValidationError as exc:
            first = str(exc).strip().splitlines()[0]
            raise OnnxImportError(f"{filename}: node '{node.name}' ({node.op_type}): invalid ONNX node: "
                                  f"{first}") from None
        except UnicodeDecodeError:  # the checker's message quotes a name that is not UTF-8
            raise OnnxImportError(f"{filename}: node '{node.name}' ({node.op_type}): invalid ONNX node: a name "
                                  f"or string in it is not UTF-8 text {NOT_UTF8_HINT}") from None
    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnnxImportError(f"{filename}: invalid ONNX model: {first}") from None
    except UnicodeDecodeError:
        raise OnnxImportError(f"{filename}: invalid ONNX model: a name or string in it is not UTF-8 text "
                              f"{NOT_UTF8_HINT}") from None


# --- input shapes ------------------------------------------------------------------------------


def input_types(graph: Graph, shapes: dict[str, list]) -> list[TensorType]:
    names = [i.name for i in graph.inputs]
    unknown = sorted(set(shapes) - set(names))
    if unknown:
        raise OnnxImportError(f"{graph.filename}: --input-shape names unknown input(s) {', '.join(unknown)} "
                              f"(the model's inputs: {', '.join(names) or 'none'})")
    return [_input_type(graph.filename, gi, shapes.get(gi.name)) for gi in graph.inputs]


def _input_type(filename: str, gi: GraphInput, given: list | None) -> TensorType:
    if gi.elem_type not in INPUT_DTYPES:
        raise OnnxImportError(f"{filename}: input '{gi.name}' has element type {gi.elem_type}; "
                              "boldc imports float32 inputs only (and int32 / int64 ones, such as token ids, as i32, "
                              "and bool ones as b1)")
    dtype = INPUT_DTYPES[gi.elem_type]
    if given is not None:
        if gi.dims is not None and len(given) != len(gi.dims):
            raise OnnxImportError(f"{filename}: --input-shape gives {len(given)} dimensions for input "
                                  f"'{gi.name}', which has {len(gi.dims)}")
        if BATCH in given[1:]:
            raise OnnxImportError(f"{filename}: only the first (batch) dimension of '{gi.name}' may be N "
                                  "(name another symbolic size otherwise, e.g. L)")
        for k, (d, g) in enumerate(zip(gi.dims or [], given)):
            if isinstance(d, int) and d > 0 and g != d and not (k == 0 and g == BATCH):
                raise OnnxImportError(f"{filename}: input '{gi.name}' has size {d} in dimension {k}, "
                                      f"--input-shape gives {g}")
        return TensorType(dtype, tuple(given))
    if gi.dims is None:
        raise OnnxImportError(f"{filename}: input '{gi.name}' has no shape; give it with "
                              f"--input-shape {gi.name}=1x3x32x32 (for example)")
    dims = []
    for k, d in enumerate(gi.dims):
        if isinstance(d, int) and d > 0:
            dims.append(d)
        elif k == 0:
            dims.append(BATCH)  # a dynamic batch stays symbolic
        else:
            shown = "x".join(str(x) if isinstance(x, int) and x > 0 else "?" for x in gi.dims)
            raise OnnxImportError(f"{filename}: input '{gi.name}' has a dynamic dimension {k} "
                                  f"({d or 'unnamed'}) in shape {shown}; give its size with "
                                  f"--input-shape {gi.name}=... (e.g. N{'x' + 'x'.join(['32'] * (len(gi.dims) - 1))})")
    return TensorType(dtype, tuple(dims))


# --- generic constant folding -----------------------------------------------------------------


def _fold(graph: Graph, node: Node, arrays: list) -> list:
    """Evaluate one standard node on constants with ONNX's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    proto = node.proto
    feeds = {name: arr for name, arr in zip(proto.input, arrays) if name}
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
              for n, a in feeds.items()]
    outputs = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in proto.output if o]
    model = helper.make_model(helper.make_graph([proto], "fold", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", graph.opset)])
    results = iter(ReferenceEvaluator(model).run(None, feeds))
    return [np.asarray(next(results)) if o else None for o in proto.output]
