"""The torch engine's op implementations (boldc/torch/ops) against the reference interpreter.

- Every op of the registry has a torch implementation or a declared reason; every op of the
  supported models' @forward and of their backward rules has one; an op without one is an
  error naming it.
- Every op case of the C backend's tests (test_backend_ops.CASES, train_cases.TRAIN_CASES) run
  through ``to_torch`` gives the interpreter's bits, except where the interpreter's own order of
  summation is a BLAS's (the float convolutions: within float32 rounding) and integers beyond
  2^24 (which the engine holds in float32); with ``exact=False`` within float32 rounding.
- quantize_signal and the optimizer ops (flip_update with f32 and i16 accumulators, adam_update,
  lr_schedule) give the bits of their ``evaluate``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_backend_ops import CASES

import boldc
from boldc.errors import BoldcError
from boldc.ir.types import dtype_of_numpy, tensor
from boldc.ops import all_ops
from boldc.ops.registry import lookup
from boldc.torch import registry, to_torch
from boldc.torch.registry import OpCall, Runtime, implementation
from boldc.torch.values import to_tensor

from opbuild import single_op
from train_cases import TRAIN_CASES
from trainutil import digits_mlp, small_cnn

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
from train_digits_c import digits_cnn  # noqa: E402

# The interpreter computes these in float32 with a BLAS, whose order of summation is its own:
# the engine (float64, rounded once) agrees within float32 rounding of the result's scale.
BLAS_ORDER = {"conv2d", "mconv2d"}
F32_RTOL = 1e-6
F32_INTEGERS = 2**24  # integers beyond it are not exact in the engine's float32 carriers


def _beyond_f32(arrays) -> bool:
    """Whether an integer operand holds values beyond 2^24 (no pre-activation is that large)."""
    return any(a.dtype.kind in "iu" and a.size and int(np.abs(a.astype(np.int64)).max()) > F32_INTEGERS
               for a in map(np.asarray, arrays))


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)  # the machine is shared; results do not depend on it


def test_every_op_has_an_implementation_or_a_reason():
    missing = [name for name in all_ops() if not (callable(implementation(name)) or name in registry.NOT_IMPLEMENTED)]
    assert not missing, f"ops without a torch implementation or a declared reason: {missing}"


def _vgg_small() -> boldc.Module:
    from torch_models import VGGSmall

    from boldc.torch.onnx_export import export

    torch.manual_seed(0)
    return boldc.convert(export(VGGSmall(), torch.zeros(1, 3, 32, 32)))


SUPPORTED = {"digits MLP": lambda: digits_mlp(0), "digits CNN": lambda: digits_cnn(0),
             "small CNN (xor, neutral padding)": lambda: small_cnn("xor", "neutral"), "VGG-Small": _vgg_small}


@pytest.mark.parametrize("model", sorted(SUPPORTED))
@pytest.mark.parametrize("signal_bits", ["f32", "16"])
def test_supported_models_have_every_op(model, signal_bits):
    net = to_torch(SUPPORTED[model](), signal_bits=signal_bits)  # raises naming any op without an implementation
    forward = {n.op.name for n in net.nodes}
    backward = {g.name for n in net.nodes if n.plan for g in n.plan.ops} | {g.name for g in net.loss_node.plan.ops}
    assert forward and backward
    assert all(callable(implementation(name)) for name in forward | backward)
    if signal_bits == "16":
        assert "quantize_signal" in backward


def test_an_op_without_implementation_is_an_error_naming_it(monkeypatch):
    monkeypatch.delitem(registry.IMPLS, "bmaxpool2d")
    with pytest.raises(BoldcError, match=r"cannot run op 'bmaxpool2d' \(%p1\): the torch engine does not implement it"):
        to_torch(digits_cnn(0))
    monkeypatch.undo()
    monkeypatch.delitem(registry.IMPLS, "linear_grad_w")  # an op only a backward rule emits
    with pytest.raises(BoldcError, match=r"cannot run op 'linear_grad_w', which the backward rule of 'linear'"):
        to_torch(digits_mlp(0))
    to_torch(digits_mlp(0), train=False)  # inference needs no gradient op


def _compare(name, op, ref, got, exact=True, beyond_f32=False):
    if isinstance(ref, (tuple, list)):  # a multi-result op (quantize_signal, a fused op that keeps a part)
        assert isinstance(got, (tuple, list)) and len(got) == len(ref), f"{name}: {len(ref)} results expected"
        for i, (r, g) in enumerate(zip(ref, got)):
            _compare(f"{name}[{i}]", op, np.asarray(r), np.asarray(g), exact, beyond_f32)
        return
    assert ref.dtype == got.dtype and ref.shape == got.shape, \
        f"{name}: {got.dtype}{got.shape} vs {ref.dtype}{ref.shape}"
    if ref.dtype.kind != "f":
        assert np.array_equal(ref, got), f"{name}: {int((ref != got).sum())} of {ref.size} values differ"
        return
    nan = np.isnan(ref)  # a NaN has no one bit pattern: NaN where the interpreter has NaN
    assert np.array_equal(nan, np.isnan(got)), f"{name}: NaN at other places than the interpreter's"
    ref, got = np.where(nan, 0.0, ref).astype(np.float32), np.where(nan, 0.0, got).astype(np.float32)
    if exact and op not in BLAS_ORDER and not beyond_f32:
        same = np.array_equal(ref.view(np.uint32), got.view(np.uint32))
        assert same, f"{name}: {int((ref != got).sum())} of {ref.size} values differ in their bits"
        return
    finite = np.isfinite(ref)
    assert np.array_equal(ref[~finite], got[~finite]), f"{name}: infinities differ"
    ref, got = np.where(finite, ref, 0.0), np.where(finite, got, 0.0)
    scale = max(float(np.abs(ref).max()), 1e-30)
    err = float(np.abs(ref.astype(np.float64) - got).max())
    assert err <= F32_RTOL * scale * (1 if exact else 10), f"{name}: differs by {err:.3g} (scale {scale:.3g})"


ALL_CASES = CASES + TRAIN_CASES


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "float32"])
@pytest.mark.parametrize("case", range(len(ALL_CASES)), ids=[c[0] for c in ALL_CASES])
def test_op_matches_interpreter(case, exact):
    name, op, inputs, params, attrs = ALL_CASES[case]
    m = single_op(op, inputs, params, attrs)
    ref = boldc.interpret(m, inputs)
    got = to_torch(m, train=False, exact=exact).infer(*inputs)
    # a fused op sums in the order of its layer part
    parts = {part["op"] for part in (attrs or {}).get("body", ())}
    _compare(name, next(iter(parts & BLAS_ORDER), op), ref, got, exact, _beyond_f32([*inputs, *params]))


def _call(op: str, args, attrs=None, rt=None, state=()):
    """(evaluate's results, the torch implementation's) of ``op`` on ``args``; the positions
    ``state`` are optimizer state, which keeps its own dtype (an i16 accumulator)."""
    d = lookup(op)
    types = [tensor(dtype_of_numpy(a), *np.shape(a)) for a in args]
    tensors = [torch.from_numpy(np.array(a)) if i in state or not (t.rank or t.dtype.is_float) else
               to_tensor(a, t.dtype) for i, (a, t) in enumerate(zip(args, types))]
    attrs = d.normalize_attrs(attrs or {})
    return d.evaluate(list(args), attrs), implementation(op)(OpCall(op, attrs, types, [], rt or Runtime()), *tensors)


@pytest.mark.parametrize("bits,rounding", [(16, "nearest"), (8, "nearest"), (16, "stochastic"), (4, "log")])
def test_quantize_signal_matches(bits, rounding):
    rng = np.random.default_rng(bits)
    for z in (rng.standard_normal((6, 33)).astype(np.float32) * 1e-3, np.zeros((3, 4), np.float32),
              np.array([[np.inf, 1.0]], np.float32)):
        args = [z, np.array(7, np.int32)] if rounding == "stochastic" else [z]
        (q, scale), (tq, tscale) = _call("quantize_signal", args, {"bits": bits, "rounding": rounding, "seed": 3,
                                                                   "stream": 2})
        assert np.array_equal(q, tq.numpy().astype(q.dtype))
        assert np.array_equal(scale, tscale.numpy(), equal_nan=True)


@pytest.mark.parametrize("accumulator", ["f32", "i16"])
def test_flip_update_matches_bit_for_bit(accumulator):
    rng = np.random.default_rng(5)
    w = rng.random((40, 33)) < 0.5
    q = rng.standard_normal((40, 33)).astype(np.float32) * 0.3
    beta, eta = np.array(0.75, np.float32), np.array(3.0, np.float32)
    if accumulator == "i16":
        m = rng.integers(-1500, 1500, (40, 33)).astype(np.int16)
        m[0, :3] = 32767  # saturates
        args = [w, m, beta, q, eta, np.array(5, np.int32)]
    else:
        args = [w, (rng.standard_normal((40, 33)) * 0.6).astype(np.float32), beta, q, eta]
    ref, got = _call("flip_update", args, state=(1, 5))
    assert np.array_equal(ref[0], got[0].numpy() > 0)  # the flipped weights
    assert ref[0].sum() != w.sum() or (ref[0] != w).any()  # something flipped
    for r, g in zip(ref[1:], got[1:]):
        assert np.array_equal(r, g.numpy()) and r.dtype == g.numpy().dtype


def test_adam_update_and_schedules_match_bit_for_bit():
    rng = np.random.default_rng(6)
    p, m, g = (rng.standard_normal((9, 7)).astype(np.float32) for _ in range(3))
    v = np.abs(rng.standard_normal((9, 7))).astype(np.float32)
    ref, got = _call("adam_update", [p, m, v, g, np.array(1e-3, np.float32), np.array(4, np.int32)],
                     {"weight_decay": 0.01})
    for r, t in zip(ref, got):
        assert np.array_equal(r.view(np.uint32), t.numpy().view(np.uint32))
    for attrs in ({"schedule": "cosine", "base": 3.0, "total_steps": 10, "final": 0.1},
                  {"schedule": "poly", "base": 1e-3, "total_steps": 10, "power": 2.0}, {"base": 0.5}):
        for step in (0, 3, 10, 12):
            ref, got = _call("lr_schedule", [np.array(step, np.int32)], attrs)
            assert ref[0] == got[0].numpy()
