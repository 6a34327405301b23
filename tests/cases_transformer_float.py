"""Single-op cases of the transformer float ops for the C and torch op tests:
``forward_cases`` feeds test_backend_ops.op_cases, ``train_cases`` train_cases.train_op_cases.
Same conventions as those: ``add(op, inputs, params=(), attrs=None)``, inputs with a batch
of ``B`` first; each function draws from a generator of its own, so that the cases before
keep their values."""

from __future__ import annotations

import numpy as np


def _floats(rng, *shape, scale=1.0, offset=0.0):
    return (rng.standard_normal(shape) * scale + offset).astype(np.float32)


def _divisors(rng, *shape):
    """Magnitudes in [0.5, 2.5) with random signs: no quotient near a pole."""
    mags = rng.random(shape) * 2.0 + 0.5
    return (mags * np.where(rng.random(shape) < 0.5, -1.0, 1.0)).astype(np.float32)


def _ints(rng, dtype, *shape, lo, hi):
    return rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype)


def _bits(rng, *shape):
    return rng.random(shape) < 0.5


def forward_cases(add, B):
    rng = np.random.default_rng(1401)
    # sub: broadcasting (a param on the right, rank 3 and 4), integers widened exactly, b1 as ±1
    add("sub", [_floats(rng, B, 5, 7)], [_floats(rng, 7)])
    add("sub", [_floats(rng, B, 3, 4, 5)], [_floats(rng, 3, 1, 5)])
    add("sub", [_floats(rng, B, 4, 1), _floats(rng, B, 1, 6)])
    add("sub", [_ints(rng, np.int16, B, 3, 9, lo=-32768, hi=32767), _ints(rng, np.int8, B, 3, 9, lo=-128, hi=127)])
    add("sub", [_bits(rng, B, 70), _bits(rng, B, 70)])
    add("sub", [_bits(rng, B, 2, 65)], [_floats(rng, 65)])
    # (i32 - i32 stays i32; the torch engine holds integers in float32: values below 2^24)
    add("sub", [_ints(rng, np.int32, B, 6, lo=-10 ** 6, hi=10 ** 6),
                _ints(rng, np.int32, B, 6, lo=-10 ** 6, hi=10 ** 6)])
    # div: f32 / f32 with broadcasting, integers and bits read as numbers
    add("div", [_floats(rng, B, 5, 7)], [_divisors(rng, 7)])
    add("div", [_floats(rng, B, 2, 3, 4, 5), _divisors(rng, B, 2, 3, 4, 5)])
    add("div", [_floats(rng, B, 3, 1, 5)], [_divisors(rng, 4, 1)])
    add("div", [_ints(rng, np.int16, B, 9, lo=-300, hi=300)], [_divisors(rng, 9)])
    add("div", [_bits(rng, B, 4, 70)], [_divisors(rng, 4, 1)])
    # erf and gelu (both forms), rank 3 and 4, arguments well into the tails
    add("erf", [_floats(rng, B, 5, 7, scale=2.0)])
    add("erf", [_floats(rng, B, 2, 3, 4, 5, scale=3.0)])
    for form in ("none", "tanh"):
        add("gelu", [_floats(rng, B, 6, 16, scale=3.0)], attrs={"approximate": form})
        add("gelu", [_floats(rng, B, 3, 2, 4, 5, scale=2.0)], attrs={"approximate": form})
    # layernorm: the last axis of [B, L, D] (with and without bias, D = 64 and odd), two
    # trailing axes, rank 4 (stored channels-last) on axes 3, 2 and 1, offset rows
    add("layernorm", [_floats(rng, B, 5, 64, scale=2.0, offset=3.0)], [_floats(rng, 64), _floats(rng, 64)])
    add("layernorm", [_floats(rng, B, 7, 9)], [_floats(rng, 9)])
    add("layernorm", [_floats(rng, B, 4, 6)], [_floats(rng, 4, 6), _floats(rng, 4, 6)], {"axis": 1})
    add("layernorm", [_floats(rng, B, 3, 4, 5)], [_floats(rng, 5), _floats(rng, 5)], {"axis": -1, "epsilon": 1e-3})
    add("layernorm", [_floats(rng, B, 3, 4, 5, offset=-50.0)], [_floats(rng, 4, 5), _floats(rng, 4, 5)], {"axis": 2})
    add("layernorm", [_floats(rng, B, 3, 2, 2, scale=10.0)], [_floats(rng, 3, 2, 2)], {"axis": 1})
    add("layernorm", [_floats(rng, B, 1)], [_floats(rng, 1), _floats(rng, 1)])  # a row of one: y = bias
    # reductions: last axis, middle and last of rank 4, the batch axis, keepdims both ways
    for keep in (True, False):
        add("reduce_sum", [_floats(rng, B, 5, 7)], attrs={"axes": [-1], "keepdims": keep})
        add("reduce_mean", [_floats(rng, B, 5, 7, offset=2.0)], attrs={"axes": [1], "keepdims": keep})
        add("reduce_sum", [_floats(rng, B, 3, 4, 5)], attrs={"axes": [1, 3], "keepdims": keep})
        add("reduce_mean", [_floats(rng, B, 3, 4, 5)], attrs={"axes": [-1, 2], "keepdims": keep})
        add("reduce_mean", [_floats(rng, B, 4, 3)], attrs={"axes": [0], "keepdims": keep})
        add("reduce_sum", [_floats(rng, B, 2, 3)], attrs={"axes": [0, 2], "keepdims": keep})
    add("reduce_mean", [_floats(rng, B, 3, 4)], attrs={"axes": [0, 1, 2]})


