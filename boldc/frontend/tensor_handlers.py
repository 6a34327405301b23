"""ONNX tensor ops -> registry ops, and the constant folds that keep the batch symbolic.

Shape arithmetic (Shape -> Gather -> Unsqueeze -> Concat -> Reshape, as exporters
write ``x.view(x.size(0), -1)``) is folded at import time; the batch size read by
``Shape`` stays the symbol ``N``, so the resulting ``reshape`` keeps the batch
symbolic. Elementwise Add/Sub/Mul/Div/Sum map onto ``add``, ``sub``, ``mul`` and ``div``.
"""

from __future__ import annotations

import numpy as np

from boldc.frontend.graph import Node, f32_attr
from boldc.frontend.importer import Importer, folds, handles
from boldc.ir.core import Value
from boldc.ir.types import DType

# ONNX TensorProto element types that are integers (Cast of a shape keeps its symbols).
_INT_TYPES = {2, 3, 4, 5, 6, 7, 12, 13}
_WIDE_INT_TYPES = {6, 7}  # int32, int64: hold every i32 value
_FLOAT = 1
_BOOL = 9


def _axes(imp: Importer, node: Node, input_index: int) -> list[int] | None:
    """The ``axes`` of Squeeze/Unsqueeze: an attribute before opset 13, an input since."""
    if imp.opset < 13:
        axes = node.attr("axes")
        return None if axes is None else [int(a) for a in axes]
    return imp.const_list(node, input_index, "axes")


def _squeezed(imp: Importer, node: Node, shape: list) -> list:
    axes = _axes(imp, node, 1)
    r = len(shape)
    if axes is None:
        axes = [i for i, d in enumerate(shape) if d == 1]
    axes = [a + r if a < 0 else a for a in axes]
    for a in axes:
        if not 0 <= a < r or shape[a] != 1:
            raise imp.error(node, f"cannot squeeze axis {a} of shape {shape}")
    return [d for i, d in enumerate(shape) if i not in axes]


def _unsqueezed(imp: Importer, node: Node, shape: list) -> list:
    axes = _axes(imp, node, 1)
    if axes is None:
        raise imp.error(node, "axes are required")
    r = len(shape) + len(axes)
    axes = sorted(a + r if a < 0 else a for a in axes)
    out = list(shape)
    for a in axes:
        if not 0 <= a <= len(out):
            raise imp.error(node, f"axis {a} out of range")
        out.insert(a, 1)
    return out


def _reshape_target(imp: Importer, node: Node, shape: list, target: list) -> list:
    """ONNX Reshape's target with 0 (copy the input dimension, unless allowzero) resolved."""
    allowzero = imp.opset >= 14 and node.attr("allowzero", 0)
    out = []
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            if i >= len(shape):
                raise imp.error(node, f"shape entry {i} is 0 but the input has rank {len(shape)}")
            d = shape[i]
        out.append(d)
    return out


# --- constant folds (inputs known at import time; may hold the symbol N) --------------------


def _obj(arr: np.ndarray) -> np.ndarray:
    return arr if arr.dtype == object else arr.astype(np.int64).astype(object)


@folds("Identity", "Dropout")
def fold_identity(imp: Importer, node: Node, arrays: list) -> list:
    return [arrays[0]]


