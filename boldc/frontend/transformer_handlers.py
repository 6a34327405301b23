"""ONNX ops of transformers -> registry ops: LayerNormalization, products of two computed
tensors (MatMul, Gemm), Erf and Gelu, Gather (embedding lookups and constant indices),
Where / Equal / Not (attention masks), Split and Slice of computed tensors, ReduceMean /
ReduceSum, Pow by a small integer.

Exporters that predate LayerNormalization and Gelu write them as chains of elementwise
nodes; ``patterns.py`` recognises those chains before the import and hands them here as
LayerNormalization / Gelu nodes.
"""

from __future__ import annotations

import numpy as np

from boldc.frontend.graph import Const, Node, f32_attr
from boldc.frontend.importer import Importer, handles
from boldc.ir.core import Value
from boldc.ir.types import DType

BIG = 2**62  # an ONNX Slice end at or beyond this means "to the end" (exporters write INT64_MAX)


def typed_operand(imp: Importer, node: Node, i: int, like: Value | None) -> Value:
    """Input ``i`` as an IR value; a constant becomes a param of ``like``'s element kind
    (b1 for bool data, i32 next to an integer tensor, f32 otherwise)."""
    v = imp.get(node, i)
    if v is None:
        raise imp.error(node, f"input {i} is missing")
    if not isinstance(v, Const):
        return v
    if v.symbolic:
        raise imp.error(node, f"constant '{v.name}' holds a symbolic size and cannot be used as a tensor here")
    arr = v.array
    if arr.dtype == np.bool_:
        return imp.param(arr, v.name, key=(v.name, "b1"))
    if like is not None and like.type.dtype.is_int and np.issubdtype(arr.dtype, np.integer):
        return imp.param(arr.astype(np.int32), v.name, key=(v.name, "i32"), dtype=DType.i32)
    return imp.value(node, i)


def axis_of(imp: Importer, node: Node, axis, rank: int, what: str = "axis") -> int:
    """``axis`` of a rank-``rank`` input in 0..rank-1 (ONNX counts negative axes from the
    end); out of range is a one-line error naming the node."""
    axis = int(axis)
    if not -rank <= axis < rank:
        raise imp.error(node, f"{what} {axis} is out of range for an input of rank {rank}")
    return axis % rank


# --- normalization --------------------------------------------------------------------------


@handles("LayerNormalization")
def layer_normalization(imp: Importer, node: Node) -> list:
    """-> layernorm(x, scale, bias?) over the axes axis..rank-1. The form recognised from
    a decomposed chain (``patterns.py``) gives its reduced axes as ``axes`` and may have no
    scale (then ones)."""
    imp.only_first_output(node)
    x = imp.value(node, 0)
    r = x.type.rank
    if "axes" in node.attrs:
        axes = sorted(axis_of(imp, node, a, r) for a in node.attr("axes"))
        if axes != list(range(axes[0], r)):
            raise imp.error(node, f"normalizes over the axes {axes} of {x.type}, which are not the trailing axes; "
                                  "only a normalization over the last axes is supported")
        axis = axes[0]
    else:
        axis = axis_of(imp, node, node.attr("axis", -1), r) if r else 0
    operands = [x]
    shape = x.type.shape[axis:]
    if "axes" in node.attrs:  # from a chain: a constant scale / bias of the row's values, broadcast to it
        if not all(isinstance(d, int) for d in shape):
            raise imp.error(node, f"the normalized dimensions of {x.type} must be static")
        for i, fill in ((1, 1.0), (2, None)):
            arr = imp.get(node, i).array if node.input(i) else (None if fill is None else np.float32(fill))
            if arr is not None:
                row = np.asarray(arr, np.float32).reshape(np.shape(arr)[-len(shape):] if np.ndim(arr) else ())
                try:
                    data = np.ascontiguousarray(np.broadcast_to(row, shape))
                except ValueError:
                    raise imp.error(node, f"its {'scale' if i == 1 else 'bias'} of shape {list(np.shape(arr))} does "
                                          f"not broadcast to the normalized dimensions {list(shape)}") from None
                kept = node.input(i) and tuple(np.shape(arr)) == tuple(shape)  # the initializer as it is
                name = imp.get(node, i).name if kept else f"{node.outputs[0]}.{'scale' if i == 1 else 'bias'}"
                operands.append(imp.param(data, name))
        return [imp.emit(node, "layernorm", operands,
                         {"axis": axis, "epsilon": f32_attr(node.attr("epsilon", 1e-5))})]
    operands.append(imp.value(node, 1))
    if node.input(2):
        operands.append(imp.value(node, 2))
    return [imp.emit(node, "layernorm", operands, {"axis": axis, "epsilon": f32_attr(node.attr("epsilon", 1e-5))})]


