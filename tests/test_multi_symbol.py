"""More than one symbolic dimension: the batch N and a sequence length L.

- The IR: text round trip, the verifier, the interpreter (L differs per call, symbols in any
  position, two inputs that disagree on L), the torch engine, autodiff.
- The pass bind-dims: types and shape-valued attributes substituted, the module verified,
  bad names and sizes refused.
- C: compiled with ``dims`` against the interpreter (inference and training steps), an unbound
  L refused with a one-line error, another L refused at run time.
- The energy model with ``dims`` / ``--dim``, and the command line (compile, train, eval).
"""

from __future__ import annotations

import numpy as np
import pytest

import boldc
from boldc import FunctionBuilder, Module, tensor
from boldc.backend.training import TrainOptions, training_module
from boldc.errors import BoldcError, InterpretError, VerifyError
from boldc.interp import interpret
from boldc.passes import PassManager
from boldc.passes.bind_dims import bind_dims, parse_dims

from backend_check import FLOAT_RTOL
from trainutil import assert_step_matches, make_train_step

# linear + add + softmax on the last axis + transpose, with a reshape through [N, L, 4, 16]
ATTENTION_LIKE = """bir 1

param @w : f32[64, 64]
param @b : f32[64]

func @forward(%x: f32[N, L, 64]) -> f32[N, 64, L] {
  %r: f32[N, L, 4, 16] = reshape(%x) {shape = ["N", "L", 4, 16]}
  %r2: f32[N, L, 64] = reshape(%r) {shape = ["N", "L", 64]}
  %a: f32[N, L, 64] = linear(%r2, @w, @b)
  %s: f32[N, L, 64] = add(%a, %x)
  %p: f32[N, L, 64] = softmax(%s) {axis = -1}
  %t: f32[N, 64, L] = transpose(%p) {perm = [0, 2, 1]}
  return %t
}
"""

# a token-wise classifier with a Boolean hidden layer: logits [N, C, L], labels [N, L]
TOKEN_CLASSIFIER = """bir 1

param @w0 : f32[16, 12]
param @w1 : b1[16, 16]
param @w2 : f32[5, 16]
param @b2 : f32[5]

func @forward(%x: f32[N, L, 12]) -> f32[N, 5, L] {
  %a: f32[N, L, 16] = linear(%x, @w0)
  %h: b1[N, L, 16] = threshold(%a)
  %s: i8[N, L, 16] = blinear(%h, @w1)
  %h2: b1[N, L, 16] = threshold(%s)
  %z: f32[N, L, 5] = linear(%h2, @w2, @b2)
  %t: f32[N, 5, L] = transpose(%z) {perm = [0, 2, 1]}
  return %t
}
"""

# two inputs sharing L; L first and N second in the arguments
TWO_INPUTS = """bir 1

func @forward(%x: f32[L, N, 8], %m: f32[N, L, 8]) -> f32[N, L, 8] {
  %t: f32[N, L, 8] = transpose(%x) {perm = [1, 0, 2]}
  %y: f32[N, L, 8] = add(%t, %m)
  return %y
}
"""


def _attention_like(seed: int = 0) -> boldc.Module:
    m = boldc.parse(ATTENTION_LIKE)
    rng = np.random.default_rng(seed)
    m.params["w"].set_data((rng.standard_normal((64, 64)) * 0.1).astype(np.float32))
    m.params["b"].set_data(rng.standard_normal(64).astype(np.float32))
    return m


def _token_classifier(seed: int = 0) -> boldc.Module:
    m = boldc.parse(TOKEN_CLASSIFIER)
    rng = np.random.default_rng(seed)
    m.params["w0"].set_data((rng.standard_normal((16, 12)) * 0.3).astype(np.float32))
    m.params["w1"].set_data(rng.random((16, 16)) > 0.5)
    m.params["w2"].set_data((rng.standard_normal((5, 16)) * 0.3).astype(np.float32))
    m.params["b2"].set_data(np.zeros(5, np.float32))
    return m


