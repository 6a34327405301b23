"""Training steps through the generated C with integer backward signals, an i16 accumulator
and BatchNorm with batch statistics (docs/training.md): every b1 and integer value of the
step is the interpreter's, bit for bit. So is every f32 value of an MLP (exact integer sums
scaled by a power of two, boldc's exp, float sums in a fixed order); a float convolution's
weight gradient (the first layer of a CNN) sums in its own order, so the float state of a
CNN agrees within FLOAT_RTOL of the tensor's scale (docs/training.md, "Determinism")."""

from __future__ import annotations

import numpy as np
import pytest

import boldc
from boldc.backend.training import TrainOptions, training_module
from boldc.errors import BoldcError

from onnxgraph import example_model
from opbuild import single_op
from trainutil import digits_mlp, digits_split, small_cnn

STEPS = 5
FLOAT_RTOL = 1e-5


def _same_state(cm, ref: boldc.Module, step: int, exact_floats: bool) -> None:
    for name, p in ref.params.items():
        got = cm.get_param(name)
        if exact_floats or not p.type.dtype.is_float:
            assert np.array_equal(got, p.data, equal_nan=True), f"step {step}: @{name} differs from the interpreter"
        else:
            scale = max(float(np.abs(p.data).max()), 1e-30)
            err = float(np.abs(got.astype(np.float64) - p.data).max())
            assert err <= FLOAT_RTOL * scale, f"step {step}: @{name} differs by {err:.3g} (scale {scale:.3g})"


def _steps(module, shape, exact_floats: bool = True, **options) -> boldc.Module:
    """STEPS steps in C and in the interpreter from the same state on the same batches."""
    xtr, _, ytr, _ = digits_split()
    xtr = xtr.reshape((-1,) + shape)
    ref = training_module(module, TrainOptions.from_kwargs(dict(options)))
    cm = boldc.compile(module, train=True, max_batch=32, **options)
    rng = np.random.default_rng(0)
    for step in range(STEPS):
        idx = rng.choice(len(xtr), 32, replace=False)
        loss = cm.train_step(xtr[idx], ytr[idx])
        want = boldc.interpret(ref, [xtr[idx], ytr[idx]], "train_step")
        if exact_floats:
            assert np.float32(loss) == np.float32(want), f"step {step}: loss {loss} != {want}"
        else:
            assert abs(float(loss) - float(want)) <= FLOAT_RTOL * abs(float(want)), (step, loss, want)
        _same_state(cm, ref, step, exact_floats)
    return ref


@pytest.mark.parametrize("options", [
    {"signal_bits": 16}, {"signal_bits": 8}, {"signal_bits": 4, "rounding": "log"},
    {"signal_bits": 16, "rounding": "stochastic", "seed": 7}, {"signal_bits": 16, "accumulator": "i16"},
], ids=lambda o: "-".join(f"{v}" for v in o.values()))
def test_integer_signal_steps_are_the_interpreters_bit_for_bit(options):
    _steps(digits_mlp(0), (64,), eta=10.0, **options)


@pytest.mark.parametrize("logic,pad_mode", [("xnor", "false"), ("xor", "neutral")])
def test_cnn_steps_with_integer_signals(logic, pad_mode):
    _steps(small_cnn(logic, pad_mode), (1, 8, 8), exact_floats=False, eta=10.0, signal_bits=16)


def test_an_i16_accumulator_flips_and_counts_saturations():
    """A large η saturates some accumulators: the counter says how many, as the interpreter."""
    ref = _steps(digits_mlp(0), (64,), eta=2000.0, signal_bits=16, accumulator="i16")
    counters = {n: int(p.data) for n, p in ref.params.items() if n.endswith(".m.saturated")}
    assert counters and any(counters.values()), counters


def test_batchnorm_with_batch_statistics_trains_as_the_interpreter():
    """The digits CNN converted with --keep-bn: batchnorm_train in the step, running
    statistics updated (momentum 0.1 from the ONNX model's 0.9)."""
    m = boldc.convert(example_model("digits_cnn"), keep_bn=True)
    ref = _steps(m, (1, 8, 8), exact_floats=False, eta=3.0)
    before = {n: p.data for n, p in m.params.items()}
    moved = [n for n, p in ref.params.items() if n in before and n.endswith("running_mean")
             and not np.array_equal(p.data, before[n])]
    assert moved, "the running statistics did not change"


def test_batchnorm_train_refuses_one_value_per_channel():
    rng = np.random.default_rng(0)
    c = 5
    m = single_op("batchnorm_train", [rng.standard_normal((4, c)).astype(np.float32)],
                  [np.ones(c, np.float32), np.zeros(c, np.float32), np.zeros(c, np.float32),
                   np.ones(c, np.float32)])
    cm = boldc.compile(m, max_batch=4)
    with pytest.raises(BoldcError, match="more than one value per channel"):
        cm.run("forward", [np.zeros((1, c), np.float32)])
    assert np.array_equal(cm.get_param("p2"), np.zeros(c, np.float32))  # a refused call changes no param
    y = cm.run("forward", [np.arange(2 * c, dtype=np.float32).reshape(2, c)])[0]
    assert np.array_equal(y, boldc.interpret(m, np.arange(2 * c, dtype=np.float32).reshape(2, c)))
    assert np.array_equal(cm.get_param("p2"), m.params["p2"].data)
