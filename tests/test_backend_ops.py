"""Generated C against the interpreter, op by op (docs/backend.md, "Tests").

Every case is a single-op function; all cases live in one module, so two builds per
path (SIMD, portable, portable popcount), traced and as shipped, cover them all. Each
case runs with a batch of 1 and of 6 (the SIMD kernels switch strategy at 4 rows) and
every value is compared: b1 and integers bit for bit, f32 within FLOAT_RTOL; the
shipped build (where a kernel may write in place over an argument) gives the same
outputs (backend_check.check_all).
"""

from __future__ import annotations

import cases_transformer_attention
import cases_transformer_float
import numpy as np
import pytest

import boldc
from boldc.backend.emitters import EMITTERS

from backend_check import VARIANTS, check_all, compile_variant
from opbuild import single_op
from train_cases import TRAIN_CASES, TRANSPOSED_GEOMS, resize_attrs, transposed_attrs

BATCH = 6


def _bits(rng, *shape):
    return rng.random(shape) < 0.5


def _ints(rng, dtype, *shape, lo=None, hi=None):
    info = np.iinfo(dtype)
    lo = info.min if lo is None else lo
    hi = info.max if hi is None else hi
    return rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype)


def _floats(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def op_cases():
    """(name, op, inputs, params, attrs): shapes with odd channel counts, strides,
    padding, dilation, groups, both pad modes and logics, bias."""
    rng = np.random.default_rng(1234)
    B = BATCH
    cases = []

    def add(op, inputs, params=(), attrs=None):
        cases.append((f"c{len(cases)}_{op}", op, inputs, list(params), attrs or {}))

    # bconv2d: geometry x logic x pad mode x bias x groups
    conv_geoms = [  # C, H, W, M, k, stride, pad, dilation, groups
        (3, 7, 5, 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        (64, 6, 6, 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        (65, 5, 7, 33, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),
        (130, 4, 4, 40, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
        (17, 9, 8, 9, (3, 2), (2, 1), (2, 0, 1, 1), (2, 1), 1),
        (12, 6, 6, 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 4),
        (96, 5, 5, 64, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2),
        (200, 3, 3, 70, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        (8, 8, 8, 12, (5, 5), (3, 3), (2, 2, 2, 2), (1, 1), 1),
    ]
    for i, (c, h, w, m, k, s, p, d, g) in enumerate(conv_geoms):
        for mode in ("false", "neutral"):
            logic = "xnor" if (i + len(cases)) % 2 else "xor"
            params = [_bits(rng, m, c // g, *k)]
            if i % 3 != 1:
                params.append(_bits(rng, m))
            attrs = {"logic": logic, "stride": list(s), "pad": list(p), "dilation": list(d), "groups": g,
                     "pad_mode": mode}
            add("bconv2d", [_bits(rng, B, c, h, w)], params, attrs)
    # blinear: fan-in around word boundaries, bias, logic, rank 3 input
    for i, (k, m) in enumerate([(1, 3), (63, 7), (64, 33), (65, 100), (130, 1), (200, 64), (1000, 70)]):
        params = [_bits(rng, m, k)] + ([_bits(rng, m)] if i % 2 else [])
        add("blinear", [_bits(rng, B, k)], params, {"logic": "xor" if i % 3 == 0 else "xnor"})
    add("blinear", [_bits(rng, B, 3, 70)], [_bits(rng, 9, 70)])
    # mixed layers
    add("mconv2d", [_floats(rng, B, 5, 6, 6)], [_bits(rng, 7, 5, 3, 3), _floats(rng, 7)],
        {"pad": [1, 1, 1, 1], "logic": "xor"})
    add("mconv2d", [_ints(rng, np.int16, B, 4, 5, 5, lo=-300, hi=300)], [_bits(rng, 6, 2, 3, 3)],
        {"stride": [2, 2], "groups": 2})
    add("mlinear", [_floats(rng, B, 70)], [_bits(rng, 11, 70), _floats(rng, 11)])
    add("mlinear", [_ints(rng, np.int8, B, 33)], [_bits(rng, 5, 33)], {"logic": "xor"})
    # float layers, with float, integer and b1 inputs
    add("conv2d", [_floats(rng, B, 3, 9, 9)], [_floats(rng, 35, 3, 3, 3), _floats(rng, 35)], {"pad": [1, 1, 1, 1]})
    add("conv2d", [_floats(rng, B, 4, 7, 6)], [_floats(rng, 6, 2, 2, 3)],
        {"stride": [2, 1], "pad": [0, 1, 1, 0], "dilation": [2, 1], "groups": 2})
    add("conv2d", [_bits(rng, B, 70, 3, 3)], [_floats(rng, 5, 70, 3, 3)], {"pad": [1, 1, 1, 1]})
    add("conv2d", [_ints(rng, np.int8, B, 3, 4, 4)], [_floats(rng, 4, 3, 1, 1)])
    add("linear", [_floats(rng, B, 37)], [_floats(rng, 10, 37), _floats(rng, 10)])
    add("linear", [_bits(rng, B, 100)], [_floats(rng, 33, 100)])
    add("linear", [_ints(rng, np.int16, B, 2, 9, lo=-1000, hi=1000)], [_floats(rng, 4, 9)])
    # threshold: integer / float inputs, scalar / per-channel tau, direction operand
    add("threshold", [_ints(rng, np.int16, B, 70, 3, 3, lo=-20, hi=20)])
    add("threshold", [_ints(rng, np.int8, B, 33, lo=-9, hi=9)], attrs={"tau": 2})
    add("threshold", [_ints(rng, np.int16, B, 130, 2, 2, lo=-9, hi=9)],
        [_ints(rng, np.int16, 130, lo=-5, hi=5), _bits(rng, 130)])
    add("threshold", [_ints(rng, np.int32, B, 20, lo=-99, hi=99)], [_ints(rng, np.int8, 20, lo=-50, hi=50)])
    add("threshold", [_ints(rng, np.int16, B, 17, 3, 3, lo=-9, hi=9)], [_floats(rng, 17) * 4])
    add("threshold", [_ints(rng, np.int8, B, 30, lo=-9, hi=9)], attrs={"tau": 0.5})
    add("threshold", [_floats(rng, B, 65, 2, 3)], [_floats(rng, 65), _bits(rng, 65)])
    add("threshold", [_floats(rng, B, 40)], attrs={"tau": 0.1})
    add("threshold", [_floats(rng, B, 5, 7)], [_ints(rng, np.int32, 5, lo=-1, hi=1)])
    add("threshold", [_floats(rng, B, 6, 5)], [_floats(rng, 6)])  # rank 3: channels not the packed axis
    # pooling
    add("bmaxpool2d", [_bits(rng, B, 70, 7, 7)], attrs={"kernel": [2, 2], "stride": [2, 2]})
    add("bmaxpool2d", [_bits(rng, B, 5, 7, 6)], attrs={"kernel": [3, 3], "stride": [2, 2], "pad": [1, 1, 1, 1],
                                                        "ceil_mode": True})
    add("maxpool2d", [_floats(rng, B, 5, 7, 7)], attrs={"kernel": [3, 3], "stride": [2, 2], "pad": [1, 1, 1, 1]})
    add("maxpool2d", [_ints(rng, np.int16, B, 9, 6, 6)], attrs={"kernel": [2, 3], "stride": [2, 2],
                                                                "dilation": [1, 2], "ceil_mode": True})
    add("avgpool2d", [_floats(rng, B, 4, 7, 7)], attrs={"kernel": [3, 3], "stride": [2, 2], "pad": [1, 1, 1, 1]})
    add("avgpool2d", [_floats(rng, B, 3, 6, 6)], attrs={"kernel": [3, 3], "stride": [2, 2], "pad": [1, 1, 1, 1],
                                                         "count_include_pad": True, "ceil_mode": True})
    add("avgpool2d", [_bits(rng, B, 70, 4, 4)], attrs={"kernel": [2, 2], "stride": [2, 2]})
    add("global_avgpool", [_floats(rng, B, 9, 5, 3)])
    add("global_avgpool", [_bits(rng, B, 70, 3, 3)])
    add("global_avgpool", [_ints(rng, np.int16, B, 5, 2, 2)])
    # elementwise
    add("relu", [_floats(rng, B, 4, 5, 6)])
    add("relu", [_ints(rng, np.int16, B, 13)])
    add("add", [_ints(rng, np.int8, B, 5, 4, 4), _ints(rng, np.int8, B, 5, 4, 4)])
    add("add", [_bits(rng, B, 70, 3, 3), _ints(rng, np.int16, B, 70, 3, 3, lo=-100, hi=100)])
    add("add", [_floats(rng, B, 3, 4, 5), _floats(rng, B, 3, 4, 5)])
    add("add", [_floats(rng, B, 3, 4, 5)], [_floats(rng, 5)])
    add("add", [_floats(rng, B, 6, 2, 2)], [_floats(rng, 6, 1, 1)])
    add("batchnorm", [_floats(rng, B, 7, 3, 3)],
        [_floats(rng, 7), _floats(rng, 7), _floats(rng, 7), np.abs(_floats(rng, 7)) + 0.1], {"epsilon": 1e-3})
    add("batchnorm", [_ints(rng, np.int16, B, 5)], [_floats(rng, 5), _floats(rng, 5), _floats(rng, 5),
                                                    np.abs(_floats(rng, 5)) + 0.5])
    add("softmax", [_floats(rng, B, 10) * 5])
    add("softmax", [_floats(rng, B, 6, 2, 3)], attrs={"axis": 1})
    # activations and arithmetic an imported float model may keep
    add("leaky_relu", [_floats(rng, B, 5, 3, 3)], attrs={"alpha": 0.2})
    add("prelu", [_floats(rng, B, 6, 3, 3)], [_floats(rng, 6, 1, 1)])
    add("prelu", [_floats(rng, B, 7)], [_floats(rng, 1)])
    add("clip", [_floats(rng, B, 9) * 2], attrs={"min": -0.5, "max": 0.7})
    add("clip", [_floats(rng, B, 4, 2, 2) * 8], attrs={"min": 0.0, "max": 6.0})
    add("sigmoid", [_floats(rng, B, 11) * 10])
    add("tanh", [_floats(rng, B, 3, 2, 2) * 3])
    add("exp", [_floats(rng, B, 7, 3)])
    # fused ops: a layer and its epilogues in one kernel (a part of the chain kept, a residual add)
    pad = {"pad": [1, 1, 1, 1]}
    add("fused", [_bits(rng, B, 70, 5, 5)], [_bits(rng, 9, 70, 3, 3)],
        {"body": [{"op": "bconv2d", "args": [0, 1], "attrs": pad}, {"op": "threshold", "args": [-1], "attrs": {}}]})
    add("fused", [_floats(rng, B, 3, 6, 5)], [_floats(rng, 7, 3, 3, 3), _floats(rng, 7)],
        {"body": [{"op": "conv2d", "args": [0, 1, 2], "attrs": pad}, {"op": "relu", "args": [-1], "attrs": {}}]})
    add("fused", [_bits(rng, B, 65)], [_bits(rng, 33, 65), _ints(rng, np.int16, 33, lo=-9, hi=9)],
        {"body": [{"op": "blinear", "args": [0, 1], "attrs": {"logic": "xor"}, "keep": True},
                  {"op": "threshold", "args": [-1, 2], "attrs": {}}]})
    add("fused", [_bits(rng, B, 64, 4, 4), _ints(rng, np.int8, B, 16, 4, 4, lo=-50, hi=50)],
        [_bits(rng, 16, 64, 3, 3)],
        {"body": [{"op": "bconv2d", "args": [0, 2], "attrs": pad}, {"op": "add", "args": [-1, 1], "attrs": {}},
                  {"op": "threshold", "args": [-1], "attrs": {}}]})
    add("log_softmax", [_floats(rng, B, 10) * 5])
    add("log_softmax", [_floats(rng, B, 6, 2, 3)], attrs={"axis": 1})
    add("mul", [_floats(rng, B, 3, 4, 5), _floats(rng, B, 3, 4, 5)])
    add("mul", [_bits(rng, B, 70, 2, 2)], [_floats(rng, 70, 1, 1)])
    add("mul", [_ints(rng, np.int16, B, 9)], [_floats(rng, 9)])
    add("global_maxpool", [_floats(rng, B, 9, 4, 3)])
    add("global_maxpool", [_ints(rng, np.int16, B, 5, 2, 2)])
    add("global_maxpool", [_bits(rng, B, 70, 3, 3)])
    add("transpose", [_floats(rng, B, 3, 4, 5)], attrs={"perm": [0, 2, 3, 1]})
    add("transpose", [_bits(rng, B, 70, 3, 2)], attrs={"perm": [0, 3, 1, 2]})
    add("transpose", [_ints(rng, np.int8, B, 4, 7)], attrs={"perm": [0, 2, 1]})
    add("pad", [_floats(rng, B, 3, 4, 4)], attrs={"pads": [0, 0, 1, 2, 0, 0, 2, 0], "value": 0.5})
    add("pad", [_ints(rng, np.int16, B, 5)], attrs={"pads": [0, 3, 0, 1], "value": -7.0})
    # shapes and casts
    add("flatten", [_floats(rng, B, 5, 3, 2)])
    add("flatten", [_bits(rng, B, 70, 3, 3)])
    add("flatten", [_ints(rng, np.int16, B, 7, 2, 2)], attrs={"axis": 1})
    add("reshape", [_bits(rng, B, 6, 20)], attrs={"shape": ["N", 120]})
    add("reshape", [_floats(rng, B, 24)], attrs={"shape": ["N", 2, 3, 4]})
    add("reshape", [_bits(rng, B, 130)], attrs={"shape": ["N", 65, 2, 1]})
    # reshapes between dense row-major ranks (2, 3) are one copy of the element count
    add("reshape", [_floats(rng, B, 3, 4)], attrs={"shape": ["N", 12]})
    add("reshape", [_floats(rng, B, 12)], attrs={"shape": ["N", 4, 3]})
    add("reshape", [_ints(rng, np.int16, B, 2, 6)], attrs={"shape": ["N", 3, 4]})
    add("reshape", [_floats(rng, B, 2, 3, 4)], attrs={"shape": ["N", 6, 4]})
    add("reshape", [_floats(rng, B, 2, 3, 4)], attrs={"shape": ["N", 4, 3, 2]})
    add("reshape", [_bits(rng, B, 3, 70)], attrs={"shape": ["N", 7, 30]})
    add("reshape", [_bits(rng, B, 70, 3)], attrs={"shape": ["N", 210]})
    add("flatten", [_floats(rng, B, 3, 4)])
    add("flatten", [_ints(rng, np.int8, B, 2, 3)])
    add("flatten", [_bits(rng, B, 3, 70)])
    add("concat", [_bits(rng, B, 70, 2, 2), _bits(rng, B, 3, 2, 2), _bits(rng, B, 64, 2, 2)])
    add("concat", [_floats(rng, B, 2, 3, 3), _floats(rng, B, 2, 3, 1)], attrs={"axis": 3})
    add("concat", [_ints(rng, np.int8, B, 5), _ints(rng, np.int8, B, 7)], attrs={"axis": -1})
    for src, make in [("f32", lambda: _floats(rng, B, 70, 2, 2) * 200),
                      ("i16", lambda: _ints(rng, np.int16, B, 70, 2, 2)),
                      ("b1", lambda: _bits(rng, B, 70, 2, 2))]:
        for to in ("f32", "i8", "i16", "i32", "b1"):
            if src == "i16" and to == "i8":
                continue  # integer narrowing is refused by the op
            add("cast", [make()], attrs={"to": to})
    dense_prediction_cases(add, B)
    shuffle_and_transposed_conv_cases(add, B)
    resize_cases(add, B)
    cases_transformer_float.forward_cases(add, B)
    cases_transformer_attention.forward_cases(add, B)
    return cases


def dense_prediction_cases(add, B):
    """LRN, expand, concat of bits and integers, dilated convolutions (DeepLab's ASPP:
    dilations past the map with padding = dilation, padding past the kernel's extent); a
    generator of its own, so that the cases before keep their values."""
    rng = np.random.default_rng(15)
    for size, alpha, beta, bias in ((5, 1e-4, 0.75, 1.0), (3, 0.5, 0.6, 2.0), (4, 2.0, 1.5, 1.0), (1, 1.0, 0.5, 0.5),
                                    (9, 0.3, 0.75, 1.0)):
        add("lrn", [_floats(rng, B, 7, 3, 5) * 3], attrs={"size": size, "alpha": alpha, "beta": beta, "bias": bias})
    add("lrn", [_bits(rng, B, 70, 2, 2)], attrs={"size": 5, "alpha": 1.0})
    add("lrn", [_ints(rng, np.int16, B, 6, 5, lo=-300, hi=300)], attrs={"size": 3, "alpha": 1e-3})
    add("lrn", [_floats(rng, B, 33)], attrs={"size": 6, "alpha": 0.1})
    add("expand", [_bits(rng, B, 70, 1, 1)], attrs={"shape": ["N", 70, 3, 5]})
    add("expand", [_floats(rng, B, 5, 1, 1)], attrs={"shape": ["N", 5, 4, 3]})
    add("expand", [_ints(rng, np.int16, B, 1, 7)], attrs={"shape": ["N", 3, 7]})
    add("expand", [_bits(rng, B, 1, 65)], attrs={"shape": [2, "N", 3, 65]})
    add("concat", [_bits(rng, B, 70, 2, 2), _ints(rng, np.int16, B, 3, 2, 2), _bits(rng, B, 65, 2, 2)])
    add("concat", [_ints(rng, np.int8, B, 5, 3), _bits(rng, B, 5, 3)], attrs={"axis": -1})
    add("concat", [_bits(rng, B, 17, 3, 3), _bits(rng, B, 129, 3, 3), _bits(rng, B, 1, 3, 3)])
    add("concat", [_ints(rng, np.int8, B, 9, 2, 2), _ints(rng, np.int32, B, 4, 2, 2, lo=-10**6, hi=10**6)])
    geoms = [  # C, H, W, M, k, stride, pad, dilation, groups
        (70, 5, 5, 9, (3, 3), (1, 1), (6, 6, 6, 6), (6, 6), 1),  # rate 6 past a 5x5 map
        (33, 4, 6, 8, (3, 3), (1, 1), (12, 12, 12, 12), (12, 12), 1),  # rate 12
        (65, 6, 6, 16, (3, 3), (1, 1), (18, 18, 18, 18), (18, 18), 1),  # rate 18
        (64, 7, 7, 10, (3, 3), (1, 1), (2, 3, 2, 3), (2, 3), 1),  # both axes dilated, inside the map
        (16, 9, 9, 8, (3, 3), (2, 2), (2, 2, 2, 2), (2, 2), 2),  # stride, dilation and groups
        (5, 3, 3, 4, (1, 1), (1, 1), (2, 2, 2, 2), (1, 1), 1),  # padding past the kernel: outputs of padding only
        (12, 3, 4, 6, (3, 3), (1, 1), (4, 5, 3, 4), (1, 1), 1),
    ]
    for i, g in enumerate(geoms):
        c, h, w, m, k = g[:5]
        for mode in ("false", "neutral"):
            params = [_bits(rng, m, c // g[8], *k)] + ([_bits(rng, m)] if i % 2 else [])
            add("bconv2d", [_bits(rng, B, c, h, w)], params,
                {**_conv_attrs(g), "logic": "xor" if i % 3 == 0 else "xnor", "pad_mode": mode})
        add("conv2d", [_floats(rng, B, c, h, w)], [_floats(rng, m, c // g[8], *k), _floats(rng, m)], _conv_attrs(g))
        add("mconv2d", [_floats(rng, B, c, h, w)], [_bits(rng, m, c // g[8], *k)], {**_conv_attrs(g), "logic": "xor"})
    aspp = _conv_attrs(geoms[0])  # fused: a dilated layer and its threshold or ReLU in one kernel
    add("fused", [_bits(rng, B, 70, 5, 5)], [_bits(rng, 9, 70, 3, 3)],
        {"body": [{"op": "bconv2d", "args": [0, 1], "attrs": aspp}, {"op": "threshold", "args": [-1], "attrs": {}}]})
    add("fused", [_bits(rng, B, 64, 7, 7)], [_bits(rng, 10, 64, 3, 3), _bits(rng, 10)],
        {"body": [{"op": "bconv2d", "args": [0, 1, 2], "attrs": {**_conv_attrs(geoms[3]), "pad_mode": "neutral"}},
                  {"op": "threshold", "args": [-1], "attrs": {}}]})
    add("fused", [_floats(rng, B, 5, 3, 3)], [_floats(rng, 4, 5, 1, 1), _floats(rng, 4)],
        {"body": [{"op": "conv2d", "args": [0, 1, 2], "attrs": _conv_attrs(geoms[5])},
                  {"op": "relu", "args": [-1], "attrs": {}}]})


def shuffle_and_transposed_conv_cases(add, B):
    """Pixel shuffles of every element type (b1 runs across word boundaries), both modes,
    blocksizes 2 and 3; transposed convolutions: strides, pads, output padding, dilation,
    groups (depthwise), with and without bias. A generator of its own."""
    rng = np.random.default_rng(16)
    add("depth_to_space", [_floats(rng, B, 12, 3, 2)], attrs={"blocksize": 2})
    add("depth_to_space", [_floats(rng, B, 18, 2, 3)], attrs={"blocksize": 3, "mode": "CRD"})
    add("depth_to_space", [_bits(rng, B, 280, 2, 3)], attrs={"blocksize": 2, "mode": "CRD"})  # 70 channels out
    add("depth_to_space", [_bits(rng, B, 585, 2, 2)], attrs={"blocksize": 3})  # 65 channels out
    add("depth_to_space", [_ints(rng, np.int16, B, 8, 3, 3)], attrs={"blocksize": 2, "mode": "CRD"})
    add("space_to_depth", [_floats(rng, B, 3, 4, 6)], attrs={"blocksize": 2})
    add("space_to_depth", [_floats(rng, B, 2, 6, 3)], attrs={"blocksize": 3, "mode": "CRD"})
    add("space_to_depth", [_bits(rng, B, 70, 4, 2)], attrs={"blocksize": 2})  # 280 channels out
    add("space_to_depth", [_bits(rng, B, 65, 3, 6)], attrs={"blocksize": 3, "mode": "CRD"})
    add("space_to_depth", [_ints(rng, np.int8, B, 5, 2, 2)], attrs={"blocksize": 2})
    for c, h, w, m, k, s, p, op, d, g, bias in TRANSPOSED_GEOMS:
        params = [_floats(rng, c, m // g, *k)] + ([_floats(rng, m)] if bias else [])
        add("conv_transpose2d", [_floats(rng, B, c, h, w)], params, transposed_attrs(s, p, op, d, g))
    # fused, as a converted decoder has them: a Boolean conv whose bits are cast to ±1 for the
    # transposed convolution, and the transposed convolution (a fusion head) with its ReLU
    pad = {"pad": [1, 1, 1, 1]}
    add("fused", [_bits(rng, B, 70, 3, 3)], [_bits(rng, 9, 70, 3, 3)],
        {"body": [{"op": "bconv2d", "args": [0, 1], "attrs": pad}, {"op": "threshold", "args": [-1], "attrs": {}},
                  {"op": "cast", "args": [-1], "attrs": {"to": "f32"}}]})
    add("fused", [_floats(rng, B, 6, 3, 4)], [_floats(rng, 6, 5, 3, 3), _floats(rng, 5)],
        {"body": [{"op": "conv_transpose2d", "args": [0, 1, 2], "attrs": {**pad, "stride": [2, 2],
                                                                          "output_padding": [1, 0]}},
                  {"op": "relu", "args": [-1], "attrs": {}}]})


def resize_cases(add, B):
    """resize: bilinear on f32 (up and down, scales and sizes, a map of one pixel), nearest as
    a gather of f32, b1 (channel words copied: 70 and 130 channels) and integers; every
    coordinate mode and nearest mode among them. A generator of its own."""
    rng = np.random.default_rng(17)
    add("resize", [_floats(rng, B, 5, 4, 7)], attrs=resize_attrs([9, 5], "linear"))
    add("resize", [_floats(rng, B, 3, 5, 6)], attrs=resize_attrs([11, 2], "linear", "align_corners"))
    add("resize", [_floats(rng, B, 4, 4, 5)], attrs=resize_attrs([10, 3], "linear", "pytorch_half_pixel",
                                                                 scales=[2.5, 0.6]))
    add("resize", [_floats(rng, B, 6, 1, 1)], attrs=resize_attrs([4, 3], "linear"))  # a pooled branch
    add("resize", [_floats(rng, B, 2, 3, 3)], attrs=resize_attrs([4, 8], "linear", "half_pixel_symmetric",
                                                                 scales=[1.5, 2.9]))
    add("resize", [_floats(rng, B, 3, 3, 4)], attrs=resize_attrs([6, 8], coord="asymmetric", nearest="floor",
                                                                 scales=[2.0, 2.0]))
    add("resize", [_bits(rng, B, 70, 3, 5)], attrs=resize_attrs([7, 4], nearest="round_prefer_ceil"))
    add("resize", [_bits(rng, B, 130, 2, 2)], attrs=resize_attrs([5, 3], coord="align_corners"))
    add("resize", [_ints(rng, np.int16, B, 9, 4, 4)], attrs=resize_attrs([2, 7], coord="half_pixel_symmetric",
                                                                         nearest="ceil"))
    add("resize", [_ints(rng, np.int8, B, 5, 3, 2)], attrs=resize_attrs([6, 5], coord="tf_half_pixel_for_nn"))


def _conv_attrs(g) -> dict:
    """stride, pad, dilation, groups of a geometry row (C, H, W, M, k, stride, pad, dilation, groups)."""
    return {"stride": list(g[5]), "pad": list(g[6]), "dilation": list(g[7]), "groups": g[8]}


CASES = op_cases()


def static_cases():
    """Cases with a fixed batch (no symbolic dim: the generated function runs with
    n = 1, so the kernels must take the batch from the shapes): batch 1 and 3."""
    rng = np.random.default_rng(99)
    cases = []

    def add(op, inputs, params=(), attrs=None):
        cases.append((f"s{len(cases)}_{op}_b{inputs[0].shape[0]}", op, inputs, list(params), attrs or {}))

    for b in (1, 3):
        add("conv2d", [_floats(rng, b, 3, 6, 5)], [_floats(rng, 7, 3, 3, 3), _floats(rng, 7)], {"pad": [1, 1, 1, 1]})
        add("bconv2d", [_bits(rng, b, 70, 5, 5)], [_bits(rng, 9, 70, 3, 3)],
            {"pad": [1, 1, 1, 1], "pad_mode": "neutral"})
        add("mconv2d", [_floats(rng, b, 5, 4, 4)], [_bits(rng, 6, 5, 3, 3)], {"stride": [2, 2]})
        add("maxpool2d", [_floats(rng, b, 5, 6, 6)], attrs={"kernel": [2, 2], "stride": [2, 2]})
        add("bmaxpool2d", [_bits(rng, b, 70, 5, 5)], attrs={"kernel": [3, 3], "stride": [2, 2], "pad": [1, 1, 1, 1]})
        add("avgpool2d", [_floats(rng, b, 4, 6, 6)], attrs={"kernel": [3, 3], "stride": [2, 2], "pad": [1, 1, 1, 1]})
        add("global_avgpool", [_floats(rng, b, 9, 3, 3)])
        add("global_maxpool", [_bits(rng, b, 70, 3, 3)])
        add("linear", [_floats(rng, b, 37)], [_floats(rng, 10, 37), _floats(rng, 10)])
        add("blinear", [_bits(rng, b, 130)], [_bits(rng, 33, 130)])
        add("threshold", [_ints(rng, np.int16, b, 70, 3, 3, lo=-20, hi=20)])
        add("flatten", [_bits(rng, b, 70, 3, 3)])
        add("reshape", [_floats(rng, b, 3, 4)], attrs={"shape": [b, 12]})
        add("resize", [_floats(rng, b, 3, 4, 5)], attrs=resize_attrs([7, 9], "linear"))
        add("resize", [_bits(rng, b, 70, 3, 3)], attrs=resize_attrs([6, 5]))
    return cases


STATIC_CASES = static_cases()


@pytest.fixture(scope="module")
def cases_module():
    m = boldc.Module()
    for name, op, inputs, params, attrs in CASES:
        single_op(op, inputs, params, attrs, module=m, fname=name)
    for name, op, inputs, params, attrs in STATIC_CASES:
        single_op(op, inputs, params, attrs, module=m, fname=name, batch_symbolic=False)
    return m


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def compiled(request, cases_module):
    return request.param, compile_variant(cases_module, request.param, max_batch=BATCH)


def test_every_op_with_c_emission_has_a_case():
    # the training ops' cases are in train_cases.py (test_backend_train_ops.py runs them;
    # the optimizer updates, which write params, have their own tests there)
    covered = {op for _, op, *_ in CASES} | {op for _, op, *_ in TRAIN_CASES}
    covered |= {"flip_update", "adam_update", "lr_schedule", "increment"}
    emitted = set(EMITTERS)
    assert emitted <= covered, f"ops with C emission but no op case here: {sorted(emitted - covered)}"


@pytest.mark.parametrize("case", range(len(CASES)), ids=[c[0] for c in CASES])
def test_op_matches_interpreter(case, compiled, cases_module):
    variant, builds = compiled
    name, _, inputs, _, _ = CASES[case]
    for batch in (1, BATCH):
        problems = check_all(cases_module, builds, name, [x[:batch] for x in inputs])
        assert not problems, f"[{variant}, batch {batch}] " + "; ".join(problems)


@pytest.mark.parametrize("case", range(len(STATIC_CASES)), ids=[c[0] for c in STATIC_CASES])
def test_fixed_batch_op_matches_interpreter(case, compiled, cases_module):
    variant, builds = compiled
    name, _, inputs, _, _ = STATIC_CASES[case]
    assert cases_module.function(name).args[0].type.is_static  # no batch symbol: the C runs with n = 1
    problems = check_all(cases_module, builds, name, inputs)
    assert not problems, f"[{variant}, fixed batch {inputs[0].shape[0]}] " + "; ".join(problems)