def _floats(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _close(got, want):
    err = np.abs(got.astype(np.float64) - want)
    assert np.all(err <= FLOAT_RTOL * (np.abs(want) + np.abs(want).max())), float(err.max())


# --- the IR --------------------------------------------------------------------------------------

def test_text_round_trip_keeps_both_symbols():
    m = boldc.parse(ATTENTION_LIKE)
    text = boldc.dumps(m)
    assert "%x: f32[N, L, 64]" in text and 'shape = ["N", "L", 4, 16]' in text
    assert boldc.dumps(boldc.parse(text)) == text
    fn = boldc.parse("bir 1\n\nfunc @f(%x: i32[N, L]) -> i32[N, L] {\n  return %x\n}\n").function("f")
    assert fn.args[0].type.shape == ("N", "L")
    assert boldc.dumps(boldc.parse(TWO_INPUTS)) == boldc.dumps(boldc.parse(boldc.dumps(boldc.parse(TWO_INPUTS))))


@pytest.mark.parametrize("change, message", [
    (("%s: f32[N, L, 64] = add(%a, %x)", "%s: f32[N, M, 64] = add(%a, %x)"), "declared f32[N, M, 64]"),
    (('shape = ["N", "L", 64]', 'shape = ["L", "N", 64]'), "is declared f32[N, L, 64] but the op gives f32[L, N, 64]"),
    (("%r2: f32[N, L, 64] = reshape(%r) {shape = [\"N\", \"L\", 64]}",
      "%r2: f32[N, M, 64] = reshape(%r) {shape = [\"N\", \"M\", 64]}"), "element counts differ"),
])
def test_verifier_tells_the_symbols_apart(change, message):
    with pytest.raises(VerifyError, match=message.replace("[", r"\[").replace("]", r"\]")):
        boldc.parse(ATTENTION_LIKE.replace(*change))


def test_add_of_two_symbols_is_refused():
    text = ("bir 1\n\nfunc @f(%x: f32[N, L, 8], %y: f32[N, M, 8]) -> f32[N, L, 8] {\n"
            "  %z: f32[N, L, 8] = add(%x, %y)\n  return %z\n}\n")
    with pytest.raises(VerifyError, match="'add'"):
        boldc.parse(text)


def test_interpreter_binds_l_per_call():
    m = _attention_like()
    rng = np.random.default_rng(1)
    for n, length in ((2, 5), (3, 7), (1, 1)):
        x = _floats(rng, n, length, 64)
        y = interpret(m, x)
        assert y.shape == (n, 64, length)
        s = x.reshape(n, length, 64) @ m.params["w"].data.T.astype(np.float64) + m.params["b"].data + x
        p = np.exp(s - s.max(-1, keepdims=True))
        want = (p / p.sum(-1, keepdims=True)).transpose(0, 2, 1)
        assert np.allclose(y, want, rtol=1e-5, atol=1e-6)


def test_interpreter_symbols_in_any_position_and_disagreeing_inputs():
    m = boldc.parse(TWO_INPUTS)
    rng = np.random.default_rng(2)
    x, mask = _floats(rng, 5, 3, 8), _floats(rng, 3, 5, 8)
    assert np.array_equal(interpret(m, [x, mask]), x.transpose(1, 0, 2) + mask)
    with pytest.raises(InterpretError, match="input %m of @forward: dimension L is 6 here but 5 elsewhere"):
        interpret(m, [x, _floats(rng, 3, 6, 8)])
    with pytest.raises(InterpretError, match="dimension N is 4 here but 3 elsewhere"):
        interpret(m, [x, _floats(rng, 4, 5, 8)])


def test_autodiff_with_n_and_l_in_the_interpreter():
    t = make_train_step(_token_classifier(), "", "")
    step = t.function("train_step")
    assert [str(a.type) for a in step.args] == ["f32[N, L, 12]", "i32[N, L]"]
    rng = np.random.default_rng(3)
    for n, length in ((4, 7), (3, 9)):
        loss = float(interpret(t, [_floats(rng, n, length, 12), rng.integers(0, 5, (n, length)).astype(np.int32)],
                               "train_step"))
        assert np.isfinite(loss) and loss > 0


# --- the torch engine ----------------------------------------------------------------------------

def test_torch_engine_binds_n_and_l():
    torch = pytest.importorskip("torch", reason="the torch engine needs torch")
    torch.set_num_threads(1)
    from boldc.torch import to_torch

    m = _attention_like()
    net = to_torch(m, train=False)
    rng = np.random.default_rng(4)
    for n, length in ((2, 5), (3, 8)):
        x = _floats(rng, n, length, 64)
        _close(net.infer(x), interpret(m, x))
    two = to_torch(boldc.parse(TWO_INPUTS), train=False)
    x, mask = _floats(rng, 5, 3, 8), _floats(rng, 3, 5, 8)
    assert np.array_equal(two.infer(x, mask), interpret(boldc.parse(TWO_INPUTS), [x, mask]))
    with pytest.raises(InterpretError, match="dimension L is 6 here but 5 elsewhere"):
        two.infer(x, _floats(rng, 3, 6, 8))


def test_torch_training_step_with_l_matches_the_interpreter():
    torch = pytest.importorskip("torch", reason="the torch engine needs torch")
    torch.set_num_threads(1)
    from boldc.torch import to_torch

    m = _token_classifier()
    ref = training_module(m, TrainOptions())
    net = to_torch(m, train=True)
    rng = np.random.default_rng(5)
    x, y = _floats(rng, 4, 6, 12), rng.integers(0, 5, (4, 6)).astype(np.int32)
    want = float(interpret(ref, [x, y], "train_step"))
    got = net.train_step(x, y)
    assert abs(got - want) <= 1e-5 * abs(want)
    assert np.array_equal(net.ir_array("w1"), ref.params["w1"].data)


# --- bind-dims -----------------------------------------------------------------------------------

def test_bind_dims_substitutes_types_and_shape_attributes():
    m = _attention_like()
    assert bind_dims(m, {"L": 6})
    fn = m.function("forward")
    assert str(fn.args[0].type) == "f32[N, 6, 64]"
    assert [str(r.type) for op in fn.ops for r in op.results] == [
        "f32[N, 6, 4, 16]", "f32[N, 6, 64]", "f32[N, 6, 64]", "f32[N, 6, 64]", "f32[N, 6, 64]", "f32[N, 64, 6]"]
    assert fn.ops[0].attrs["shape"] == ["N", 6, 4, 16] and fn.ops[1].attrs["shape"] == ["N", 6, 64]
    assert [str(t) for t in fn.declared_result_types()] == ["f32[N, 64, 6]"]
    boldc.verify(m)
    x = _floats(np.random.default_rng(6), 2, 6, 64)
    assert np.array_equal(interpret(m, x), interpret(_attention_like(), x))
    with pytest.raises(InterpretError, match=r"must be f32\[N, 6, 64\]"):
        interpret(m, x[:, :5])
    # N too: a fixed batch; the text round-trips
    assert bind_dims(m, {"N": 2})
    assert "%x: f32[2, 6, 64]" in boldc.dumps(m) and boldc.dumps(boldc.parse(boldc.dumps(m))) == boldc.dumps(m)


def test_bind_dims_as_a_pipeline_pass_and_expand_attributes():
    text = ("bir 1\n\nfunc @forward(%x: f32[N, 1, 8]) -> f32[N, L, 8] {\n"
            "  %y: f32[N, L, 8] = expand(%x) {shape = [\"N\", \"L\", 8]}\n  return %y\n}\n")
    m = boldc.parse(text)
    results = PassManager("bind-dims{dims=[L=3]}").run(m)
    assert results[0].modified
    op = m.function("forward").ops[0]
    assert op.attrs["shape"] == ["N", 3, 8] and str(op.results[0].type) == "f32[N, 3, 8]"


@pytest.mark.parametrize("dims, message", [
    ({"Q": 4}, "cannot bind Q: the module has no such symbolic dimension (its symbols: L, N)"),
    ({"L": 0}, "the size of L must be a positive integer, got 0"),
    ({"L": -3}, "the size of L must be a positive integer, got -3"),
    ({"L": 2.5}, "the size of L must be a positive integer, got 2.5"),
    ({"L": True}, "the size of L must be a positive integer, got True"),
    ({"4L": 2}, "'4L' is not a symbol name"),
])
def test_bind_dims_errors(dims, message):
    m = _attention_like()
    with pytest.raises(BoldcError, match=message.replace("(", r"\(").replace(")", r"\)")):
        bind_dims(m, dims)
    assert str(m.function("forward").args[0].type) == "f32[N, L, 64]"  # unchanged


@pytest.mark.parametrize("texts, message", [
    (["L"], "bad --dim 'L'"), (["L=x"], "bad --dim 'L=x'"), (["L=0"], "bad --dim 'L=0'"),
    (["L=4", "L=5"], "--dim L is given twice"),
])
def test_parse_dims_errors(texts, message):
    with pytest.raises(BoldcError, match=message):
        parse_dims(texts)
    assert parse_dims(["L=64", " N = 2"]) == {"L": 64, "N": 2}


# --- C -------------------------------------------------------------------------------------------

def test_c_refuses_an_unbound_l():
    with pytest.raises(BoldcError) as exc:
        boldc.compile(_attention_like())
    assert str(exc.value) == ("@forward keeps the symbolic dimension L: the C backend takes only the batch N as a "
                              "run-time size; bind it with boldc compile --dim L=SIZE (boldc.compile(..., "
                              "dims={'L': SIZE}))")
    from boldc.backend.emit import generate

    with pytest.raises(BoldcError, match="keeps the symbolic dimension L: the C backend takes only the batch N"):
        generate(_attention_like())


def test_c_with_l_bound_matches_the_interpreter():
    m = _attention_like()
    rng = np.random.default_rng(7)
    cm = boldc.compile(m, dims={"L": 5}, max_batch=4)
    for n in (1, 3, 9):  # 9: infer splits the batch
        x = _floats(rng, n, 5, 64)
        _close(cm.infer(x), interpret(m, x))
    with pytest.raises(InterpretError, match=r"input %x of @forward must be f32\[N, 5, 64\], got an array of shape "
                                             r"\[2, 6, 64\]"):
        cm.infer(_floats(rng, 2, 6, 64))
    assert str(m.function("forward").args[0].type) == "f32[N, L, 64]"  # the caller's module is not bound
    fixed = boldc.compile(m, dims={"L": 5, "N": 3})
    x = _floats(rng, 3, 5, 64)
    _close(fixed.infer(x), interpret(m, x))
    with pytest.raises(InterpretError, match=r"must be f32\[3, 5, 64\]"):
        fixed.infer(_floats(rng, 2, 5, 64))


def test_c_with_symbols_in_other_positions():
    m = boldc.parse(TWO_INPUTS)
    rng = np.random.default_rng(8)
    with pytest.raises(BoldcError, match="the batch symbol must be the first dimension"):
        boldc.compile(m, dims={"L": 5})  # N second in %x: not a run-time batch
    cm = boldc.compile(m, dims={"L": 5, "N": 3})
    x, mask = _floats(rng, 5, 3, 8), _floats(rng, 3, 5, 8)
    assert np.array_equal(cm.infer([x, mask]), interpret(m, [x, mask]))


BATCH_INSIDE = """bir 1

param @w : f32[16, 8]
param @wb : b1[6, 16]

func @forward(%x: f32[N, L, 8]) -> f32[N, L, 6] {
  %t: f32[L, N, 8] = transpose(%x) {perm = [1, 0, 2]}
  %a: f32[L, N, 16] = linear(%t, @w)
  %h: b1[L, N, 16] = threshold(%a)
  %s: i8[L, N, 6] = blinear(%h, @wb)
  %f: f32[L, N, 6] = cast(%s) {to = "f32"}
  %p: f32[L, N, 6] = softmax(%f) {axis = 2}
  %y: f32[N, L, 6] = transpose(%p) {perm = [1, 0, 2]}
  return %y
}
"""


@pytest.mark.parametrize("fuse", [True, False])
def test_c_with_the_run_time_batch_inside_intermediates(fuse):
    """After binding L, intermediates [5, N, D] hold the run-time batch in their second
    dimension: float, threshold and Boolean kernels size it with the call's n."""
    m = boldc.parse(BATCH_INSIDE)
    rng = np.random.default_rng(11)
    m.params["w"].set_data(_floats(rng, 16, 8))
    m.params["wb"].set_data(rng.random((6, 16)) > 0.5)
    cm = boldc.compile(m, dims={"L": 5}, max_batch=8, fuse=fuse)
    for n in (1, 3, 8, 11):
        x = _floats(rng, n, 5, 8)
        _close(cm.infer(x), interpret(m, x))


def test_c_training_steps_with_l_bound_match_the_interpreter():
    m = _token_classifier()
    opts = {"eta": 10.0, "lr": 3e-3, "total_steps": 5}
    ref = training_module(m, TrainOptions.from_kwargs(opts))
    cm = boldc.compile(m, train=True, dims={"L": 6}, max_batch=8, **opts)
    rng = np.random.default_rng(9)
    flips = 0
    for step in range(5):
        x, y = _floats(rng, 8, 6, 12), rng.integers(0, 5, (8, 6)).astype(np.int32)
        before = ref.params["w1"].data.copy()
        assert_step_matches(ref, cm, x, y, step)
        flips += int((ref.params["w1"].data != before).sum())
    assert flips > 0  # the Boolean optimizer was exercised
    with pytest.raises(InterpretError, match=r"must be f32\[N, 6, 12\]"):
        cm.train_step(_floats(rng, 8, 7, 12), rng.integers(0, 5, (8, 7)).astype(np.int32))


# --- energy --------------------------------------------------------------------------------------

def test_energy_binds_l_at_report_time():
    m = _token_classifier()
    with pytest.raises(BoldcError) as exc:
        boldc.energy(m)
    assert str(exc.value) == ("@forward keeps the symbolic dimension L: the energy model needs every size but the "
                              "batch N (--batch); bind it with boldc energy --dim L=SIZE (boldc.energy(..., "
                              "dims={'L': SIZE}))")
    r8 = boldc.energy(m, dims={"L": 8})
    r16 = boldc.energy(m, dims={"L": 16})
    assert r8.meta["dims"] == {"L": 8} and r8.meta["batch"] == 32
    # every op is per token: twice the tokens, about twice the energy (weights are read once)
    assert 1.5 < r16.total_pj / r8.total_pj <= 2.0
    assert boldc.energy(m, dims={"L": 8}, phase="training").total_pj > r8.total_pj
    fixed = boldc.energy(m, dims={"L": 8, "N": 16})
    assert fixed.meta["batch"] == 16
    with pytest.raises(BoldcError, match="cannot bind Q"):
        boldc.energy(m, dims={"L": 8, "Q": 2})


# --- the command line ----------------------------------------------------------------------------

def test_cli_compile_and_energy_take_dims(cli, tmp_path):
    model = tmp_path / "tok.bir"
    boldc.save(_token_classifier(), model)
    code, out, err = cli("compile", model, "-o", tmp_path / "c")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "keeps the symbolic dimension L" in err and "boldc compile --dim L=SIZE" in err
    code, out, err = cli("compile", model, "-o", tmp_path / "c", "--dim", "L=6")
    assert code == 0, err
    assert "f32[N, 6, 12]" in (tmp_path / "c" / "model.h").read_text() + (tmp_path / "c" / "README.txt").read_text()
    code, out, err = cli("compile", model, "-o", tmp_path / "c2", "--dim", "L=six")
    assert code == 2 and "bad --dim 'L=six'" in err
    code, out, err = cli("energy", model)
    assert code == 2 and "boldc energy --dim L=SIZE" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli("energy", model, "--dim", "L=8", "--format", "json")
    assert code == 0, err
    from boldc.energymodel import Report

    report = Report.from_json(out)
    assert report.meta["dims"] == {"L": 8}
    assert abs(report.total_pj - boldc.energy(_token_classifier(), dims={"L": 8}).total_pj) <= 1e-9 * report.total_pj


def test_cli_train_and_eval_bind_l_from_the_data(cli, tmp_path):
    model = tmp_path / "tok.bir"
    boldc.save(_token_classifier(), model)
    rng = np.random.default_rng(10)
    data = tmp_path / "d.npz"
    np.savez(data, x=_floats(rng, 24, 7, 12), y=rng.integers(0, 5, (24, 7)))
    out_model = tmp_path / "trained.bir"
    code, out, err = cli("train", model, "--data", data, "-o", out_model, "--epochs", "1", "--batch", "8")
    assert code == 0, err
    assert "binding L=7 from the shape of 'x'" in err
    assert "%x: f32[N, L, 12]" in out_model.read_text()  # the trained model keeps its symbol
    code, out, err = cli("eval", out_model, "--data", data)
    assert code == 0, err
    assert "binding L=7" in err and "on 24 samples" in out
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=_floats(rng, 4, 7, 12), y=rng.integers(0, 5, (4, 6)))
    code, out, err = cli("eval", out_model, "--data", bad)
    assert code == 2 and "'y' must be one label per sample and position" in err and "[N, 7]" in err


