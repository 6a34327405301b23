"""ONNX layer ops -> registry ops: Conv, ConvTranspose, Gemm, MatMul, BatchNormalization, LRN,
pooling, activations, Softmax/LogSoftmax.

Weights must be constants (initializers or foldable); they become f32 params named
after the ONNX initializer. Layouts already agree with ONNX (NCHW, filters
[M, C/g, kh, kw], pads [top, left, bottom, right]); Gemm/MatMul weights are stored
[out, in] as the ``linear`` op wants.
"""

from __future__ import annotations

import math

import numpy as np

from boldc.frontend import transformer_handlers
from boldc.frontend.graph import Node, f32_attr
from boldc.frontend.importer import Importer, handles
from boldc.ir.core import Value

# --- geometry ---------------------------------------------------------------------------


def _spatial(imp: Importer, node: Node, x: Value, kernel: list[int], dilated: bool = True) -> dict:
    """stride, pad, dilation of a 2-D conv/pool node, with ``auto_pad`` resolved."""
    if len(kernel) != 2:
        raise imp.error(node, f"only 2-D (NCHW) {node.op_type} is supported; kernel {kernel} has "
                              f"{len(kernel)} spatial dimensions")
    stride = [int(s) for s in node.attr("strides", [1, 1])]
    dilation = [int(d) for d in node.attr("dilations", [1, 1])] if dilated else [1, 1]
    pads = [int(p) for p in node.attr("pads", [0, 0, 0, 0])]
    auto = node.attr("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        if x.type.rank != 4 or not all(isinstance(d, int) for d in x.type.shape[2:]):
            raise imp.error(node, f"auto_pad={auto} needs a static NCHW input, got {x.type}")
        pads = [0, 0, 0, 0]
        for i, size in enumerate(x.type.shape[2:]):
            out = -(-size // stride[i])
            total = max(0, (out - 1) * stride[i] + (kernel[i] - 1) * dilation[i] + 1 - size)
            small, big = total // 2, total - total // 2
            pads[i], pads[i + 2] = (small, big) if auto == "SAME_UPPER" else (big, small)
    elif auto == "VALID":
        pads = [0, 0, 0, 0]
    elif auto != "NOTSET":
        raise imp.error(node, f"unknown auto_pad '{auto}'")
    if len(stride) != 2 or len(dilation) != 2 or len(pads) != 4:
        raise imp.error(node, "strides, dilations and pads must describe 2 spatial dimensions")
    return {"stride": stride, "pad": pads, "dilation": dilation}


# --- arithmetic layers ------------------------------------------------------------------


def _filters(imp: Importer, node: Node, what: str) -> tuple[np.ndarray, list[int]]:
    """The constant 4-D weights of a 2-D convolution node (``what`` names its kind) and its
    kernel_shape, checked against them."""
    w = imp.const(node, 1, "the weights")
    if w.ndim != 4:
        raise imp.error(node, f"only 2-D {what} (4-D weights) are supported, got weights of shape {list(w.shape)}")
    kernel = [int(k) for k in node.attr("kernel_shape", w.shape[2:])]
    if kernel != list(w.shape[2:]):
        raise imp.error(node, f"kernel_shape {kernel} disagrees with the weights {list(w.shape)}")
    return w, kernel


def _with_params(imp: Importer, node: Node, x: Value, w: np.ndarray) -> list:
    """x, then the weights and the optional bias (input 2) as f32 params named after the initializers."""
    operands = [x, imp.param(w.astype(np.float32), imp.weight_name(node, 1, "weight"), key=(node.input(1), "as-is"))]
    if node.input(2):
        b = imp.const(node, 2, "the bias").astype(np.float32)
        operands.append(imp.param(b, imp.weight_name(node, 2, "bias"), key=(node.input(2), "as-is")))
    return operands


@handles("Conv")
def conv(imp: Importer, node: Node) -> list:
    x = imp.value(node, 0)
    w, kernel = _filters(imp, node, "convolutions")
    attrs = _spatial(imp, node, x, kernel)
    attrs["groups"] = int(node.attr("group", 1))
    x = _absorb_zero_pad(imp, node, x, attrs["pad"])
    return [imp.emit(node, "conv2d", _with_params(imp, node, x, w), attrs)]


@handles("ConvTranspose")
def conv_transpose(imp: Importer, node: Node) -> list:
    """-> conv_transpose2d (weights [C_in, C_out/group, kh, kw] as ONNX). ``auto_pad`` SAME_* and
    ``output_shape`` become pads by ONNX's formulas: total = s·(in - 1) + output_padding +
    d·(k - 1) + 1 - out, SAME_UPPER puts total/2 (rounded down) at the start, the others at the
    end; a negative end pad becomes output padding (it stays below the stride)."""
    x = imp.value(node, 0)
    w, kernel = _filters(imp, node, "transposed convolutions")
    attrs = _spatial(imp, node, x, kernel)  # strides, dilations, explicit pads (auto_pad checked)
    attrs["output_padding"] = [int(p) for p in node.attr("output_padding", [0, 0])]
    attrs["groups"] = int(node.attr("group", 1))
    auto, out_shape = node.attr("auto_pad", "NOTSET"), node.attr("output_shape")
    if out_shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        _pads_for_output(imp, node, x, kernel, attrs, auto, out_shape)
    return [imp.emit(node, "conv_transpose2d", _with_params(imp, node, x, w), attrs)]


def _pads_for_output(imp: Importer, node: Node, x: Value, kernel: list[int], attrs: dict, auto: str,
                     out_shape) -> None:
    """The pads (and extra output padding) that give ConvTranspose's ``output_shape``, or
    in·stride for auto_pad SAME_*."""
    what = "output_shape" if out_shape is not None else f"auto_pad={auto}"
    if out_shape is not None and any(node.attr("pads", [])):
        raise imp.error(node, "both pads and output_shape are given (ONNX derives the pads from output_shape): "
                              "keep one of them")
    if x.type.rank != 4 or not all(isinstance(d, int) for d in x.type.shape[2:]):
        raise imp.error(node, f"{what} needs a static NCHW input, got {x.type}")
    sizes = [int(d) for d in x.type.shape[2:]]
    target = [int(d) for d in out_shape] if out_shape is not None else [d * s for d, s in zip(sizes, attrs["stride"])]
    if len(target) != 2:
        raise imp.error(node, f"output_shape {list(out_shape)} must give the output height and width")
    pads = [0, 0, 0, 0]
    for i, (size, k, s, d) in enumerate(zip(sizes, kernel, attrs["stride"], attrs["dilation"])):
        total = s * (size - 1) + attrs["output_padding"][i] + d * (k - 1) + 1 - target[i]
        start = total // 2 if auto == "SAME_UPPER" else total - total // 2
        pads[i], pads[i + 2] = start, total - start
        if start < 0:
            raise imp.error(node, f"{what} {target} is larger than this transposed convolution can give "
                                  f"without cropping its start (pad {start}); not supported")
        if pads[i + 2] < 0:  # output beyond the last tap: extra output padding
            attrs["output_padding"][i] -= pads[i + 2]
            pads[i + 2] = 0
            if attrs["output_padding"][i] >= s:
                raise imp.error(node, f"{what} {target} needs an output padding of {attrs['output_padding'][i]}, "
                                      f"not below the stride {s}; not supported")
    attrs["pad"] = pads


def _absorb_zero_pad(imp: Importer, node: Node, x: Value, pads: list[int]) -> Value:
    """A zero ``pad`` of H and W whose only user is this convolution becomes the
    convolution's own padding (so the lowered Boolean conv pads as documented)."""
    op = imp.producer(x)
    if op is None or op.name != "pad" or imp.uses[node.input(0)] != 1 or op.attrs["value"] != 0.0:
        return x
    p = op.attrs["pads"]
    if len(p) != 8 or any(p[i] for i in (0, 1, 4, 5)):
        return x
    imp.remove_op(op)
    pads[0] += p[2]
    pads[1] += p[3]
    pads[2] += p[6]
    pads[3] += p[7]
    return op.operands[0]


def _bias_vector(imp: Importer, node: Node, c: np.ndarray, n: int) -> np.ndarray:
    """A Gemm C (or an added constant) broadcast along the output features as [n]."""
    if c.size == 1:
        return np.full(n, c.reshape(()), dtype=np.float32)
    if c.shape[-1] == n and c.size == n:
        return c.reshape(n).astype(np.float32)
    raise imp.error(node, f"C of shape {list(c.shape)} must be a scalar or one value per output ({n})")


@handles("Gemm")
def gemm(imp: Importer, node: Node) -> list:
    """Y = alpha · A' · B' + beta · C  ->  linear(A', W = alpha · B'ᵀ, beta · C); with a computed B,
    a product of two tensors (``transformer_handlers.gemm_of_computed``)."""
    if not imp.is_const(node, 1):
        return transformer_handlers.gemm_of_computed(imp, node)
    x = imp.value(node, 0)
    b = imp.const(node, 1, "B").astype(np.float32)
    if b.ndim != 2:
        raise imp.error(node, f"B must be a matrix, got shape {list(b.shape)}")
    if node.attr("transA", 0):
        x = imp.emit(node, "transpose", [x], {"perm": [1, 0]})
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    trans_b = bool(node.attr("transB", 0))
    w = b if trans_b else b.T
    if alpha != 1.0:
        w = w * np.float32(alpha)
    operands = [x, imp.param(w, imp.weight_name(node, 1, "weight"), key=(node.input(1), "gemm", trans_b, alpha))]
    if node.input(2):
        c = imp.const(node, 2, "C").astype(np.float32)
        operands.append(imp.param(_bias_vector(imp, node, c * np.float32(beta), w.shape[0]),
                                  imp.weight_name(node, 2, "bias"),
                                  key=(node.input(2), "gemm-bias", beta, w.shape[0])))
    return [imp.emit(node, "linear", operands)]


@handles("MatMul")
def matmul(imp: Importer, node: Node) -> list:
    """Y = A · B with B a constant [in, out]  ->  linear(A, Bᵀ); with a computed B (attention's
    Q·Kᵀ), a constant A or a batched constant B -> matmul (``transformer_handlers.batched_matmul``)."""
    if not imp.is_const(node, 1) or imp.is_const(node, 0) or imp.const(node, 1, "B").ndim != 2 \
            or imp.value(node, 0).type.rank < 2:
        return transformer_handlers.batched_matmul(imp, node)
    b = imp.const(node, 1, "B").astype(np.float32)
    x = imp.value(node, 0)
    w = imp.param(b.T, imp.weight_name(node, 1, "weight"), key=(node.input(1), "T"))
    return [imp.emit(node, "linear", [x, w])]


@handles("BatchNormalization")
def batchnorm(imp: Importer, node: Node) -> list:
    if node.attr("training_mode", 0):
        raise imp.error(node, "training_mode=1 is not supported (export the model in eval mode)")
    if not node.attr("spatial", 1):
        raise imp.error(node, "spatial=0 is not supported")
    imp.only_first_output(node)
    operands = [imp.value(node, 0)]
    for i, what in enumerate(("scale", "bias", "mean", "var"), start=1):
        # One param per role, even where an exporter shares one initializer between two
        # equal-valued roles (a fresh bias and running mean): training updates them apart.
        arr = imp.const(node, i, what).astype(np.float32)
        operands.append(imp.param(arr, node.input(i), key=(node.input(i), "batchnorm", what)))
    # ONNX's momentum weighs the running statistics (running = momentum·running + (1 - momentum)·batch,
    # default 0.9); the IR's, as PyTorch's, weighs the batch statistics.
    momentum = node.attr("momentum", 0.9)
    if not 0.0 <= momentum <= 1.0:
        raise imp.error(node, f"momentum must be in [0, 1], got {momentum}")
    return [imp.emit(node, "batchnorm", operands, {"epsilon": f32_attr(node.attr("epsilon", 1e-5)),
                                                  "momentum": f32_attr(1.0 - f32_attr(momentum))})]


@handles("LRN")
def lrn(imp: Importer, node: Node) -> list:
    """Across channels (ONNX's only form); ``size`` is required (ONNX's checker says so first)."""
    size = int(node.attr("size", 0))
    if size < 1:
        raise imp.error(node, f"size must be a positive number of channels, got {size}")
    attrs = {"size": size, "alpha": f32_attr(node.attr("alpha", 1e-4)), "beta": f32_attr(node.attr("beta", 0.75)),
             "bias": f32_attr(node.attr("bias", 1.0))}
    return [imp.emit(node, "lrn", [imp.value(node, 0)], attrs)]


# --- activations --------------------------------------------------------------------------


@handles("Relu")
def relu(imp: Importer, node: Node) -> list:
    return [imp.emit(node, "relu", [imp.value(node, 0)])]


@handles("Sigmoid", "Tanh")
def sigmoid_tanh(imp: Importer, node: Node) -> list:
    return [imp.emit(node, node.op_type.lower(), [imp.value(node, 0)])]


@handles("LeakyRelu")
def leaky_relu(imp: Importer, node: Node) -> list:
    return [imp.emit(node, "leaky_relu", [imp.value(node, 0)], {"alpha": f32_attr(node.attr("alpha", 0.01))})]


@handles("PRelu")
def prelu(imp: Importer, node: Node) -> list:
    imp.const(node, 1, "slope")
    return [imp.emit(node, "prelu", [imp.value(node, 0), imp.value(node, 1)])]


@handles("Clip")
def clip(imp: Importer, node: Node) -> list:
    if imp.opset < 11:
        lo, hi = node.attr("min", -math.inf), node.attr("max", math.inf)
    else:
        lo_arr, hi_arr = imp.const(node, 1, "min"), imp.const(node, 2, "max")
        lo = -math.inf if lo_arr is None else lo_arr.reshape(())
        hi = math.inf if hi_arr is None else hi_arr.reshape(())
    return [imp.emit(node, "clip", [imp.value(node, 0)], {"min": f32_attr(lo), "max": f32_attr(hi)})]


@handles("Softmax", "LogSoftmax")
def softmax(imp: Importer, node: Node) -> list:
    """Opset >= 13: along one axis (default -1). Before 13: over the input coerced to 2-D
    at ``axis`` (default 1), which is flatten -> along the last axis -> reshape back."""
    op = "softmax" if node.op_type == "Softmax" else "log_softmax"
    x = imp.value(node, 0)
    if imp.opset >= 13:
        return [imp.emit(node, op, [x], {"axis": int(node.attr("axis", -1))})]
    axis = int(node.attr("axis", 1))
    axis = axis + x.type.rank if axis < 0 else axis
    if axis == x.type.rank - 1:
        return [imp.emit(node, op, [x], {"axis": -1})]
    # The leading dimensions stay apart (they may be symbols: N, L); the trailing ones are
    # one row, which must have a static size.
    trailing = x.type.shape[axis:]
    if not all(isinstance(d, int) for d in trailing):
        raise imp.error(node, f"before opset 13, {node.op_type} on axis {axis} normalizes over the dimensions "
                              f"{list(trailing)} together, which must be static; re-export at opset >= 13")
    flat = imp.emit(node, "reshape", [x], {"shape": list(x.type.shape[:axis]) + [int(np.prod(trailing))]})
    y = imp.emit(node, op, [flat], {"axis": -1})
    return [imp.emit(node, "reshape", [y], {"shape": list(x.type.shape)})]


# --- pooling --------------------------------------------------------------------------------


@handles("MaxPool")
def maxpool(imp: Importer, node: Node) -> list:
    imp.only_first_output(node)
    x = imp.value(node, 0)
    kernel = [int(k) for k in node.attr("kernel_shape", [])]
    attrs = _spatial(imp, node, x, kernel, dilated=imp.opset >= 10)
    attrs.update(kernel=kernel, ceil_mode=bool(node.attr("ceil_mode", 0)))
    return [imp.emit(node, "maxpool2d", [x], attrs)]


@handles("AveragePool")
def avgpool(imp: Importer, node: Node) -> list:
    x = imp.value(node, 0)
    kernel = [int(k) for k in node.attr("kernel_shape", [])]
    attrs = _spatial(imp, node, x, kernel)
    if attrs.pop("dilation") != [1, 1]:
        raise imp.error(node, "dilated average pooling is not supported")
    attrs.update(kernel=kernel, ceil_mode=bool(node.attr("ceil_mode", 0)),
                 count_include_pad=bool(node.attr("count_include_pad", 0)))
    return [imp.emit(node, "avgpool2d", [x], attrs)]


@handles("GlobalAveragePool", "GlobalMaxPool")
def global_pool(imp: Importer, node: Node) -> list:
    op = "global_avgpool" if node.op_type == "GlobalAveragePool" else "global_maxpool"
    return [imp.emit(node, op, [imp.value(node, 0)])]
