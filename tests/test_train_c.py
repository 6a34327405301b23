"""Training through the generated C (docs/training.md, "The training step in C").

- 20 steps of the interpreter and of the generated C side by side, from the same state
  on the same batches: identical b1 weights (hence identical flips) after every step,
  every f32 state tensor (float weights, Adam moments, accumulators M, β) and the loss
  within STATE_RTOL of the tensor's scale; for an MLP and a small CNN, xnor and xor,
  both padding modes, on the SIMD and the portable paths.
- compile(train=True): options, errors, fit, evaluate, a refused batch changes nothing.
- Learning happens through C (a short run on the digits).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import boldc
from boldc.backend.training import TrainOptions, loss_op, training_module
from boldc.errors import BoldcError, InterpretError
from boldc.passes.schedule_updates import ScheduleUpdates

from backend_check import build_variant
from trainutil import assert_c_steps_match, digits_mlp, digits_split, small_cnn, tiny_decoder

# Relative to the largest magnitude of the tensor. The interpreter sums gradients in
# double, the C code in f32 in its own order; after 20 steps the largest difference
# measured was 3.4e-6 of the scale (docs/training.md).
STATE_RTOL = 1e-5
STEPS = 20
# Flips of each VGG-Small step below (eta 30, rescaled): 654964, 460404, 6804 measured (AVX-512
# host); a step that flips (almost) nothing would not test the Boolean optimizer.
VGG_MIN_FLIPS = 1000
SANITIZE = "-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"


def _data(shape):
    xtr, _, ytr, _ = digits_split()
    return xtr.reshape((-1,) + shape), ytr


MODELS = {
    "mlp-xnor": (lambda: digits_mlp(0), (64,)),
    "cnn-xnor-false": (lambda: small_cnn("xnor", "false"), (1, 8, 8)),
    "cnn-xor-neutral": (lambda: small_cnn("xor", "neutral"), (1, 8, 8)),
}


def _compare(ref: boldc.Module, cm, step: int, before: dict) -> int:
    """Asserts the C state equals the interpreter's; returns the flips of this step."""
    flips = 0
    for name, p in ref.params.items():
        got = cm.get_param(name)
        if p.type.dtype.is_bool or p.type.dtype.is_int:
            if not np.array_equal(got, p.data):
                bad = np.argwhere(got != p.data)[0].tolist()
                raise AssertionError(f"step {step}: @{name} differs at {bad} (C {got[tuple(bad)]}, "
                                     f"interpreter {p.data[tuple(bad)]})")
            flips += int((p.data != before[name]).sum()) if p.type.dtype.is_bool else 0
        else:
            scale = float(np.abs(p.data).max())
            err = float(np.abs(got.astype(np.float64) - p.data).max())
            assert err <= STATE_RTOL * scale, f"step {step}: @{name} differs by {err:.3g} (scale {scale:.3g})"
    return flips


@pytest.mark.parametrize("variant", ["simd", "avx2", "portable"])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_twenty_steps_match_the_interpreter(model, variant):
    build, shape = MODELS[model]
    m = build()
    x, y = _data(shape)
    opts = {"eta": 10.0, "total_steps": STEPS, "lr": 3e-3}  # a large η: many flips to compare
    ref = training_module(m, TrainOptions.from_kwargs(opts))
    cm = build_variant(m, variant, train=True, max_batch=32, **opts)
    flips = []
    for step in range(STEPS):
        idx = np.arange(32 * step, 32 * step + 32) % len(x)
        before = {n: p.data for n, p in ref.params.items()}
        want = float(boldc.interpret(ref, [x[idx], y[idx]], "train_step"))
        got = cm.train_step(x[idx], y[idx])
        assert abs(got - want) <= STATE_RTOL * abs(want), f"step {step}: loss {got} vs {want}"
        flips.append(_compare(ref, cm, step, before))
    assert sum(flips) > 50, f"too few flips to test the optimizer: {flips}"
    assert int(cm.get_param("opt.step")) == STEPS


