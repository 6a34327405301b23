"""The C kernel of the fused op (boldc/backend/emitters/fused.py): the same values as the
interpreter, bit for bit, in whole-batch and chunked form, and the arena it saves."""

from __future__ import annotations

import numpy as np
import pytest

import boldc
from boldc.backend.emit import Options, generate
from boldc.backend.emitters import fused as fused_emitter
from boldc.passes import PassManager

from onnxgraph import example_input, example_model


def _fused(name: str, **options) -> boldc.Module:
    m = boldc.convert(example_model(name), **options)
    assert any(op.name == "fused" for op in m.function("forward").ops), "convert fuses by default"
    return m


@pytest.mark.parametrize("chunk_bytes", [1, fused_emitter.CHUNK_BYTES], ids=["one-sample-chunks", "default"])
@pytest.mark.parametrize("name,keep_bn", [("digits_mlp", False), ("digits_cnn", False), ("digits_cnn", True)])
def test_fused_inference_in_c_equals_the_interpreter(name, keep_bn, chunk_bytes, monkeypatch):
    """With one sample per chunk the parts run 7 times on slices (odd batch: a short last
    chunk would show); by default the whole batch is one chunk."""
    monkeypatch.setattr(fused_emitter, "CHUNK_BYTES", chunk_bytes)
    m = _fused(name, keep_bn=keep_bn)
    x = example_input(name, 7)
    cm = boldc.compile(m, max_batch=8)
    assert np.array_equal(cm.infer(x), boldc.interpret(m, x))


def test_a_fused_training_step_in_c_equals_the_unfused_one(monkeypatch):
    """Fused gradient convolutions (threshold backward on the input signal) and a kept
    pre-activation, chunked one sample at a time, give the unfused C's step bit for bit
    (every param after each step, the loss)."""
    monkeypatch.setattr(fused_emitter, "CHUNK_BYTES", 1)
    m = boldc.convert(example_model("digits_cnn"), fuse=False)
    PassManager("autodiff,insert-optimizer{eta=10}").run(m)
    f = m.copy()
    PassManager("fuse-epilogues").run(f)
    assert sum(op.name == "fused" for op in f.function("train_step").ops) >= 4
    x = example_input("digits_cnn", 5)
    y = np.arange(5, dtype=np.int32) % 10
    unfused, fused = (boldc.compile(module, train=True, max_batch=8) for module in (m, f))
    for _ in range(3):
        assert fused.train_step(x, y) == unfused.train_step(x, y)
        for name in m.params:
            assert np.array_equal(fused.get_param(name), unfused.get_param(name)), name


@pytest.mark.parametrize("name,ratio", [("vgg_small", 0.2), ("resnet18", 0.3)])
def test_fusion_shrinks_the_inference_arena(name, ratio):
    """Boolean conv + threshold leaves packed bits in the arena, not the integer
    pre-activations of the batch (measured at batch 64: VGG-Small 34.6 MB -> 3.2 MB,
    ResNet-18 244 MB -> 48 MB)."""
    m = boldc.convert(example_model(name), fuse=False)
    f = m.copy()
    PassManager("fuse-epilogues").run(f)
    before = generate(m, Options(max_batch=64)).arena_bytes
    after = generate(f, Options(max_batch=64)).arena_bytes
    assert after < ratio * before, (before, after)


def test_a_fused_op_without_scratch_compiles():
    """linear (scratch 0) + relu with the pre-activation kept: the fused op needs no scratch
    at all, so its kernel must not refer to the function's (undeclared) scratch pointer."""
    from boldc import FunctionBuilder, Module, tensor

    rng = np.random.default_rng(5)
    m = Module()
    w = m.add_param("w", tensor("f32", 4, 6), rng.standard_normal((4, 6)).astype(np.float32))
    fb = FunctionBuilder(m, "forward", [("x", tensor("f32", "N", 6))])
    y = fb.op("linear", [fb.args[0], w], name="y")
    fb.ret(fb.op("relu", [y], name="a"), y)
    PassManager("fuse-epilogues").run(m)
    op = next(op for op in m.function("forward").ops if op.name == "fused")
    assert len(op.results) == 2  # y is kept
    x = rng.standard_normal((3, 6)).astype(np.float32)
    got, want = boldc.compile(m, max_batch=4).run("forward", [x]), boldc.interpret(m, x)
    for g, e in zip(got, want):
        assert np.array_equal(g, e)