@folds("Constant")
def fold_constant(imp: Importer, node: Node, arrays: list) -> list:
    for key, dtype in (("value", None), ("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in node.attrs:
            return [np.asarray(node.attrs[key], dtype=dtype)]
    return imp.fold_node(node, arrays)  # strings, sparse values: the generic evaluator


@folds("Shape")
def fold_shape(imp: Importer, node: Node, arrays: list) -> list:
    return [_shape_vector(imp, node, list(arrays[0].shape))]


@handles("Shape")
def shape(imp: Importer, node: Node) -> list:
    return [_shape_vector(imp, node, list(imp.value(node, 0).type.shape))]


def _shape_vector(imp: Importer, node: Node, dims: list) -> np.ndarray:
    start, end = (int(node.attr("start", 0)), node.attr("end")) if imp.opset >= 15 else (0, None)
    dims = dims[start:None if end is None else int(end)]
    if all(isinstance(d, int) for d in dims):
        return np.array(dims, dtype=np.int64)
    return np.array(dims, dtype=object)


@folds("Gather")
def fold_gather(imp: Importer, node: Node, arrays: list) -> list:
    data, idx = arrays
    axis = int(node.attr("axis", 0))
    idx = np.where(idx < 0, idx + data.shape[axis], idx)
    return [np.take(data, idx.astype(np.int64), axis=axis)]


@folds("Concat")
def fold_concat(imp: Importer, node: Node, arrays: list) -> list:
    parts = [a for a in arrays if a is not None]
    if any(a.dtype == object for a in parts):
        parts = [_obj(a) for a in parts]
    return [np.concatenate(parts, axis=int(node.attr("axis", 0)))]


@folds("Unsqueeze")
def fold_unsqueeze(imp: Importer, node: Node, arrays: list) -> list:
    return [arrays[0].reshape(_unsqueezed(imp, node, list(arrays[0].shape)))]


@folds("Squeeze")
def fold_squeeze(imp: Importer, node: Node, arrays: list) -> list:
    return [arrays[0].reshape(_squeezed(imp, node, list(arrays[0].shape)))]


@folds("Reshape")
def fold_reshape(imp: Importer, node: Node, arrays: list) -> list:
    target = [int(d) for d in arrays[1].reshape(-1)]
    return [arrays[0].reshape(_reshape_target(imp, node, list(arrays[0].shape), target))]


@folds("Slice")
def fold_slice(imp: Importer, node: Node, arrays: list) -> list:
    data = arrays[0]
    if imp.opset < 10:
        starts, ends = node.attr("starts"), node.attr("ends")
        axes, steps = node.attr("axes"), None
    else:
        starts, ends = (list(arrays[i].reshape(-1)) for i in (1, 2))
        axes = None if len(arrays) < 4 or arrays[3] is None else list(arrays[3].reshape(-1))
        steps = None if len(arrays) < 5 or arrays[4] is None else list(arrays[4].reshape(-1))
    axes = list(range(len(starts))) if axes is None else [int(a) + data.ndim if a < 0 else int(a) for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * data.ndim
    for a, s, e, st in zip(axes, starts, ends, steps):
        index[a] = slice(int(s), int(e), int(st))  # Python slicing clamps as ONNX does
    return [data[tuple(index)]]


@folds("Cast")
def fold_cast(imp: Importer, node: Node, arrays: list) -> list:
    if arrays[0].dtype == object:
        if int(node.attr("to")) not in _INT_TYPES:
            raise imp.error(node, "casts the symbolic batch size to a non-integer type; fix the batch "
                                  "with --input-shape")
        return [arrays[0]]
    return imp.fold_node(node, arrays)


# --- structural ops on computed tensors -------------------------------------------------------


@handles("Identity", "Dropout")
def identity(imp: Importer, node: Node) -> list:
    """Identity, and Dropout at inference (its mask output may not be used)."""
    imp.only_first_output(node)
    if node.op_type == "Dropout" and imp.opset >= 12 and node.input(2):
        if bool(imp.const(node, 2, "training_mode").reshape(())):
            raise imp.error(node, "training_mode=true is not supported (export the model in eval mode)")
    return [imp.value(node, 0)]


@handles("Cast")
def cast(imp: Importer, node: Node) -> list:
    """Casts that keep values: float to float32, integers (i32) to int32 / int64 or to
    float32, bool to float32 or to int32 / int64 (0 or 1, ONNX's meaning, not the IR cast's
    ±1) or bool. A cast to a narrower or unsigned integer type (which wraps in ONNX) is refused."""
    x, to = imp.value(node, 0), int(node.attr("to"))
    dt = x.type.dtype
    if to == _FLOAT and dt.is_float or to in _WIDE_INT_TYPES and dt.is_int or to == _BOOL and dt.is_bool:
        return [x]
    if to == _FLOAT and dt.is_int:
        return [imp.emit(node, "cast", [x], {"to": "f32"})]
    if (to == _FLOAT or to in _WIDE_INT_TYPES) and dt.is_bool:
        if to == _FLOAT:
            one, zero = (imp.param(np.array(v, np.float32), f"const_{v:g}", key=("const", v)) for v in (1.0, 0.0))
        else:
            one, zero = (imp.param(np.array(v, np.int32), f"const_{v}_i32", key=("const", v, "i32"), dtype=DType.i32)
                         for v in (1, 0))
        return [imp.emit(node, "where", [x, one, zero])]
    raise imp.error(node, f"a cast of {x.type} to ONNX type {to} is not supported (only casts that keep the values "
                          "of floats, integers or bools)")


@handles("Reshape")
def reshape(imp: Importer, node: Node) -> list:
    x = imp.value(node, 0)
    target = _reshape_target(imp, node, list(x.type.shape), imp.const_list(node, 1, "shape"))
    return [_reshape_to(imp, node, x, target)]


def _reshape_to(imp: Importer, node: Node, x: Value, target: list) -> Value:
    if target == list(x.type.shape):
        return x
    return imp.emit(node, "reshape", [x], {"shape": target})


@handles("Flatten")
def flatten(imp: Importer, node: Node) -> list:
    return [imp.emit(node, "flatten", [imp.value(node, 0)], {"axis": int(node.attr("axis", 1))})]


@handles("Squeeze")
def squeeze(imp: Importer, node: Node) -> list:
    x = imp.value(node, 0)
    return [_reshape_to(imp, node, x, _squeezed(imp, node, list(x.type.shape)))]


@handles("Unsqueeze")
def unsqueeze(imp: Importer, node: Node) -> list:
    x = imp.value(node, 0)
    return [_reshape_to(imp, node, x, _unsqueezed(imp, node, list(x.type.shape)))]


@handles("Transpose")
def transpose(imp: Importer, node: Node) -> list:
    x = imp.value(node, 0)
    perm = [int(p) for p in node.attr("perm", list(range(x.type.rank))[::-1])]
    if perm == list(range(x.type.rank)):
        return [x]
    return [imp.emit(node, "transpose", [x], {"perm": perm})]


@handles("DepthToSpace", "SpaceToDepth")
def depth_space(imp: Importer, node: Node) -> list:
    """-> depth_to_space / space_to_depth; ``mode`` DCR (the default; DepthToSpace has it since
    opset 11, SpaceToDepth since 28) or CRD (PyTorch's PixelShuffle exports DepthToSpace CRD)."""
    op = "depth_to_space" if node.op_type == "DepthToSpace" else "space_to_depth"
    blocksize, mode = node.attr("blocksize"), node.attr("mode", "DCR")
    if blocksize is None:
        raise imp.error(node, "blocksize is required")
    if mode not in ("DCR", "CRD"):
        raise imp.error(node, f"unknown mode '{mode}' (DCR or CRD)")
    return [imp.emit(node, op, [imp.value(node, 0)], {"blocksize": int(blocksize), "mode": mode})]


@handles("Concat")
def concat(imp: Importer, node: Node) -> list:
    values = [imp.value(node, i) for i, name in enumerate(node.inputs) if name]
    return [imp.emit(node, "concat", values, {"axis": int(node.attr("axis"))})]


@handles("Expand")
def expand(imp: Importer, node: Node) -> list:
    """ONNX's two-way broadcast of the input's shape with ``shape`` (a constant after folding,
    the batch possibly the symbol N; a 1 there keeps the input's size) becomes ``expand``'s
    target; a target equal to the input's shape is no op."""
    x = imp.value(node, 0)
    shape = imp.const_list(node, 1, "shape")
    have = list(x.type.shape)
    rank = max(len(have), len(shape))
    target = []
    for a, b in zip([1] * (rank - len(have)) + have, [1] * (rank - len(shape)) + shape):
        if a != b and 1 not in (a, b):
            raise imp.error(node, f"cannot broadcast the input {x.type} to the shape {shape}")
        target.append(a if b == 1 else b)
    if target == have:
        return [x]
    return [imp.emit(node, "expand", [x], {"shape": target})]


@handles("Pad")
def pad(imp: Importer, node: Node) -> list:
    """Constant padding only (before opset 11 from attributes, since from inputs;
    opset 18 adds ``axes``). A zero pad feeding a Conv becomes the Conv's padding."""
    x = imp.value(node, 0)
    r = x.type.rank
    if imp.opset < 11:
        mode, pads, value = node.attr("mode", "constant"), node.attr("pads"), node.attr("value", 0.0)
        axes = None
    else:
        mode = node.attr("mode", "constant")
        pads = imp.const_list(node, 1, "pads")
        v = imp.const(node, 2, "constant_value")
        value = 0.0 if v is None else float(v.reshape(()))
        axes = imp.const_list(node, 3, "axes") if imp.opset >= 18 else None
    if mode != "constant":
        raise imp.error(node, f"mode '{mode}' is not supported (only constant padding)")
    pads = [int(p) for p in pads]
    if min(pads, default=0) < 0:
        raise imp.error(node, "negative pads (cropping) are not supported")
    if axes is not None:
        full = [0] * (2 * r)
        for k, a in enumerate(axes):
            a = a + r if a < 0 else a
            full[a], full[a + r] = pads[k], pads[k + len(axes)]
        pads = full
    if not any(pads):
        return [x]
    return [imp.emit(node, "pad", [x], {"pads": pads, "value": f32_attr(value)})]


# --- elementwise arithmetic -------------------------------------------------------------------


@handles("Add")
def add(imp: Importer, node: Node) -> list:
    a, b = imp.get(node, 0), imp.get(node, 1)
    if isinstance(a, Value) and isinstance(b, Value):
        return [imp.emit(node, "add", [a, b])]
    i = 0 if isinstance(a, Value) else 1  # the computed operand
    fused = _fuse_bias(imp, node, i)
    return [fused if fused is not None else imp.emit(node, "add", [imp.value(node, i), imp.value(node, 1 - i)])]


def _fuse_bias(imp: Importer, node: Node, i: int) -> Value | None:
    """x + c where x is a bias-free linear/conv2d used only here and c holds one value
    per output channel: c becomes the layer's bias (MatMul + Add from exporters)."""
    x = imp.get(node, i)
    op = imp.producer(x)
    if op is None or op.name not in ("linear", "conv2d") or len(op.operands) != 2 or imp.uses[node.input(i)] != 1:
        return None
    c = imp.get(node, 1 - i).array
    if c.dtype == object:
        return None
    channels = x.type.shape[-1] if op.name == "linear" else x.type.shape[1]
    axis = x.type.rank - 1 if op.name == "linear" else 1
    if c.ndim > x.type.rank or c.size != channels:
        return None
    padded = (1,) * (x.type.rank - c.ndim) + c.shape
    if any(d != 1 for k, d in enumerate(padded) if k != axis):
        return None
    op.operands.append(imp.param(c.reshape(channels).astype(np.float32), imp.weight_name(node, 1 - i, "bias"),
                                 key=(node.input(1 - i), "bias", channels)))
    return x


@handles("Sub")
def sub(imp: Importer, node: Node) -> list:
    """a - c = a + (-c) for a constant c (negated at import, so that it may become a bias);
    a - b for a computed b -> sub."""
    a, b = imp.get(node, 0), imp.get(node, 1)
    if not isinstance(b, Value):
        neg = imp.param(-imp.float_array(node, b), b.name + ".neg", key=(b.name, "neg"))
        return [imp.emit(node, "add", [a, neg])]
    return [imp.emit(node, "sub", [imp.value(node, 0), b])]


@handles("Mul")
def mul(imp: Importer, node: Node) -> list:
    return [imp.emit(node, "mul", [imp.value(node, 0), imp.value(node, 1)])]


@handles("Div")
def div(imp: Importer, node: Node) -> list:
    """a / c with a constant c is a · (1/c); a / b with a computed b -> div."""
    b = imp.get(node, 1)
    if isinstance(b, Value):
        a = imp.value(node, 0)
        if not (a.type.dtype.is_float and b.type.dtype.is_float):
            raise imp.error(node, f"division of {a.type} by {b.type}: only float tensors are divided "
                                  "(ONNX's integer division truncates)")
        return [imp.emit(node, "div", [a, b])]
    with np.errstate(divide="ignore"):
        inv = (np.float32(1) / imp.float_array(node, b)).astype(np.float32)
    return [imp.emit(node, "mul", [imp.value(node, 0), imp.param(inv, b.name + ".inv", key=(b.name, "inv"))])]


@handles("Sum")
def sum_(imp: Importer, node: Node) -> list:
    operands = [imp.value(node, i) for i, name in enumerate(node.inputs) if name]
    acc = operands[0]
    if len(operands) == 1:
        return [acc]
    for v in operands[1:]:
        acc = imp.emit(node, "add", [acc, v])
    return [acc]