@pytest.mark.parametrize("max_batch", [1, 4])
def test_fixed_batch_steps_match_the_interpreter(max_batch):
    """A model converted with a fixed batch of 3 (no batch symbol: the kernels must size
    their loops and scratch by the static dim, not by the call's n or max_batch): five
    steps agree with the interpreter."""
    onnx_path = Path(__file__).resolve().parent.parent / "examples" / "digits_cnn.onnx"
    m = boldc.convert(onnx_path, input_shapes={"x": [3, 1, 8, 8]})
    x, y = _data((1, 8, 8))
    opts = {"eta": 10.0, "total_steps": 5}
    ref = training_module(m, TrainOptions.from_kwargs(opts))
    cm = boldc.compile(m, train=True, max_batch=max_batch, **opts)
    flips = 0
    for step in range(5):
        idx = np.arange(3 * step, 3 * step + 3)
        before = {n: p.data for n, p in ref.params.items()}
        want = float(boldc.interpret(ref, [x[idx], y[idx]], "train_step"))
        got = cm.train_step(x[idx], y[idx])
        assert abs(got - want) <= STATE_RTOL * abs(want), f"step {step}: loss {got} vs {want}"
        flips += _compare(ref, cm, step, before)
    assert flips > 0


def test_learning_happens_through_c():
    """A few epochs of the digits MLP from random bits, in C: well above chance."""
    xtr, xte, ytr, yte = digits_split()
    cm = boldc.compile(digits_mlp(1), train=True, total_steps=5 * 22)
    losses = cm.fit(xtr, ytr, epochs=5)
    assert losses[-1] < 0.5 * losses[0]
    _, accuracy = cm.evaluate(xte, yte)
    assert accuracy > 0.85


def test_fit_is_deterministic_and_resumable():
    """Two epochs in one go equal one epoch, a checkpoint, a new model and one more epoch."""
    xtr, _, ytr, _ = digits_split()
    xtr, ytr = xtr[:300], ytr[:300]
    opts = {"total_steps": 10, "seed": 5}
    a = boldc.compile(digits_mlp(0), train=True, **opts)
    a.fit(xtr, ytr, epochs=2)
    b = boldc.compile(digits_mlp(0), train=True, **opts)
    b.fit(xtr, ytr, epochs=1)
    raw = b.params_image()
    c = boldc.compile(digits_mlp(0), train=True, **opts)
    c._params[:] = np.frombuffer(raw, np.uint8)
    c.fit(xtr, ytr, epochs=2, start_epoch=1)
    assert a.params_image() == c.params_image()


def test_refused_batch_changes_nothing():
    """A label out of range is found by the C input check before any op runs."""
    cm = boldc.compile(digits_mlp(0), train=True)
    before = cm.params_image()
    x = np.zeros((4, 64), np.float32)
    with pytest.raises(InterpretError, match="label is out of range: there are 10 classes"):
        cm.train_step(x, np.array([0, 1, 10, 2], np.int32))
    assert cm.params_image() == before
    with pytest.raises(BoldcError, match="at most max_batch=64"):
        cm.train_step(np.zeros((65, 64), np.float32), np.zeros(65, np.int32))
    with pytest.raises(InterpretError):
        cm.train_step(np.zeros((4, 63), np.float32), np.zeros(4, np.int32))
    assert cm.params_image() == before


def test_compile_train_options_and_errors():
    m = digits_mlp(0)
    cm = boldc.compile(m, train=True, freeze_float=True, eta=2.0)
    assert "train_step" not in m.functions  # the caller's module is untouched
    assert cm.max_batch == 64 and set(cm.program.functions) == {"forward", "train_step"}
    assert not any(n.endswith("adam_m") for n in cm.param_names())
    with pytest.raises(BoldcError, match="need train=True"):
        boldc.compile(m, eta=3.0)
    with pytest.raises(BoldcError, match="unknown training option"):
        boldc.compile(m, train=True, etta=3.0)
    with pytest.raises(BoldcError, match="needs total-steps"):
        boldc.compile(m, train=True, schedule="cosine")
    for name, value, what in (("lr", 1e39, "infinite"), ("eta", 1e-50, "zero")):  # finite doubles, not f32
        with pytest.raises(BoldcError, match=re.escape(f"{name} = {value!r} is {what} in float32")):
            boldc.compile(m, train=True, **{name: value})
    stepped = training_module(m, TrainOptions())
    with pytest.raises(BoldcError, match="already has its optimizer"):
        boldc.compile(stepped, train=True, eta=1.0)
    with pytest.raises(BoldcError, match="compiled without @train_step"):
        boldc.compile(m).train_step(np.zeros((1, 64), np.float32), np.zeros(1, np.int32))


def test_evaluate_regression_loss_has_no_accuracy():
    m = digits_mlp(0)
    cm = boldc.compile(m, train=True, loss="mse")
    x = np.random.default_rng(0).random((5, 64)).astype(np.float32)
    target = np.zeros((5, 10), np.float32)
    cm.train_step(x, target)
    loss, accuracy = cm.evaluate(x, target)
    assert accuracy is None and loss > 0
    assert loss_op(cm.module).name == "mse"


