"""Writes the golden IR files of tests/golden/ (run by hand when the format changes;
the tests only read them). Weights are random with fixed seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import boldc
from boldc import FunctionBuilder, Module, tensor

HERE = Path(__file__).parent


def float_mlp() -> Module:
    rng = np.random.default_rng(1)
    m = Module()
    m.attrs = {"source": "golden", "note": "float MLP 64-16-10"}
    w0 = m.add_param("fc0.w", tensor("f32", 16, 64), rng.standard_normal((16, 64)).astype(np.float32))
    b0 = m.add_param("fc0.b", tensor("f32", 16), rng.standard_normal(16).astype(np.float32))
    w1 = m.add_param("fc1.w", tensor("f32", 10, 16), rng.standard_normal((10, 16)).astype(np.float32))
    fb = FunctionBuilder(m, "forward", [("x", tensor("f32", "N", 64))])
    a = fb.op("linear", [fb.args[0], w0, b0], name="a0")
    h = fb.op("relu", [a], name="h0")
    y = fb.op("linear", [h, w1], name="logits")
    fb.ret(fb.op("softmax", [y], name="p"))
    return m


def boolean_mlp() -> Module:
    rng = np.random.default_rng(2)
    m = Module()
    w0 = m.add_param("fc0.w", tensor("f32", 32, 64), rng.standard_normal((32, 64)).astype(np.float32))
    w1 = m.add_param("fc1.w", tensor("b1", 32, 32), rng.random((32, 32)) < 0.5, {"init": "sign"})
    w1b = m.add_param("fc1.b", tensor("b1", 32), rng.random(32) < 0.5)
    w2 = m.add_param("fc2.w", tensor("b1", 32, 32), rng.random((32, 32)) < 0.5)
    w3 = m.add_param("fc3.w", tensor("f32", 10, 32), rng.standard_normal((10, 32)).astype(np.float32))
    fb = FunctionBuilder(m, "forward", [("x", tensor("f32", "N", 64))])
    a = fb.op("linear", [fb.args[0], w0], name="a0")
    h = fb.op("threshold", [a], name="h0")
    s = fb.op("blinear", [h, w1, w1b], name="s1")
    h = fb.op("threshold", [s], {"tau": 1}, name="h1")
    s = fb.op("blinear", [h, w2], {"logic": "xor"}, name="s2")
    h = fb.op("threshold", [s], name="h2")
    fb.ret(fb.op("linear", [h, w3], name="logits"))
    return m


def boolean_cnn() -> Module:
    rng = np.random.default_rng(3)
    m = Module()
    c1 = m.add_param("conv1.w", tensor("b1", 8, 1, 3, 3), rng.random((8, 1, 3, 3)) < 0.5)
    c1b = m.add_param("conv1.b", tensor("f32", 8), rng.standard_normal(8).astype(np.float32))
    t1 = m.add_param("conv1.tau", tensor("f32", 8), rng.standard_normal(8).astype(np.float32))
    c2 = m.add_param("conv2.w", tensor("b1", 16, 8, 3, 3), rng.random((16, 8, 3, 3)) < 0.5)
    t2 = m.add_param("conv2.tau", tensor("i8", 16), rng.integers(-5, 6, 16).astype(np.int8))
    g2 = m.add_param("conv2.ge", tensor("b1", 16), rng.random(16) < 0.7)
    c3 = m.add_param("conv3.w", tensor("b1", 16, 16, 3, 3), rng.random((16, 16, 3, 3)) < 0.5)
    f1 = m.add_param("fc1.w", tensor("b1", 32, 64), rng.random((32, 64)) < 0.5)
    f2 = m.add_param("fc2.w", tensor("f32", 10, 32), rng.standard_normal((10, 32)).astype(np.float32))
    f2b = m.add_param("fc2.b", tensor("f32", 10), np.zeros(10, np.float32))
    fb = FunctionBuilder(m, "forward", [("x", tensor("f32", "N", 1, 8, 8))])
    a = fb.op("mconv2d", [fb.args[0], c1, c1b], {"pad": [1, 1, 1, 1]}, name="a1")
    h = fb.op("threshold", [a, t1], name="h1")
    s = fb.op("bconv2d", [h, c2], {"pad": [1, 1, 1, 1]}, name="s2")
    h = fb.op("threshold", [s, t2, g2], name="h2")
    h = fb.op("bmaxpool2d", [h], {"kernel": [2, 2], "stride": [2, 2]}, name="p2")
    s = fb.op("bconv2d", [h, c3], {"logic": "xor", "pad": [1, 1, 1, 1], "stride": [2, 2],
                                  "pad_mode": "neutral"}, name="s3")
    h = fb.op("threshold", [s], name="h3")
    h = fb.op("flatten", [h], name="f3")
    y = fb.op("mlinear", [fb.op("cast", [h], {"to": "f32"}, name="e3"), f1], name="a4")
    h = fb.op("threshold", [y], {"tau": 0.5}, name="h4")
    fb.ret(fb.op("linear", [h, f2, f2b], name="logits"))
    return m


if __name__ == "__main__":
    for name, make in [("float_mlp", float_mlp), ("boolean_mlp", boolean_mlp), ("boolean_cnn", boolean_cnn)]:
        boldc.save(make(), HERE / f"{name}.bir")
        print("wrote", HERE / f"{name}.bir")