def train_cases(add, B):
    rng = np.random.default_rng(2401)
    # the elementwise gradients
    add("erf_grad", [_floats(rng, B, 5, 7), _floats(rng, B, 5, 7, scale=2.0)])
    add("erf_grad", [_floats(rng, B, 2, 3, 4, 5), _floats(rng, B, 2, 3, 4, 5)])
    for form in ("none", "tanh"):
        add("gelu_grad", [_floats(rng, B, 6, 16), _floats(rng, B, 6, 16, scale=3.0)], attrs={"approximate": form})
        add("gelu_grad", [_floats(rng, B, 3, 2, 4, 5), _floats(rng, B, 3, 2, 4, 5)], attrs={"approximate": form})
    # the subtrahend's and the divisor's signals: summed to their broadcast shapes
    add("sub_grad_b", [_floats(rng, B, 5, 7)], attrs={"shape": [7]})
    add("sub_grad_b", [_floats(rng, B, 3, 4, 5)], attrs={"shape": ["N", 1, 4, 1]})
    add("sub_grad_b", [_floats(rng, B, 4, 6)], attrs={"shape": ["N", 4, 6]})
    add("div_grad_b", [_floats(rng, B, 5, 7), _floats(rng, B, 5, 7)], [_divisors(rng, 7)])
    add("div_grad_b", [_floats(rng, B, 5, 7), _floats(rng, B, 5, 1)], [_divisors(rng, 7)])
    add("div_grad_b", [_floats(rng, B, 2, 3, 4, 5), _floats(rng, B, 2, 3, 4, 5), _divisors(rng, B, 2, 3, 4, 5)])
    add("div_grad_b", [_floats(rng, B, 4, 70), _bits(rng, B, 4, 70)], [_divisors(rng, 4, 1)])
    # layernorm's gradients: [B, L, D] on the last axis, two trailing axes, rank 4 on axes 3 and 1
    for shape, axis in (((5, 64), -1), ((7, 9), -1), ((4, 6), 1), ((3, 4, 5), -1), ((3, 4, 5), 2),
                        ((3, 2, 2), 1)):
        x = _floats(rng, B, *shape, scale=2.0, offset=1.0)
        row = shape[axis % (len(shape) + 1) - 1:]
        attrs = {"axis": axis, "epsilon": 1e-5 if axis != 2 else 1e-3}
        add("layernorm_grad_x", [_floats(rng, B, *shape), x], [_floats(rng, *row)], attrs)
        add("layernorm_grad_scale", [_floats(rng, B, *shape), x], attrs=attrs)
    # the mean's gradient: dy spread over the reduced positions
    add("reduce_mean_grad", [_floats(rng, B, 5, 1)], attrs={"axes": [-1], "shape": ["N", 5, 7]})
    add("reduce_mean_grad", [_floats(rng, B, 5)], attrs={"axes": [2], "keepdims": False, "shape": ["N", 5, 7]})
    add("reduce_mean_grad", [_floats(rng, B, 1, 4, 1)], attrs={"axes": [1, 3], "shape": ["N", 3, 4, 5]})
    add("reduce_mean_grad", [_floats(rng, B, 4)], attrs={"axes": [1, 3], "keepdims": False, "shape": ["N", 3, 4, 5]})
