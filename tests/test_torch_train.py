"""Training on the torch engine equals the interpreter's @train_step (docs/torch.md, "Exactness").

- 20 steps of the interpreter and of ``to_torch`` side by side, from the same state on the same
  batches (CPU, exact): identical b1 weights after every step and the loss within 1e-5, with f32
  signals and with 16-bit integer signals. On the digits MLP every param (float weights, Adam
  moments, accumulators M, β, the step counter) and the loss are bit-identical. On CNNs with a
  float first convolution, whose forward the interpreter computes with a float32 BLAS (its own
  order of summation), the float state of that layer agrees within 1e-5 of its scale and at least
  99.9 % of all float32 values are bit-identical; every b1 and integer value is identical.
- The other options (box and Bi-Real threshold backward, rescaling, i16 accumulators,
  stochastic and logarithmic rounding, frozen float layers, sum reduction, mse) bit for bit.
- ``loss.backward()`` leaves the interpreter's gradients (q for b1 params) in ``.grad``; the
  torch optimizers used by hand give net.train_step's bits; ``exact=False`` (float32 kernels)
  keeps the b1 weights of the interpreter over 20 steps on these models.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import boldc
from boldc.torch import Adam, BooleanOptimizer, Schedule, from_torch, to_torch
from boldc.torch.onnx_export import export

from trainutil import digits_mlp, digits_split, gradients, make_train_step, small_cnn, tiny_decoder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from torch_models import DigitsCNN  # noqa: E402

STEPS = 20
LOSS_TOL = 1e-5
STATE_RTOL = 1e-5
# Of the float32 state of the CNNs (a float first convolution), measured 99.4-99.9 % bit-identical.
EQUAL_FRACTION = 0.99
OPTIONS = {"eta": 10.0, "lr": 3e-3, "schedule": "cosine", "lr_schedule": "cosine", "total_steps": STEPS}


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def _bn_cnn():
    """examples/torch_models.DigitsCNN converted keeping BatchNorm (trained on batch statistics), random bits."""
    torch.manual_seed(0)
    return boldc.convert(export(DigitsCNN(), torch.zeros(1, 1, 8, 8)), keep_bn=True, init="random")


# name: (module, sample shape, input scale, every f32 value bit-identical, options)
MODELS = {
    "mlp": (lambda: digits_mlp(0), (64,), 1.0, True, {}),
    "cnn-xnor-false": (lambda: small_cnn("xnor", "false"), (1, 8, 8), 1.0, False, {}),
    "cnn-xor-neutral": (lambda: small_cnn("xor", "neutral"), (1, 8, 8), 1.0, False, {}),
    "cnn-batchnorm": (_bn_cnn, (1, 8, 8), 16.0, False, {"eta": 300.0}),  # BatchNorm: smaller signals
}


def _batches(shape, scale, steps, batch=64):
    xtr, _, ytr, _ = digits_split()
    x = xtr.reshape((-1,) + shape) * np.float32(scale)
    for step in range(steps):
        idx = np.random.default_rng(step).permutation(len(x))[:batch]
        yield x[idx], ytr[idx]


def _compare(ref: boldc.Module, net, step: int, bitwise: bool, rtol: float = STATE_RTOL) -> tuple[int, int]:
    """Asserts the net's state equals the interpreter's; returns (bit-identical f32 values, f32 values)."""
    got = from_torch(net, optimizer=True)
    same = total = 0
    for name, p in ref.params.items():
        a, b = p.data, got.params[name].data
        if not p.type.dtype.is_float:
            assert np.array_equal(a, b), (f"step {step}: @{name} differs at {np.argwhere(a != b)[0].tolist()} "
                                          f"({int((a != b).sum())} values)")
            continue
        equal = a.view(np.uint32) == b.view(np.uint32)
        same, total = same + int(equal.sum()), total + equal.size
        if bitwise:
            assert equal.all(), f"step {step}: @{name}: {int((~equal).sum())} values differ in their bits"
        scale = max(float(np.abs(a).max()), 1e-30)
        err = float(np.abs(a.astype(np.float64) - b).max())
        assert err <= rtol * scale, f"step {step}: @{name} differs by {err:.3g} (scale {scale:.3g})"
    return same, total


def _run_side_by_side(module, shape, scale, bitwise, steps=STEPS, rtol=STATE_RTOL, **options):
    net = to_torch(module, **options)
    ref = net.step_ir.copy()
    same = total = flips = 0
    for step, (x, y) in enumerate(_batches(shape, scale, steps)):
        before = {n: p.data.copy() for n, p in ref.params.items() if p.type.dtype.is_bool}
        want = float(boldc.interpret(ref, [x, y], "train_step"))
        got = net.train_step(x, y)
        assert abs(want - got) <= LOSS_TOL, f"step {step}: loss {got} vs the interpreter's {want}"
        if bitwise:
            assert np.float32(want).view(np.uint32) == np.float32(got).view(np.uint32), f"step {step}: loss bits"
        s, t = _compare(ref, net, step, bitwise, rtol)
        same, total = same + s, total + t
        flips += sum(int((ref.params[n].data != b).sum()) for n, b in before.items())
    return same / total, flips


@pytest.mark.parametrize("signal_bits", ["f32", "16"])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_twenty_steps_equal_the_interpreter(model, signal_bits):
    build, shape, scale, bitwise, extra = MODELS[model]
    fraction, flips = _run_side_by_side(build(), shape, scale, bitwise, signal_bits=signal_bits,
                                        **{**OPTIONS, **extra})
    assert flips > 100  # the Boolean optimizer flipped weights: the comparison tests it
    assert fraction >= EQUAL_FRACTION, f"only {100 * fraction:.3f} % of the float32 values are bit-identical"


VARIANTS = {
    "box": {"threshold_grad": "box"},
    "bireal-rescaled": {"threshold_grad": "bireal", "rescale": True},
    "i16-accumulator": {"accumulator": "i16"},
    "stochastic-16": {"signal_bits": "16", "rounding": "stochastic", "seed": 5},
    "log-4": {"signal_bits": "4", "rounding": "log"},
    "8-bit-frozen-float": {"signal_bits": "8", "freeze_float": True},
    "sum": {"reduction": "sum", "eta": 0.3},
    "poly": {"schedule": "poly", "lr_schedule": "poly", "power": 2.0, "eta_final": 1.0},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_options_equal_the_interpreter_bit_for_bit(variant):
    _run_side_by_side(digits_mlp(1), (64,), 1.0, True, steps=5, **{**OPTIONS, **VARIANTS[variant]})


def test_mse_loss_equals_the_interpreter():
    net = to_torch(digits_mlp(2), loss="mse", eta=1.0)
    ref = net.step_ir.copy()
    for step, (x, y) in enumerate(_batches((64,), 1.0, 3)):
        target = np.eye(10, dtype=np.float32)[y]
        assert float(boldc.interpret(ref, [x, target], "train_step")) == net.train_step(x, target)
        _compare(ref, net, step, True)


@pytest.mark.parametrize("signal_bits", ["f32", "16"])
def test_backward_leaves_the_weight_signals_in_grad(signal_bits):
    module = digits_mlp(3)
    net = to_torch(module, signal_bits=signal_bits)
    ref = make_train_step(module.copy(), f"signal-bits={signal_bits}")
    x, y = next(_batches((64,), 1.0, 1))
    loss, want = gradients(ref, [x, y])
    got = net.loss(net(x), y)
    got.backward()
    assert float(got.detach()) == loss
    assert set(want) == net.trained
    for name, g in want.items():
        grad = net.tensor(name).grad
        assert grad is not None and grad.dtype == torch.float32
        assert np.array_equal(grad.numpy().view(np.uint32), g.view(np.uint32)), f"@{name}"
    assert any(net.ir.params[n].type.dtype.is_bool for n in want)  # q of the Boolean layers among them


def test_torch_optimizers_by_hand_equal_train_step():
    """BooleanOptimizer, Adam and Schedule built by hand, used in a plain torch loop."""
    opts = {"eta": 10.0, "lr": 3e-3, "schedule": "cosine", "lr_schedule": "cosine", "total_steps": 8}
    reference, manual = to_torch(digits_mlp(4), **opts), to_torch(digits_mlp(4), **opts)
    flip = BooleanOptimizer(manual.boolean_parameters(), eta=10.0)
    adam = Adam(manual.float_parameters(), lr=3e-3)
    schedules = [Schedule(flip, "cosine", total_steps=8), Schedule(adam, "cosine", total_steps=8)]
    for x, y in _batches((64,), 1.0, 8):
        want = reference.train_step(x, y)
        flip.zero_grad()
        adam.zero_grad()
        loss = manual.loss(manual(x), y)
        loss.backward()
        flip.step()
        adam.step()
        for s in schedules:
            s.step()
        assert float(loss.detach()) == want
    for (name, a), (_, b) in zip(reference.ir_parameters(), manual.ir_parameters()):
        if name != reference.step_name:
            assert torch.equal(a, b), f"@{name}"
    state = flip.state_dict()["state"]
    assert state and all({"accumulator", "beta"} <= set(s) for s in state.values())
    ref_state = reference.make_optimizer().state_arrays()
    w = reference.boolean_parameters()[0]
    name = next(n for n, t in reference.ir_parameters() if t is w)
    assert np.array_equal(flip.state[manual.tensor(name)]["accumulator"].numpy(), ref_state[f"{name}.m"])


@pytest.mark.parametrize("model", ["mlp", "cnn-xnor-false"])
def test_float32_kernels_keep_the_interpreters_b1_weights(model):
    """Float32 sums move the float state by rounding (Adam's first steps divide tiny gradients by
    their own size): b1 weights identical, float state within 1 % of its scale."""
    build, shape, scale, _, extra = MODELS[model]
    fraction, flips = _run_side_by_side(build(), shape, scale, False, rtol=1e-2, exact=False, signal_bits="16",
                                        **{**OPTIONS, **extra})
    assert flips > 100 and fraction > 0  # many flips, all the same as the interpreter's


@pytest.mark.parametrize("signal_bits", ["f32", "16"])
def test_a_decoder_with_a_transposed_convolution_trains_like_the_interpreter(signal_bits):
    """tiny_decoder (float conv, Boolean conv, float conv_transpose2d, ReLU, pixel shuffle), mse:
    8 steps of to_torch against the interpreter (b1 weights identical, f32 state within 1e-5 of its
    scale: the float convolutions sum in the interpreter's BLAS order; measured 2.2e-7); Adam
    trains the transposed convolution's weights and bias."""
    rtol = STATE_RTOL
    module = tiny_decoder(0)
    net = to_torch(module, loss="mse", lr=1e-2, eta=30.0, total_steps=8, signal_bits=signal_bits)
    ref = net.step_ir.copy()
    rng = np.random.default_rng(7)
    for step in range(8):
        x = rng.standard_normal((6, 2, 4, 4)).astype(np.float32)
        y = rng.standard_normal((6, 2, 16, 16)).astype(np.float32)
        want = float(boldc.interpret(ref, [x, y], "train_step"))
        got = net.train_step(x, y)
        assert abs(want - got) <= rtol * abs(want), f"step {step}: loss {got} vs the interpreter's {want}"
        _compare(ref, net, step, bitwise=False, rtol=rtol)
    for name in ("up.w", "up.b"):
        assert not np.allclose(ref.params[name].data, module.params[name].data, atol=1e-4), f"@{name} not trained"
    assert (ref.params["c1.w"].data != module.params["c1.w"].data).any()