def test_schedule_updates_moves_updates_next_to_their_signals():
    """Each update follows the last reader of its param; the step computes the same."""
    m = training_module(digits_mlp(0), TrainOptions())
    plain = digits_mlp(0)
    from boldc.passes import PassManager

    PassManager("autodiff,insert-optimizer").run(plain)
    ops = [op.name for op in m.function("train_step").ops]
    assert ops[0] == "lr_schedule" and ops[-1] == "increment"
    last_signal = len(ops) - 1 - ops[::-1].index("linear_grad_x")
    assert ops.index("flip_update") < last_signal  # fc2's update before fc1's input signal
    assert ScheduleUpdates().run(m) is False  # already scheduled
    xtr, _, ytr, _ = digits_split()
    a = float(boldc.interpret(m, [xtr[:16], ytr[:16]], "train_step"))
    b = float(boldc.interpret(plain, [xtr[:16], ytr[:16]], "train_step"))
    assert a == b
    for name in m.params:
        assert np.array_equal(m.params[name].data, plain.params[name].data)
    planned = boldc.compile(m, functions=["train_step"], max_batch=64).arena_bytes
    unplanned = boldc.compile(plain, functions=["train_step"], max_batch=64).arena_bytes
    assert planned < unplanned


def test_rematerialize_recomputes_wide_results_and_keeps_the_values():
    """Pre-activations (Boolean layers' integer sums, the first conv's float output) are
    recomputed after the loss instead of kept; the step computes the same values and the
    arena of the generated step shrinks."""
    from boldc.passes import PassManager
    from boldc.passes.rematerialize import Rematerialize

    plain = small_cnn("xnor", "neutral")
    PassManager("autodiff,insert-optimizer,schedule-updates").run(plain)
    m = plain.copy()
    assert Rematerialize().run(m)
    again = [op for op in m.function("train_step").ops if op.results and op.results[0].name.endswith(".again")]
    # the two Boolean convs, the 1 -> 8 float conv and the classifier (b1 in, 10 floats out)
    assert sorted(op.name for op in again) == ["bconv2d", "bconv2d", "conv2d", "linear"]
    x, y = _data((1, 8, 8))
    for module in (m, plain):
        boldc.interpret(module, [x[:16], y[:16]], "train_step")
    for name in m.params:
        assert np.array_equal(m.params[name].data, plain.params[name].data), name
    small = boldc.compile(m, functions=["train_step"], max_batch=64).arena_bytes
    large = boldc.compile(plain, functions=["train_step"], max_batch=64).arena_bytes
    assert small < large


def test_vgg_small_steps_match_the_interpreter(tmp_path):
    """VGG-Small (converted from its untrained PyTorch export) trains through C: three
    steps at batch 2 agree with the interpreter (b1 weights bit for bit, the rest within
    STATE_RTOL) and the loss stays finite."""
    import sys

    examples = Path(__file__).resolve().parent.parent / "examples"
    sys.path.insert(0, str(examples))
    try:
        from export_large import build
        from onnx_export import export_onnx
    finally:
        sys.path.remove(str(examples))
    model, shape = build("vgg_small")
    export_onnx(model, shape, tmp_path / "vgg.onnx")
    m = boldc.convert(tmp_path / "vgg.onnx")
    opts = {"eta": 30.0, "rescale": True, "total_steps": 3}
    ref = training_module(m, TrainOptions.from_kwargs(opts))
    cm = boldc.compile(m, train=True, max_batch=2, **opts)
    rng = np.random.default_rng(0)
    flips = []
    for step in range(3):
        x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
        y = np.array([step, 9 - step], np.int32)
        before = {n: p.data for n, p in ref.params.items()}
        want = float(boldc.interpret(ref, [x, y], "train_step"))
        got = cm.train_step(x, y)
        assert np.isfinite(got) and abs(got - want) <= STATE_RTOL * abs(want)
        flips.append(_compare(ref, cm, step, before))
    assert min(flips) >= VGG_MIN_FLIPS, f"too few flips to test the Boolean optimizer: {flips}"