# --- products ---------------------------------------------------------------------------------


def batched_matmul(imp: Importer, node: Node) -> list:
    """MatMul whose B is computed (or a constant of rank > 2) -> matmul, numpy's rules:
    a 1-D A is a row [1, K], a 1-D B a column [K, 1], the added axis dropped again."""
    a, b = imp.value(node, 0), imp.value(node, 1)
    drop = []
    if a.type.rank == 1:
        a = imp.emit(node, "reshape", [a], {"shape": [1, a.type.shape[0]]})
        drop.append(-2)
    if b.type.rank == 1:
        b = imp.emit(node, "reshape", [b], {"shape": [b.type.shape[0], 1]})
        drop.append(-1)
    y = imp.emit(node, "matmul", [a, b])
    if drop:
        shape = list(y.type.shape)
        for d in sorted(drop):  # -2 before -1: both index the unreduced shape
            del shape[d if d == -1 else len(shape) + d]
        y = imp.emit(node, "reshape", [y], {"shape": shape})
    return [y]


def gemm_of_computed(imp: Importer, node: Node) -> list:
    """Gemm whose B is computed: alpha · A' · B' + beta · C -> transpose, matmul, mul, add."""
    a, b = imp.value(node, 0), imp.value(node, 1)
    if node.attr("transA", 0):
        a = imp.emit(node, "transpose", [a], {"perm": [1, 0]})
    if node.attr("transB", 0):
        b = imp.emit(node, "transpose", [b], {"perm": [1, 0]})
    y = imp.emit(node, "matmul", [a, b])
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    if alpha != 1.0:
        y = imp.emit(node, "mul", [y, imp.param(np.array(alpha, np.float32), "gemm.alpha", key=("alpha", alpha))])
    if node.input(2):
        c = imp.get(node, 2)
        if isinstance(c, Const):
            c = imp.param(imp.float_array(node, c) * np.float32(beta), f"{c.name}.beta", key=(c.name, "beta", beta))
        elif beta != 1.0:
            c = imp.emit(node, "mul", [c, imp.param(np.array(beta, np.float32), "gemm.beta", key=("beta", beta))])
        y = imp.emit(node, "add", [y, c])
    return [y]


# --- elementwise functions ------------------------------------------------------------------------


@handles("Erf")
def erf(imp: Importer, node: Node) -> list:
    return [imp.emit(node, "erf", [imp.value(node, 0)])]


@handles("Gelu")
def gelu(imp: Importer, node: Node) -> list:
    """Gelu (opset 20) or the chain x·0.5·(1 + erf(x/√2)) (or its tanh form) -> gelu."""
    approximate = node.attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise imp.error(node, f"approximate '{approximate}' is not supported (none or tanh)")
    return [imp.emit(node, "gelu", [imp.value(node, 0)], {"approximate": approximate})]


@handles("Pow")
def pow_(imp: Importer, node: Node) -> list:
    """x ** k for a constant integer k in 1..4 -> products of x; other exponents are refused."""
    x = imp.value(node, 0)
    k = imp.const(node, 1, "the exponent")
    if k.size != 1 or float(k.reshape(-1)[0]) not in (1.0, 2.0, 3.0, 4.0):
        raise imp.error(node, f"only the exponents 1, 2, 3 and 4 are supported, got {k.reshape(-1).tolist()}")
    y = x
    for _ in range(int(k.reshape(-1)[0]) - 1):
        y = imp.emit(node, "mul", [y, x])
    return [y]


