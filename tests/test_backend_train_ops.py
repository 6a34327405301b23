"""Generated C of the training ops against the interpreter, op by op (docs/training.md).

The gradient and loss ops (tests/train_cases.py) live in one module built per path
(SIMD, portable, portable popcount), traced and as shipped (the signal kernels work in
place there); every value is compared as in test_backend_ops.py: b1 and integers bit for bit, f32 within FLOAT_RTOL. The
optimizer updates, which write params instead of returning values, are compared on
the params after a call: the flip update bit for bit (weights, accumulator, beta),
Adam and the schedules within FLOAT_RTOL.
"""

from __future__ import annotations

import numpy as np
import pytest

import boldc
from boldc import FunctionBuilder, Module, tensor
from boldc.backend.emitters import EMITTERS
from boldc.ops.registry import all_ops
from boldc.ops.traits import Gradient, Loss, Optimizer

from backend_check import VARIANTS, build_variant, check_all, compile_variant, float_close
from opbuild import single_op
from train_cases import BATCH, TRAIN_CASES


@pytest.fixture(scope="module")
def cases_module():
    m = boldc.Module()
    for name, op, inputs, params, attrs in TRAIN_CASES:
        single_op(op, inputs, params, attrs, module=m, fname=name)
    return m


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def compiled(request, cases_module):
    return request.param, compile_variant(cases_module, request.param, max_batch=BATCH)


@pytest.mark.parametrize("case", range(len(TRAIN_CASES)), ids=[c[0] for c in TRAIN_CASES])
def test_train_op_matches_interpreter(case, compiled, cases_module):
    variant, builds = compiled
    name, _, inputs, _, _ = TRAIN_CASES[case]
    for batch in (1, BATCH):
        problems = check_all(cases_module, builds, name, [x[:batch] for x in inputs])
        assert not problems, f"[{variant}, batch {batch}] " + "; ".join(problems)


# --- optimizer updates ---------------------------------------------------------------------


def _optimizer_module(rng) -> Module:
    """@step(q0, q1, g0, g1) runs one update per param kind and shape, plus the
    schedules, reading and writing params."""
    m = Module()
    shapes = {"w0": (70, 130), "w1": (9, 5, 3, 3), "w2": (33,)}
    fb = FunctionBuilder(m, "step", [(f"q{k}", tensor("f32", *s)) for k, s in enumerate(shapes.values())]
                         + [("g0", tensor("f32", 40, 7)), ("g1", tensor("f32", 6, 3, 2, 2))])
    step = m.add_param("opt.step", tensor("i32"), np.array(3, np.int32))
    eta = fb.op("lr_schedule", [step], {"schedule": "cosine", "base": 3.0, "total_steps": 10, "final": 0.1},
                name="eta")
    lr = fb.op("lr_schedule", [step], {"schedule": "poly", "base": 1e-2, "total_steps": 7, "power": 2.0},
               name="lr")
    const = fb.op("lr_schedule", [step], {"base": 0.5}, name="const")
    for k, (name, shape) in enumerate(shapes.items()):
        w = m.add_param(name, tensor("b1", *shape), rng.random(shape) < 0.5)
        # accumulators near the gate, so that many weights flip and many stay
        acc = m.add_param(f"{name}.m", tensor("f32", *shape), (rng.standard_normal(shape) * 0.6).astype(np.float32))
        beta = m.add_param(f"{name}.beta", tensor("f32"), np.array(0.75 + 0.1 * k, np.float32))
        fb.op("flip_update", [w, acc, beta, fb.args[k], eta if k != 1 else const])
    for k, shape in enumerate([(40, 7), (6, 3, 2, 2)]):
        p = m.add_param(f"p{k}", tensor("f32", *shape), rng.standard_normal(shape).astype(np.float32))
        am = m.add_param(f"p{k}.adam_m", tensor("f32", *shape), (rng.standard_normal(shape) * 0.1).astype(np.float32))
        av = m.add_param(f"p{k}.adam_v", tensor("f32", *shape), (rng.random(shape) * 0.01).astype(np.float32))
        fb.op("adam_update", [p, am, av, fb.args[3 + k], lr, step], {"weight_decay": 0.01 * k})
    fb.op("increment", [step])
    fb.ret(eta, lr, const)
    return m


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_optimizer_updates_match_interpreter(variant):
    rng = np.random.default_rng(7)
    m = _optimizer_module(rng)
    ref = m.copy()
    cm = build_variant(m, variant, functions=["step"])
    fn = m.function("step")
    flips = 0
    for it in range(3):  # later calls start from the state the first ones left
        inputs = [(rng.standard_normal(a.type.shape) * 0.5).astype(np.float32) for a in fn.args]
        got = cm.run("step", inputs)
        want = boldc.interpret(ref, inputs, "step")
        assert len(got) == len(want) == 3, (len(got), len(want))
        for g, w in zip(got, want):
            assert g.dtype == np.float32 and float_close(g, w), (it, g, w)
        for name, p in ref.params.items():
            c = cm.get_param(name)
            if name.startswith("w") and not name.endswith(".m") and not name.endswith(".beta"):
                flips += int((c != m.params[name].data).sum()) if it == 0 else 0
            if p.type.dtype.is_bool or p.type.dtype.is_int or name.startswith("w"):
                # the Boolean optimizer (weights, M, beta) and the counter: bit for bit
                assert c.dtype == p.data.dtype and np.array_equal(c, p.data), f"call {it}: @{name} differs"
            else:
                assert float_close(c, p.data), f"call {it}: @{name} differs"
        assert int(ref.params["opt.step"].data) == 4 + it
    assert flips > 0


def test_flip_update_gate_is_inclusive_and_counts_beta():
    """M·e(W) == 1 exactly flips (the gate is >= 1); beta = kept / numel for the next step."""
    m = Module()
    fb = FunctionBuilder(m, "step", [("q", tensor("f32", 4))])
    w = m.add_param("w", tensor("b1", 4), np.array([True, False, True, False]))
    acc = m.add_param("w.m", tensor("f32", 4), np.zeros(4, np.float32))
    beta = m.add_param("w.beta", tensor("f32"), np.array(1.0, np.float32))
    step = m.add_param("opt.step", tensor("i32"), np.array(0, np.int32))
    eta = fb.op("lr_schedule", [step], {"base": 1.0})
    fb.op("flip_update", [w, acc, beta, fb.args[0], eta])
    fb.ret()
    cm = boldc.compile(m, functions=["step"])
    cm.run("step", [np.array([1.0, -1.0, 0.999, 1.0], np.float32)])
    assert cm.get_param("w").tolist() == [False, True, True, False]
    assert cm.get_param("w.m").tolist() == [0.0, 0.0, np.float32(0.999), 1.0]
    assert float(cm.get_param("w.beta")) == 0.5


def test_every_training_op_with_c_emission_has_a_case():
    covered = {op for _, op, *_ in TRAIN_CASES} | {"flip_update", "adam_update", "lr_schedule", "increment"}
    training = {name for name in EMITTERS if any(all_ops()[name].has(t) for t in (Gradient, Loss, Optimizer))}
    assert training <= covered, f"training ops with C emission but no case: {sorted(training - covered)}"


def test_single_op_cases_round_trip():
    """What the cases compile is also valid IR text."""
    m = single_op(*TRAIN_CASES[0][1:])
    boldc.verify(boldc.parse(boldc.dumps(m)))
