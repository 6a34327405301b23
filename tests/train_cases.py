"""Single-op cases of the gradient and loss ops for the C backend tests
(tests/test_backend_train_ops.py runs them; test_backend_ops.py counts them as covered).

Same conventions as test_backend_ops.op_cases: (name, op, inputs, params, attrs),
inputs with a batch of BATCH; odd channel counts, strides, padding, dilation, groups,
b1 / f32 / integer operands, both signs of ``scale`` (xor negates the signals).
"""

from __future__ import annotations

import cases_transformer_attention
import cases_transformer_float
import numpy as np

from boldc.ops.common import conv_transpose_out_hw

BATCH = 6


def _bits(rng, *shape):
    return rng.random(shape) < 0.5


def _floats(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _ints(rng, dtype, *shape, lo, hi):
    return rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype)


def _out_hw(h, w, k, s, p, d):
    oh = (h + p[0] + p[2] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    return oh, (w + p[1] + p[3] - d[1] * (k[1] - 1) - 1) // s[1] + 1


def train_op_cases():
    rng = np.random.default_rng(4321)
    B = BATCH
    cases = []

    def add(op, inputs, params=(), attrs=None):
        cases.append((f"t{len(cases)}_{op}", op, inputs, list(params), attrs or {}))

    # linear layers: b1 / f32 weights, b1 / f32 / int inputs, word boundaries, rank 3
    for k, m, wbits in [(63, 7, True), (64, 33, True), (65, 100, False), (130, 1, True), (300, 70, False)]:
        w = _bits(rng, m, k) if wbits else _floats(rng, m, k)
        add("linear_grad_x", [_floats(rng, B, m)], [w], {"scale": -1.0 if k % 2 else 0.25})
    add("linear_grad_x", [_floats(rng, B, 3, 9)], [_bits(rng, 9, 70)])
    for k, m, kind in [(63, 7, "b1"), (65, 33, "f32"), (200, 40, "b1"), (9, 10, "i16")]:
        if kind == "b1":
            x = _bits(rng, B, k)
        elif kind == "f32":
            x = _floats(rng, B, k)
        else:
            x = _ints(rng, np.int16, B, k, lo=-300, hi=300)
        add("linear_grad_w", [_floats(rng, B, m), x], attrs={"scale": -1.0 if kind == "b1" else 1.0})
    add("linear_grad_w", [_floats(rng, B, 2, 5), _bits(rng, B, 2, 70)])
    # convolutions: C, H, W, M, k, stride, pad, dilation, groups
    geoms = [
        (3, 7, 5, 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        (65, 5, 7, 33, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),
        (17, 9, 8, 9, (3, 2), (2, 1), (2, 0, 1, 1), (2, 1), 1),
        (12, 6, 6, 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 4),
        (40, 4, 4, 70, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    ]
    conv_grad_f32_cases(add, rng, B, geoms, float_input=lambda i: i == 2)
    add("conv2d_grad_w", [_floats(rng, B, 6, 4, 4), _ints(rng, np.int8, B, 4, 4, 4, lo=-9, hi=9)],
        attrs={"kernel": [3, 3], "pad": [1, 1, 1, 1]})
    # threshold backward: modes, integer / float pre-activations, per-channel tau and ge
    for mode in ("tanh", "box", "bireal"):
        add("threshold_grad", [_floats(rng, B, 70, 3, 3), _ints(rng, np.int16, B, 70, 3, 3, lo=-40, hi=40)],
            attrs={"mode": mode, "alpha": 0.05})
    add("threshold_grad", [_floats(rng, B, 33), _ints(rng, np.int8, B, 33, lo=-9, hi=9)],
        attrs={"alpha": 0.3, "tau": 2})
    # f32 pre-activations, tanh (bd_threshold_grad_tanh: chunks of 256 values; a chunk with a
    # -2|u| below -708, a NaN u or an inf dy beside one is computed again with bd_dtanh)
    big_x, edge_dy = _floats(rng, B, 40, 3, 3) * 30.0, _floats(rng, B, 40, 3, 3)
    big_x[0, 0, 0, :2] = [400.0, np.nan]  # u = alpha * x: beyond the vectorised exp's range, NaN
    big_x[-1, 5, 1, 1], edge_dy[-1, 5, 1, 1], edge_dy[0, 0, 0, 0] = -390.0, -np.inf, np.inf
    add("threshold_grad", [edge_dy, big_x], attrs={"mode": "tanh", "alpha": 1.0, "tau": 1.5})
    add("threshold_grad", [_floats(rng, B, 10, 2, 2), _floats(rng, B, 10, 2, 2)],
        [_floats(rng, 10), _bits(rng, 10)], {"alpha": 0.7})
    add("threshold_grad", [_floats(rng, B, 9), _ints(rng, np.int32, B, 9, lo=-99, hi=99)],
        [_ints(rng, np.int32, 9, lo=-20, hi=20)], {"mode": "bireal", "alpha": 0.02})
    add("threshold_grad", [_floats(rng, B, 70, 2, 3), _ints(rng, np.int16, B, 70, 2, 3, lo=-300, hi=300)],
        [_ints(rng, np.int16, 70, lo=-9, hi=9), _bits(rng, 70)], {"alpha": 0.01})
    add("threshold_grad", [_floats(rng, B, 5, 4), _ints(rng, np.int16, B, 5, 4, lo=-30, hi=30)],
        [_ints(rng, np.int8, 5, lo=-3, hi=3)], {"alpha": 0.1})  # rank 3: channels not the last axis
    add("threshold_grad", [_floats(rng, B, 12), _ints(rng, np.int32, B, 12, lo=-2**30, hi=2**30)],
        attrs={"alpha": 1e-9})  # keys too far apart for the table: computed one by one
    # the box (straight-through) window |alpha (x - tau)| <= 1, its edges hit exactly: integer and
    # float pre-activations, scalar and per-channel tau (integer and float), per-channel ge
    add("threshold_grad", [_floats(rng, B, 70, 2, 2), _ints(rng, np.int16, B, 70, 2, 2, lo=-12, hi=12)],
        attrs={"mode": "box", "alpha": 0.125, "tau": 3})
    add("threshold_grad", [_floats(rng, B, 33), _floats(rng, B, 33) * 4],
        attrs={"mode": "box", "alpha": 0.5})
    add("threshold_grad", [_floats(rng, B, 65, 3, 2), _ints(rng, np.int8, B, 65, 3, 2, lo=-20, hi=20)],
        [_ints(rng, np.int8, 65, lo=-6, hi=6), _bits(rng, 65)], {"mode": "box", "alpha": 0.25})
    add("threshold_grad", [_floats(rng, B, 9, 2, 2), (rng.integers(-8, 9, (B, 9, 2, 2)) / 4).astype(np.float32)],
        [(rng.integers(-4, 5, 9) / 4).astype(np.float32), _bits(rng, 9)], {"mode": "box", "alpha": 1.0})
    add("threshold_grad", [_floats(rng, B, 7), _ints(rng, np.int32, B, 7, lo=-99, hi=99)],
        [_ints(rng, np.int32, 7, lo=-20, hi=20)], {"mode": "box", "alpha": 0.02})
    add("threshold_grad", [_floats(rng, B, 17, 3), _ints(rng, np.int16, B, 17, 3, lo=-9, hi=9)],
        [(rng.integers(-8, 9, 17) / 4).astype(np.float32), _bits(rng, 17)], {"mode": "box", "alpha": 0.25})
    # integer signals (quantize_signal's q, i8 / i16, with their power-of-two scale) against b1
    # operands: linear and conv, word boundaries, groups, strides, both pad values, the scale's sign
    def scale_of(e):
        return np.array(2.0 ** e, np.float32)

    for k, m, dt, e in [(63, 7, np.int16, -12), (130, 65, np.int8, 3), (9, 200, np.int16, -140)]:
        top = 127 if dt is np.int8 else 32767
        add("linear_grad_x", [_ints(rng, dt, B, m, lo=-top, hi=top)], [_bits(rng, m, k), scale_of(e)],
            {"scale": -1.0 if k % 2 else 0.5})
        add("linear_grad_w", [_ints(rng, dt, B, m, lo=-top, hi=top), _bits(rng, B, k)], [scale_of(e)],
            {"scale": 1.0 if k % 2 else -1.0})
    conv_grad_int_cases(add, rng, B, geoms[:4])
    add("channel_sum", [_ints(rng, np.int16, B, 70, 3, 3, lo=-32767, hi=32767)], [scale_of(-15)])
    add("channel_sum", [_ints(rng, np.int8, B, 33, lo=-127, hi=127)], [scale_of(2)], {"axis": -1})
    # quantize_signal: every rounding and width, maps (channels last) and matrices, a zero signal
    step = np.array(5, np.int32)
    for bits, rounding, shape in [(16, "nearest", (70, 3, 3)), (8, "nearest", (33,)), (4, "log", (9, 2, 2)),
                                  (16, "stochastic", (65, 2, 3)), (8, "stochastic", (7,)), (4, "nearest", (5, 4))]:
        attrs = {"bits": bits, "rounding": rounding}
        extra = []
        if rounding == "stochastic":
            attrs.update(seed=3, stream=2)
            extra = [step]
        add("quantize_signal", [_floats(rng, B, *shape) * 10.0 ** int(rng.integers(-6, 6))], extra, attrs)
    add("quantize_signal", [np.zeros((B, 6, 2, 2), np.float32)], attrs={"bits": 16})
    # batch normalisation with batch statistics: maps, matrices, integer input; its gradients
    for shape, dt in [((7, 3, 3), np.float32), ((33, 2), np.float32), ((5, 2, 2), np.int16)]:
        c = shape[0]
        x = _floats(rng, B, *shape) * 3 + 1 if dt is np.float32 else _ints(rng, dt, B, *shape, lo=-300, hi=300)
        add("batchnorm_train", [x], [_floats(rng, c), _floats(rng, c), _floats(rng, c), np.abs(_floats(rng, c)) + 0.5],
            {"epsilon": 1e-3, "momentum": 0.2})
        add("batchnorm_train_grad_x", [_floats(rng, B, *shape), x], [_floats(rng, c)])
        add("batchnorm_train_grad_scale", [_floats(rng, B, *shape), x], attrs={"epsilon": 1e-4})
    # float activations
    add("relu_grad", [_floats(rng, B, 4, 3, 3), _floats(rng, B, 4, 3, 3)])
    add("leaky_relu_grad", [_floats(rng, B, 9), _floats(rng, B, 9)], attrs={"alpha": 0.2})
    add("clip_grad", [_floats(rng, B, 5, 2, 2), _floats(rng, B, 5, 2, 2) * 2], attrs={"min": -0.5, "max": 1.0})
    add("sigmoid_grad", [_floats(rng, B, 11), np.abs(_floats(rng, B, 11)) % 1])
    add("tanh_grad", [_floats(rng, B, 3, 2, 2), np.tanh(_floats(rng, B, 3, 2, 2))])
    add("prelu_grad_x", [_floats(rng, B, 6, 3, 3), _floats(rng, B, 6, 3, 3)], [_floats(rng, 6, 1, 1)])
    add("prelu_grad_slope", [_floats(rng, B, 6, 3, 3), _floats(rng, B, 6, 3, 3)], [_floats(rng, 6, 1, 1)])
    add("softmax_grad", [_floats(rng, B, 10), np.abs(_floats(rng, B, 10)) / 5])
    add("softmax_grad", [_floats(rng, B, 6, 2, 3), np.abs(_floats(rng, B, 6, 2, 3)) / 6], attrs={"axis": 1})
    add("log_softmax_grad", [_floats(rng, B, 10), -np.abs(_floats(rng, B, 10))])
    # pooling
    add("maxpool2d_grad", [_floats(rng, B, 70, 3, 3), _bits(rng, B, 70, 7, 7)], attrs={"kernel": [2, 2],
                                                                                     "stride": [2, 2]})
    add("maxpool2d_grad", [_floats(rng, B, 5, 4, 4), _floats(rng, B, 5, 7, 7)],
        attrs={"kernel": [3, 3], "stride": [2, 2], "pad": [1, 1, 1, 1], "ceil_mode": True})
    add("maxpool2d_grad", [_floats(rng, B, 9, 3, 2), _ints(rng, np.int16, B, 9, 6, 6, lo=-3, hi=3)],
        attrs={"kernel": [2, 3], "stride": [2, 2], "dilation": [1, 2], "ceil_mode": True})
    # every tap inside a padded window at -inf (or NaN): the first of them wins, never the padding
    low = np.where(rng.random((B, 3, 4, 4)) < 0.7, -np.inf, _floats(rng, B, 3, 4, 4)).astype(np.float32)
    low[0, 0, 0, 1] = np.nan
    add("maxpool2d_grad", [_floats(rng, B, 3, 2, 2), low], attrs={"kernel": [3, 3], "stride": [2, 2],
                                                                  "pad": [1, 1, 1, 1]})
    add("avgpool2d_grad", [_floats(rng, B, 4, 4, 4)], attrs={"kernel": [3, 3], "stride": [2, 2],
                                                             "pad": [1, 1, 1, 1], "input_hw": [7, 7]})
    add("avgpool2d_grad", [_floats(rng, B, 3, 4, 4)], attrs={"kernel": [3, 3], "stride": [2, 2],
                                                             "pad": [1, 1, 1, 1], "count_include_pad": True,
                                                             "ceil_mode": True, "input_hw": [6, 6]})
    add("global_avgpool_grad", [_floats(rng, B, 9, 1, 1)], attrs={"input_hw": [5, 3]})
    # normalisation, reductions, shapes
    add("batchnorm_grad_x", [_floats(rng, B, 7, 3, 3)], [_floats(rng, 7), np.abs(_floats(rng, 7)) + 0.1])
    add("batchnorm_grad_scale", [_floats(rng, B, 7, 3, 3), _floats(rng, B, 7, 3, 3)],
        [_floats(rng, 7), np.abs(_floats(rng, 7)) + 0.1], {"epsilon": 1e-3})
    add("channel_sum", [_floats(rng, B, 70, 3, 3)])
    add("channel_sum", [_floats(rng, B, 33)], attrs={"axis": -1})
    add("sum_to", [_floats(rng, B, 6, 2, 2)], attrs={"shape": [6, 1, 1]})
    add("sum_to", [_floats(rng, B, 5, 4)], attrs={"shape": [4]})
    add("slice_axis", [_floats(rng, B, 7, 3, 3)], attrs={"axis": 1, "start": 2, "stop": 6})
    add("slice_axis", [_floats(rng, B, 9)], attrs={"axis": 1, "start": 0, "stop": 4})
    # losses and their gradients (labels in range; "sum" and "mean")
    for red in ("mean", "sum"):
        logits = _floats(rng, B, 10) * 3
        labels = rng.integers(0, 10, B).astype(np.int32)
        add("softmax_xent", [logits, labels], attrs={"reduction": red})
        add("softmax_xent_grad", [logits, labels], attrs={"reduction": red})
        for loss in ("mse", "l1"):
            p, t = _floats(rng, B, 3, 2, 2), _floats(rng, B, 3, 2, 2)
            t[0, 0, 0, 0] = p[0, 0, 0, 0]  # a zero difference (l1's sign is 0 there)
            add(loss, [p, t], attrs={"reduction": red})
            add(f"{loss}_grad", [p, t], attrs={"reduction": red})
    # per-position cross-entropy (logits [N, C, L] and [N, C, H, W]) with ignored labels; a
    # generator of its own, so that the cases above keep their values
    dense = np.random.default_rng(99)
    for red, shape, ignore in (("mean", (B, 5, 7), -100), ("sum", (B, 5, 7), -100), ("mean", (B, 4, 3, 5), 255),
                               ("sum", (B, 3, 2, 2), 0), ("mean", (B, 10), -100)):
        logits = _floats(dense, *shape) * 3
        labels = dense.integers(0, shape[1], (B,) + shape[2:]).astype(np.int32)
        labels[dense.random(labels.shape) < 0.3] = ignore
        attrs = {"reduction": red, "ignore_index": ignore}
        add("softmax_xent", [logits, labels], attrs=attrs)
        add("softmax_xent_grad", [logits, labels], attrs=attrs)
    every = np.full((B, 3, 2), -100, np.int32)  # every label ignored: loss and gradient 0
    add("softmax_xent", [_floats(dense, B, 4, 3, 2), every])
    add("softmax_xent_grad", [_floats(dense, B, 4, 3, 2), every])
    dense_prediction_cases(add, B)
    transposed_conv_grad_cases(add, B)
    resize_grad_cases(add, B)
    cases_transformer_float.train_cases(add, B)
    cases_transformer_attention.train_cases(add, B)
    return cases


def dense_prediction_cases(add, B):
    """The LRN gradient, and the convolution gradients of dilated convolutions (DeepLab's ASPP:
    dilations past the map with padding = dilation, padding past the kernel's extent) with f32
    and integer signals; a generator of its own, so that the cases before keep their values."""
    rng = np.random.default_rng(15)
    for size, alpha, beta, shape, x in ((5, 0.3, 0.75, (7, 3, 5), None), (4, 2.0, 1.5, (6, 5), None),
                                        (3, 1.0, 0.5, (70, 2, 2), "b1"), (1, 0.5, 0.6, (9,), "i16")):
        if x is None:
            x = _floats(rng, B, *shape) * 2
        elif x == "b1":
            x = _bits(rng, B, *shape)
        else:
            x = _ints(rng, np.int16, B, *shape, lo=-30, hi=30)
        add("lrn_grad", [_floats(rng, B, *shape), x], attrs={"size": size, "alpha": alpha, "beta": beta, "bias": 1.5})
    add("sum_to", [_floats(rng, B, 6, 2, 3)], attrs={"shape": ["N", 6, 1, 1]})  # expand's gradient: the batch kept
    geoms = [  # C, H, W, M, k, stride, pad, dilation, groups
        (16, 5, 5, 9, (3, 3), (1, 1), (6, 6, 6, 6), (6, 6), 1),
        (33, 4, 6, 8, (3, 3), (1, 1), (12, 12, 12, 12), (12, 12), 1),
        (8, 7, 7, 6, (3, 3), (2, 2), (3, 2, 3, 2), (3, 2), 2),
        (5, 3, 3, 4, (1, 1), (1, 1), (2, 2, 2, 2), (1, 1), 1),
    ]
    conv_grad_f32_cases(add, rng, B, geoms, float_input=lambda i: i % 2 == 1)
    conv_grad_int_cases(add, rng, B, geoms)


def _geometry(row) -> tuple[int, int, dict]:
    """(OH, OW, the conv attributes) of a row (C, H, W, M, k, stride, pad, dilation, groups)."""
    c, h, w, m, k, s, p, d, g = row
    return (*_out_hw(h, w, k, s, p, d), {"stride": list(s), "pad": list(p), "dilation": list(d), "groups": g})


def conv_grad_f32_cases(add, rng, B, geoms, float_input):
    """conv2d_grad_x and conv2d_grad_w of f32 signals per geometry row: b1 weights on even
    rows, f32 on odd ones; an f32 input where ``float_input(row index)``, else b1."""
    for i, row in enumerate(geoms):
        c, h, w, m, k, g = row[0], row[1], row[2], row[3], row[4], row[8]
        oh, ow, geo = _geometry(row)
        wt = _bits(rng, m, c // g, *k) if i % 2 == 0 else _floats(rng, m, c // g, *k)
        add("conv2d_grad_x", [_floats(rng, B, m, oh, ow)], [wt], {**geo, "input_hw": [h, w], "scale": -0.5})
        x = _floats(rng, B, c, h, w) if float_input(i) else _bits(rng, B, c, h, w)
        add("conv2d_grad_w", [_floats(rng, B, m, oh, ow), x],
            attrs={**geo, "kernel": list(k), "pad_value": -1.0 if i % 2 == 0 else 0.0, "scale": 1.0 if i else -1.0})


def conv_grad_int_cases(add, rng, B, geoms):
    """The same with integer signals (i16 on even rows, i8 on odd) and their power-of-two
    scales, against b1 weights and inputs."""
    for i, row in enumerate(geoms):
        c, h, w, m, k, g = row[0], row[1], row[2], row[3], row[4], row[8]
        oh, ow, geo = _geometry(row)
        dt, top = (np.int16, 32767) if i % 2 == 0 else (np.int8, 127)
        add("conv2d_grad_x", [_ints(rng, dt, B, m, oh, ow, lo=-top, hi=top)],
            [_bits(rng, m, c // g, *k), np.array(2.0 ** -9, np.float32)],
            {**geo, "input_hw": [h, w], "scale": -1.0 if i % 2 else 0.5})
        add("conv2d_grad_w", [_ints(rng, dt, B, m, oh, ow, lo=-top, hi=top), _bits(rng, B, c, h, w)],
            [np.array(2.0 ** -3, np.float32)], {**geo, "kernel": list(k), "pad_value": -1.0 if i % 2 == 0 else 0.0,
                                                "scale": 1.0})


# C, H, W, M, kernel, stride, pad, output_padding, dilation, groups, bias
TRANSPOSED_GEOMS = [
    (4, 3, 3, 6, (3, 3), (1, 1), (0, 0, 0, 0), (0, 0), (1, 1), 1, True),
    (6, 4, 5, 5, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), (1, 1), 1, False),
    (5, 3, 4, 7, (3, 2), (3, 2), (1, 0, 2, 1), (2, 1), (1, 2), 1, True),
    (8, 4, 4, 6, (4, 4), (2, 2), (1, 1, 1, 1), (0, 0), (1, 1), 2, True),
    (70, 2, 3, 70, (3, 3), (2, 2), (1, 1, 0, 0), (1, 0), (2, 1), 70, False),  # depthwise
    (33, 3, 3, 65, (2, 2), (2, 2), (0, 0, 0, 0), (0, 0), (1, 1), 1, True),
]


def transposed_attrs(s, p, op, d, g) -> dict:
    return {"stride": list(s), "pad": list(p), "output_padding": list(op), "dilation": list(d), "groups": g}


def transposed_conv_grad_cases(add, B):
    """What autodiff emits for conv_transpose2d (x [N, C, H, W], W [C, M/g, kh, kw], y [N, M, OH, OW]):
    dx = conv2d(dy, W) and dW = conv2d_grad_w(x, dy), x in the role of the signal, dy in that of the
    input, whose output-padding rows and columns no tap reads. A generator of its own."""
    rng = np.random.default_rng(17)
    for c, h, w, m, k, s, p, op, d, g, _ in TRANSPOSED_GEOMS:
        attrs = transposed_attrs(s, p, op, d, g)
        oh, ow = conv_transpose_out_hw((B, c, h, w), (c, m // g, *k), attrs)
        del attrs["output_padding"]
        add("conv2d", [_floats(rng, B, m, oh, ow)], [_floats(rng, c, m // g, *k)], attrs)
        add("conv2d_grad_w", [_floats(rng, B, c, h, w), _floats(rng, B, m, oh, ow)], attrs={**attrs, "kernel": list(k)})


def resize_attrs(size, mode="nearest", coord="half_pixel", nearest="round_prefer_floor", scales=(), **more) -> dict:
    """The attributes of a resize (or, with ``input_hw``, of its gradient)."""
    return {"mode": mode, "coordinate_transformation_mode": coord, "nearest_mode": nearest, "size": list(size),
            "scales": list(scales), **more}


def resize_grad_cases(add, B):
    """The gradient of resize: bilinear (taps shared by neighbouring outputs, clamped borders,
    a map resized to one pixel and one resized from one pixel), nearest enlarging (each pixel
    gets several signals) and reducing (some get none). A generator of its own."""
    rng = np.random.default_rng(17)
    add("resize_grad", [_floats(rng, B, 5, 9, 5)], attrs=resize_attrs([9, 5], "linear", input_hw=[4, 7]))
    add("resize_grad", [_floats(rng, B, 3, 11, 2)], attrs=resize_attrs([11, 2], "linear", "align_corners",
                                                                       input_hw=[5, 6]))
    add("resize_grad", [_floats(rng, B, 4, 10, 3)], attrs=resize_attrs([10, 3], "linear", "pytorch_half_pixel",
                                                                       scales=[2.5, 0.6], input_hw=[4, 5]))
    add("resize_grad", [_floats(rng, B, 6, 4, 3)], attrs=resize_attrs([4, 3], "linear", input_hw=[1, 1]))
    add("resize_grad", [_floats(rng, B, 2, 1, 1)], attrs=resize_attrs([1, 1], "linear", input_hw=[3, 4]))
    add("resize_grad", [_floats(rng, B, 70, 6, 8)], attrs=resize_attrs([6, 8], coord="asymmetric", nearest="floor",
                                                                       scales=[2.0, 2.0], input_hw=[3, 4]))
    add("resize_grad", [_floats(rng, B, 3, 2, 7)], attrs=resize_attrs([2, 7], nearest="ceil", input_hw=[5, 4]))


TRAIN_CASES = train_op_cases()