# --- lookups and slices -------------------------------------------------------------------------------


@handles("Gather")
def gather(imp: Importer, node: Node) -> list:
    """Constant data [V, D] gathered by computed integer ids -> embedding; computed data
    gathered by constant indices -> slice_axis (a scalar index drops the axis: x[:, 0])."""
    data, idx = imp.get(node, 0), imp.get(node, 1)
    axis = int(node.attr("axis", 0))
    if isinstance(data, Const):
        if not idx.type.dtype.is_int:
            raise imp.error(node, f"indices must be integers, got {idx.type}")
        if axis != 0 or data.array.ndim != 2:
            raise imp.error(node, f"a lookup in a constant table needs a matrix gathered on axis 0 (an embedding), "
                                  f"got shape {list(data.array.shape)} on axis {axis}")
        table = imp.param(imp.float_array(node, data), imp.weight_name(node, 0, "weight"), key=(node.input(0), "as-is"))
        return [imp.emit(node, "embedding", [table, idx])]
    if isinstance(idx, Value):
        raise imp.error(node, "gathering a computed tensor at computed indices is not supported (the indices must "
                              "be constants, or the data a constant table)")
    x = data
    r = x.type.rank
    axis = axis % r if -r <= axis < r else None
    if axis is None:
        raise imp.error(node, f"axis {node.attr('axis')} out of range for {x.type}")
    arr = idx.array
    if arr.dtype == object or arr.ndim > 1:
        raise imp.error(node, "only a constant scalar or 1-D index is supported for a computed tensor")
    size = x.type.shape[axis]
    picks = []
    for i in (int(v) for v in arr.reshape(-1)):
        if i < 0:
            if not isinstance(size, int):
                raise imp.error(node, f"a negative index ({i}) of the symbolic dimension {size} is not supported")
            i += size
        if i < 0 or (isinstance(size, int) and i >= size):
            raise imp.error(node, f"index {int(arr.reshape(-1)[len(picks)])} out of range for dimension {size}")
        picks.append(i)
    runs: list[list[int]] = []
    for i in picks:
        if runs and runs[-1][1] == i:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    parts = [imp.emit(node, "slice_axis", [x], {"axis": axis, "start": s, "stop": e}) for s, e in runs]
    y = parts[0] if len(parts) == 1 else imp.emit(node, "concat", parts, {"axis": axis})
    if arr.ndim == 0:
        shape = [d for k, d in enumerate(x.type.shape) if k != axis]
        y = imp.emit(node, "reshape", [y], {"shape": shape})
    return [y]