@pytest.mark.skipif(shutil.which("make") is None, reason="the exported folder is built with make, not installed here")
def test_sanitized_training_program_runs_clean(cli, tmp_path):
    """The digits CNN's exported training program (`compile --train`) built with ASan and
    UBSan: two epochs of 37 samples at max_batch 16 (a partial last batch), a resume, and
    damaged checkpoints given to -r are refused (exit 2) without a sanitizer report."""
    examples = Path(__file__).resolve().parent.parent / "examples"
    bir = tmp_path / "cnn.bir"
    boldc.save(boldc.convert(examples / "digits_cnn.onnx"), bir)
    out = tmp_path / "out"
    code, _, err = cli("compile", bir, "--train", "--total-steps", "9", "--max-batch", "16", "-o", out)
    assert code == 0, err
    flags = f"-std=c99 -O1 -g -Wall -Wextra -Werror {SANITIZE}"
    made = subprocess.run(["make", "-C", str(out), f"CFLAGS={flags}", "ARCH=-march=native", f"LDFLAGS={SANITIZE}",
                           "model_train"], capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stdout + made.stderr
    with np.load(examples / "digits_train.npz") as data:
        data["x"][:37].astype("<f4").tofile(out / "x.bin")
        data["y"][:37].astype("<i4").tofile(out / "y.bin")
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1", UBSAN_OPTIONS="halt_on_error=1")

    def train(*args):
        run = subprocess.run(["./model_train", *args, "x.bin", "y.bin"], cwd=out, capture_output=True, text=True,
                             timeout=600, env=env)
        assert "Sanitizer" not in run.stderr and "runtime error" not in run.stderr, run.stderr[-3000:]
        return run

    run = train("2", "a.ckpt")
    assert run.returncode == 0 and run.stdout.count("over 3 steps") == 2, run.stderr
    assert train("-r", "a.ckpt", "1", "b.ckpt").returncode == 0
    raw = (out / "a.ckpt").read_bytes()
    damaged = {"short.ckpt": raw[:len(raw) // 2], "flip.ckpt": raw[:99] + bytes([raw[99] ^ 4]) + raw[100:],
               "head.ckpt": raw[:40], "empty.ckpt": b""}
    for name, data in damaged.items():
        (out / name).write_bytes(data)
        run = train("-r", name, "1", "c.ckpt")
        assert run.returncode == 2 and name in run.stderr, (name, run.stderr)
    assert not (out / "c.ckpt").exists()


@pytest.mark.parametrize("opt", ["eta=nan", "lr=inf", "eta=0", "lr=-1"])
def test_insert_optimizer_refuses_non_finite_rates(opt):
    """The pass itself (not only the training commands) refuses a rate that is not a
    finite number > 0: NaN would pass a plain `<= 0` check."""
    from boldc.passes import PassManager

    m = digits_mlp(0)
    with pytest.raises(BoldcError, match="eta and lr must be finite numbers > 0"):
        PassManager(f"autodiff,insert-optimizer{{{opt}}}").run(m)


# A 16-bit integer signal quantizes the float signal that the transposed convolution's dx (a float
# convolution, whose sums the interpreter orders by its BLAS) hands back: a value near a rounding
# boundary may land on the neighbouring level. Measured: 1.6e-5 of the scale at most (an Adam
# second moment, the square of that gradient); with f32 signals 3.6e-7.
DECODER_RTOL = {"f32": STATE_RTOL, "16": 5e-5}


@pytest.mark.parametrize("variant,signal_bits", [("simd", "f32"), ("portable", "f32"), ("simd", "16")])
def test_a_decoder_with_a_transposed_convolution_trains_in_c(variant, signal_bits):
    """tiny_decoder (float conv, Boolean conv, float conv_transpose2d, ReLU, pixel shuffle) with
    the mse loss: 8 steps of the C equal the interpreter's (trainutil.assert_c_steps_match); Adam
    moves the transposed convolution's f32 weights and bias, and Boolean weights flip."""
    rng = np.random.default_rng(7)
    batches = [(rng.standard_normal((6, 2, 4, 4)).astype(np.float32),
                rng.standard_normal((6, 2, 16, 16)).astype(np.float32)) for _ in range(8)]
    module = tiny_decoder(0)
    ref = assert_c_steps_match(module, batches, max_batch=6, variant=variant, rtol=DECODER_RTOL[signal_bits],
                               loss="mse", lr=1e-2, eta=30.0, total_steps=8, signal_bits=signal_bits)
    for name in ("up.w", "up.b"):
        assert not np.allclose(ref.params[name].data, module.params[name].data, atol=1e-4), f"@{name} not trained"
    assert (ref.params["c1.w"].data != module.params["c1.w"].data).any()
