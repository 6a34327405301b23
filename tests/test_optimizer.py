"""The Boolean optimizer (docs/method.md §4), Adam, schedules, and how updates run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import boldc
from boldc import FunctionBuilder, Module, tensor
from boldc.errors import BoldcError, VerifyError
from boldc.interp import run
from boldc.ops.optim_ops import schedule_value
from boldc.passes import PassManager

from opbuild import run_single
from trainutil import digits_mlp, make_train_step, roundtrip

T, F_ = True, False
RNG = np.random.default_rng(99)


def flip_update(w, m, beta, q, eta):
    """Run flip_update alone; returns (W, M, β) after the step."""
    mod = Module()
    ps = [mod.add_param(n, tensor(d, *a.shape), a) for n, d, a in
          (("w", "b1", w), ("m", "f32", m), ("beta", "f32", beta), ("q", "f32", q), ("eta", "f32", eta))]
    fb = FunctionBuilder(mod, "step", [])
    fb.op("flip_update", ps)
    fb.ret()
    boldc.interpret(mod, [], "step")
    return mod.params["w"].data, mod.params["m"].data, mod.params["beta"].data


def f32a(*values):
    return np.array(values, dtype=np.float32)


def test_flip_rule_hand_case():
    w = np.array([T, F_, T, F_])
    m = f32a(0.5, -0.5, 0.2, 0.9)
    q = f32a(2, -2, -1, 3)
    # M <- 0.5 M + 0.5 q = [1.25, -1.25, -0.4, 1.95]; flips where M e(W) >= 1: entries 0 and 1
    w2, m2, beta2 = flip_update(w, m, np.float32(0.5), q, np.float32(0.5))
    assert w2.tolist() == [F_, T, T, F_]
    assert m2.tolist() == pytest.approx([0.0, 0.0, -0.4, 1.95])
    assert m2[:2].tolist() == [0.0, 0.0]  # accumulator reset where flipped
    assert float(beta2) == 0.5  # 2 kept of 4


def test_flip_gate_is_inclusive_and_signed():
    w = np.array([T, T, F_, F_, T, F_])
    m = f32a(1.0, -1.0, -1.0, 1.0, 0.9999999, -5.0)
    w2, m2, beta2 = flip_update(w, m, np.float32(1), np.zeros(6, np.float32), np.float32(1))
    # M·e(W) = [1, -1, 1, -1, 0.9999999, 5]: flips exactly where >= 1
    assert w2.tolist() == [F_, T, T, F_, T, T]
    assert m2.tolist() == [0.0, -1.0, 0.0, 1.0, np.float32(0.9999999), 0.0]
    assert float(beta2) == np.float32(3 / 6)


def test_flip_update_is_f32_without_fused_multiply_add():
    m = RNG.normal(size=1000).astype(np.float32)
    q = RNG.normal(size=1000).astype(np.float32)
    beta, eta = np.float32(0.7), np.float32(3.3)
    _, m2, _ = flip_update(np.ones(1000, bool), m, beta, q, eta)
    want = (beta * m).astype(np.float32) + (eta * q).astype(np.float32)  # two roundings, then the add
    kept = want < 1
    assert np.array_equal(m2[kept], want[kept])


def test_beta_counts_kept_entries():
    w = np.zeros((3, 7), bool)
    m = np.full((3, 7), -2.0, np.float32)
    m[0, :3] = 0.0  # 3 entries stay
    _, _, beta = flip_update(w, m, np.float32(1), np.zeros((3, 7), np.float32), np.float32(1))
    assert beta.dtype == np.float32 and float(beta) == np.float32(3 / 21)


def test_schedules():
    assert schedule_value("constant", 12, 0, 50, 0, 1) == 12
    assert schedule_value("cosine", 12, 2, 0, 100, 1) == 12
    assert schedule_value("cosine", 12, 2, 50, 100, 1) == pytest.approx(7)
    assert schedule_value("cosine", 12, 2, 100, 100, 1) == pytest.approx(2)
    assert schedule_value("cosine", 12, 2, 250, 100, 1) == pytest.approx(2)  # clamped after T
    assert schedule_value("poly", 10, 0, 25, 100, 2) == pytest.approx(10 * 0.75 ** 2)
    got = run_single("lr_schedule", [], [np.array(30, np.int32)],
                     {"schedule": "cosine", "base": 1.0, "total_steps": 60})
    assert got.dtype == np.float32 and got.shape == () and float(got) == pytest.approx(0.5)


def test_schedule_needs_total_steps():
    m = make_train_step(digits_mlp(hidden=(8,)))
    with pytest.raises(BoldcError, match="schedule=cosine needs total-steps"):
        PassManager("insert-optimizer{schedule=cosine}").run(m)


def _bool_model(seed=0):
    """x -> threshold(linear) -> blinear -> threshold -> linear, small."""
    return digits_mlp(seed, hidden=(12, 10))


def test_train_step_applies_the_rule_to_each_b1_param():
    m = make_train_step(_bool_model(), "", "eta=7")
    x = RNG.random((16, 64)).astype(np.float32)
    y = RNG.integers(0, 10, 16).astype(np.int32)
    fn = m.function("train_step")
    flip_op = next(op for op in fn.ops if op.name == "flip_update")
    w, mm, beta = (p.data.copy() for p in flip_op.operands[:3])
    # a first step with M = 0 and β = 1 gives M = η q
    for step in range(3):
        env = run(m, fn, [x, y])
        q, eta = env[flip_op.operands[3]], env[flip_op.operands[4]]
        assert float(eta) == 7.0
        acc = (np.float32(beta) * mm).astype(np.float32) + (eta * q).astype(np.float32)
        flip = np.where(w, acc >= 1, acc <= -1)
        assert np.array_equal(m.params["fc1.w"].data, w ^ flip), f"step {step}"
        assert np.array_equal(m.params["fc1.w.m"].data, np.where(flip, 0, acc))
        assert float(m.params["fc1.w.beta"].data) == np.float32(1 - flip.mean())
        w, mm, beta = (p.data.copy() for p in flip_op.operands[:3])
    assert int(m.params["opt.step"].data) == 3


def test_optimizer_state_is_named_after_the_weights_and_printed():
    m = make_train_step(_bool_model(), "", "")
    text = boldc.dumps(m)
    for line in ("param @fc1.w.m : f32[10, 12]", "param @fc1.w.beta : f32[]", "param @fc0.w.adam_m : f32[12, 64]",
                 "param @fc0.b.adam_v : f32[12]", "param @opt.step : i32[]"):
        assert line in text
    ops = [op.name for op in m.function("train_step").ops]
    assert ops[-1] == "increment" and "param_grad" not in ops
    assert ops.count("flip_update") == 1 and ops.count("adam_update") == 4 and ops.count("lr_schedule") == 2
    back = roundtrip(m)
    assert [p for p in back.params] == [p for p in m.params]


def test_adam_matches_torch():
    m = Module()
    fb = FunctionBuilder(m, "forward", [("x", tensor("f32", "N", 5))])
    w0 = RNG.normal(size=(3, 5)).astype(np.float32)
    b0 = RNG.normal(size=3).astype(np.float32)
    w = m.add_param("w", tensor("f32", 3, 5), w0)
    b = m.add_param("b", tensor("f32", 3), b0)
    fb.ret(fb.op("linear", [fb.args[0], w, b]))
    make_train_step(m, "", "lr=0.01")
    tw = torch.tensor(w0, requires_grad=True)
    tb = torch.tensor(b0, requires_grad=True)
    opt = torch.optim.Adam([tw, tb], lr=0.01)
    for _ in range(4):
        x = RNG.normal(size=(8, 5)).astype(np.float32)
        y = RNG.integers(0, 3, 8).astype(np.int32)
        loss = boldc.interpret(m, [x, y], "train_step")
        opt.zero_grad()
        tloss = torch.nn.functional.cross_entropy(torch.tensor(x) @ tw.T + tb, torch.tensor(y, dtype=torch.long))
        tloss.backward()
        opt.step()
        assert float(loss) == pytest.approx(tloss.item(), rel=1e-5)
    np.testing.assert_allclose(m.params["w"].data, tw.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.params["b"].data, tb.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_frozen_params_in_insert_optimizer():
    m = make_train_step(_bool_model(), "", "frozen=[fc0.*]")
    fn = m.function("train_step")
    updated = [op.operands[0].name for op in fn.ops if op.name in ("flip_update", "adam_update")]
    assert updated == ["fc1.w", "fc2.w", "fc2.b"]
    assert "fc0.w.adam_m" not in m.params
    # the gradient ops only fc0 needed are gone
    names = {r.name for op in fn.ops for r in op.results}
    assert not names & {"d.fc0.w", "d.fc0.b", "d.a0", "d.h0"}
    before = m.params["fc0.w"].data.copy()
    boldc.interpret(m, [RNG.random((4, 64)).astype(np.float32), np.arange(4, dtype=np.int32)], "train_step")
    assert np.array_equal(m.params["fc0.w"].data, before)


def test_insert_optimizer_errors():
    m = digits_mlp(hidden=(8,))
    with pytest.raises(BoldcError, match="no function @train_step"):
        PassManager("insert-optimizer").run(m)
    m = make_train_step(m, "", "")
    with pytest.raises(BoldcError, match="already has optimizer updates"):
        PassManager("insert-optimizer").run(m)
    with pytest.raises(BoldcError, match="not one of"):
        PassManager("insert-optimizer{schedule=step}").run(make_train_step(digits_mlp(hidden=(8,))))
    # an i16 accumulator whose 32767 units stay below the flip threshold 1 (2^-15) could never
    # flip a weight; a step that is not a power of two is not exact
    for step in (2.0 ** -15, 0.3, 1.0):
        with pytest.raises(BoldcError, match=r"accumulator-step .* must be a power of two in \[2\^-14, 1/2\]"):
            PassManager(f"insert-optimizer{{accumulator=i16,accumulator-step={step}}}").run(
                make_train_step(digits_mlp(hidden=(8,))))
    PassManager(f"insert-optimizer{{accumulator=i16,accumulator-step={2.0 ** -14}}}").run(
        make_train_step(digits_mlp(hidden=(8,))))


# --- how updates run -----------------------------------------------------------------------


def test_updates_commit_when_the_step_returns():
    """Every op of a step reads the params as they were at its start, whatever the op order."""
    m = make_train_step(_bool_model(), "", "eta=50")
    x = RNG.random((16, 64)).astype(np.float32)
    y = RNG.integers(0, 10, 16).astype(np.int32)
    seen = []
    before = {n: p.data.copy() for n, p in m.params.items()}
    fn = m.function("train_step")

    def check(op, results):
        for o in op.operands:
            if isinstance(o, boldc.ir.core.Param):
                seen.append(np.array_equal(o.data, before[o.name]))

    run(m, fn, [x, y], on_op=check)
    assert seen and all(seen)
    assert not np.array_equal(m.params["fc0.w"].data, before["fc0.w"])


def test_commit_false_leaves_params_alone():
    m = make_train_step(_bool_model(), "", "eta=50")
    before = {n: p.data.copy() for n, p in m.params.items()}
    run(m, m.function("train_step"), [RNG.random((4, 64)).astype(np.float32), np.zeros(4, np.int32)],
        commit=False)
    assert all(np.array_equal(p.data, before[n]) for n, p in m.params.items())


def test_failing_step_changes_nothing():
    m = make_train_step(_bool_model(), "", "")
    before = {n: p.data.copy() for n, p in m.params.items()}
    with pytest.raises(BoldcError, match="label 10 is out of range"):
        boldc.interpret(m, [np.zeros((2, 64), np.float32), np.array([1, 10], np.int32)], "train_step")
    assert all(np.array_equal(p.data, before[n]) for n, p in m.params.items())


UPDATE_PARAMS = """bir 1
param @w : b1[1, 1, 2, 2]
param @m : f32[1, 1, 2, 2]
param @b : f32[]
param @q : f32[1, 1, 2, 2]
param @e : f32[]
"""


def test_verifier_rejects_reads_after_an_update():
    text = UPDATE_PARAMS + """func @step() -> b1[1, 1, 1, 1] {
  flip_update(@w, @m, @b, @q, @e)
  %y: b1[1, 1, 1, 1] = bmaxpool2d(@w) {kernel = [2, 2]}
  return %y
}
"""
    with pytest.raises(VerifyError, match="reads param @w after op 0 updated it"):
        boldc.parse(text)


def test_verifier_rejects_double_updates_and_values_as_targets():
    twice = UPDATE_PARAMS + """func @step() -> () {
  flip_update(@w, @m, @b, @q, @e)
  flip_update(@w, @m, @b, @q, @e)
  return
}
"""
    with pytest.raises(VerifyError, match="reads param @w after op 0 updated it"):
        boldc.parse(twice)
    value = UPDATE_PARAMS + """func @step(%v: b1[1, 1, 2, 2]) -> () {
  flip_update(%v, @m, @b, @q, @e)
  return
}
"""
    with pytest.raises(VerifyError, match="operand 0 %v is updated in place and must be a param"):
        boldc.parse(value)
    ok = UPDATE_PARAMS + """func @step() -> () {
  flip_update(@w, @m, @b, @q, @e)
  return
}
"""
    boldc.parse(ok)


def test_dce_keeps_updates():
    m = make_train_step(_bool_model(), "", "")
    n = len(m.function("train_step").ops)
    PassManager("dce").run(m)
    assert len(m.function("train_step").ops) == n


def test_step_counter_and_adam_bias_correction_use_the_old_step():
    m = make_train_step(_bool_model(), "", "schedule=cosine,total-steps=4,eta=8")
    x, y = RNG.random((4, 64)).astype(np.float32), np.arange(4, dtype=np.int32)
    etas = []
    fn = m.function("train_step")
    eta_value = next(op for op in fn.ops if op.name == "lr_schedule" and op.attrs["base"] == 8.0).results[0]
    for _ in range(6):
        etas.append(float(run(m, fn, [x, y])[eta_value]))
    want = [4 + 4 * math.cos(math.pi * min(t, 4) / 4) for t in range(6)]
    assert etas == pytest.approx(want)
    assert int(m.params["opt.step"].data) == 6