@handles("Split")
def split(imp: Importer, node: Node) -> list:
    """-> one slice_axis per output; sizes from ``split`` (attribute before opset 13, input
    since), or equal parts (opset 18: the last one smaller when the size does not divide)."""
    x = imp.value(node, 0)
    r = x.type.rank
    axis = axis_of(imp, node, node.attr("axis", 0), r)
    sizes = imp.const_list(node, 1, "split") if imp.opset >= 13 else node.attr("split")
    n = len(node.outputs)
    size = x.type.shape[axis]
    if sizes is None:
        if not isinstance(size, int):
            raise imp.error(node, f"cannot split the symbolic dimension {size} into equal parts")
        chunk = -(-size // n)
        if imp.opset < 18 and size % n:
            raise imp.error(node, f"dimension {size} does not split into {n} equal parts")
        sizes = [chunk] * (n - 1) + [size - chunk * (n - 1)]
    sizes = [int(s) for s in sizes]
    if len(sizes) != n or min(sizes) < 1 or (isinstance(size, int) and sum(sizes) != size):
        raise imp.error(node, f"split sizes {sizes} do not cover dimension {size} with {n} outputs of at least "
                              "one element each")
    if not isinstance(size, int):
        raise imp.error(node, f"splits the symbolic dimension {size} by sizes {sizes}, which cannot be checked "
                              f"against it: give {size} a size with --input-shape")
    outs, start = [], 0
    for k, s in enumerate(sizes):
        outs.append(imp.emit(node, "slice_axis", [x], {"axis": axis, "start": start, "stop": start + s}, out=k))
        start += s
    return outs


@handles("Slice")
def slice_(imp: Importer, node: Node) -> list:
    """Slice of a computed tensor with constant starts/ends and step 1 -> slice_axis per
    sliced axis (a symbolic dimension can be sliced from its start, or kept whole)."""
    x = imp.value(node, 0)
    r = x.type.rank
    if imp.opset < 10:
        starts, ends, axes, steps = node.attr("starts"), node.attr("ends"), node.attr("axes"), None
    else:
        starts, ends = imp.const_list(node, 1, "starts"), imp.const_list(node, 2, "ends")
        axes, steps = imp.const_list(node, 3, "axes"), imp.const_list(node, 4, "steps")
    axes = list(range(len(starts))) if axes is None else [axis_of(imp, node, a, r) for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    y = x
    for a, s, e, st in zip(axes, starts, ends, steps):
        if int(st) != 1:
            raise imp.error(node, f"step {st} is not supported on a computed tensor (only step 1)")
        dim = x.type.shape[a]
        s, e = int(s), int(e)
        if isinstance(dim, int):
            s, e, _ = slice(s, e).indices(dim)
            if (s, e) == (0, dim):
                continue
            if s >= e:
                raise imp.error(node, f"the slice [{s}, {e}) of axis {a} is empty")
        elif s == 0 and e >= BIG:
            continue
        elif not 0 <= s < e < BIG:
            raise imp.error(node, f"the slice [{s}, {e}) of the symbolic dimension {dim} needs its size: fix it "
                                  "with --input-shape")
        y = imp.emit(node, "slice_axis", [y], {"axis": a, "start": s, "stop": e})
    return [y]


# --- masks --------------------------------------------------------------------------------------------


@handles("Equal")
def equal(imp: Importer, node: Node) -> list:
    a, b = imp.get(node, 0), imp.get(node, 1)
    like = a if isinstance(a, Value) else b
    return [imp.emit(node, "equal", [typed_operand(imp, node, 0, like), typed_operand(imp, node, 1, like)])]


@handles("Not")
def not_(imp: Importer, node: Node) -> list:
    return [imp.emit(node, "not", [imp.value(node, 0)])]


@handles("Where")
def where(imp: Importer, node: Node) -> list:
    a, b = imp.get(node, 1), imp.get(node, 2)
    like = a if isinstance(a, Value) else b if isinstance(b, Value) else None
    cond = typed_operand(imp, node, 0, None)
    return [imp.emit(node, "where", [cond, typed_operand(imp, node, 1, like), typed_operand(imp, node, 2, like)])]


# --- reductions --------------------------------------------------------------------------------------


@handles("ReduceMean", "ReduceSum")
def reduce(imp: Importer, node: Node) -> list:
    """-> reduce_mean / reduce_sum; ``axes`` an attribute before opset 18 (ReduceSum: 13),
    an input since, where an empty or absent one means all axes unless noop_with_empty_axes."""
    op = "reduce_mean" if node.op_type == "ReduceMean" else "reduce_sum"
    x = imp.value(node, 0)
    as_input = imp.opset >= (13 if node.op_type == "ReduceSum" else 18)
    axes = imp.const_list(node, 1, "axes") if as_input else node.attr("axes")
    if not axes:
        if as_input and node.attr("noop_with_empty_axes", 0):
            return [x]
        axes = list(range(x.type.rank))
    keepdims = bool(node.attr("keepdims", 1))
    return [imp.emit(node, op, [x], {"axes": [axis_of(imp, node, a, x.type.rank) for a in axes],
                                     "keepdims": keepdims})]