def test_slice_of_a_symbolic_dimension_is_checked_when_bound():
    """x[:, 0] on x [N, L, D]: the result is static; a bound L shorter than stop is an error."""
    m = Module()
    fb = FunctionBuilder(m, "forward", [("x", tensor("f32", "N", "L", 4))])
    y = fb.op("slice_axis", [fb.args[0]], {"axis": 1, "start": 1, "stop": 3})
    assert str(y.type) == "f32[N, 2, 4]"
    fb.ret(y)
    x = np.arange(2 * 5 * 4, dtype=np.float32).reshape(2, 5, 4)
    np.testing.assert_array_equal(boldc.interpret(m, [x]), x[:, 1:3])
    with pytest.raises(BoldcError, match=r"slice_axis \[1, 3\) is out of range for an axis of size 2"):
        boldc.interpret(m, [x[:, :2]])


def test_training_through_a_slice_of_a_symbolic_length_needs_it_bound():
    """x[:, 0] of x [N, L, 4] in a training step: autodiff (torch engine, or C without dims)
    refuses in one line naming L; with L bound the C step trains."""
    from boldc.ir.core import Param

    m = Module()
    m.params["u"] = Param("u", tensor("f32", 4, 4), np.eye(4, dtype=np.float32))
    m.params["w"] = Param("w", tensor("f32", 3, 4), np.full((3, 4), 0.1, np.float32))
    fb = FunctionBuilder(m, "forward", [("x", tensor("f32", "N", "L", 4))])
    h = fb.op("linear", [fb.args[0], m.params["u"]])  # trained: its gradient passes the slice
    cls = fb.op("reshape", [fb.op("slice_axis", [h], {"axis": 1, "start": 0, "stop": 1})], {"shape": ["N", 4]})
    fb.ret(fb.op("linear", [cls, m.params["w"]]))
    with pytest.raises(BoldcError, match="training through a slice of the symbolic dimension L .* needs a fixed L"):
        make_train_step(m.copy(), "loss=softmax_xent")
    cm = boldc.compile(m, train=True, dims={"L": 5}, max_batch=4)
    x = np.random.default_rng(0).standard_normal((4, 5, 4)).astype(np.float32)
    assert np.isfinite(cm.train_step(x, np.array([0, 1, 2, 0])))
