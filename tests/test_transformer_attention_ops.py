"""The attention ops of issue 14 (matmul, embedding, equal, not, where and their gradients):
numpy semantics against numpy and torch, backward rules against finite differences and
torch autograd, type and input errors in the interpreter, the C and the torch engine, and
integer model inputs (token ids) end to end. The per-op C and torch comparisons are the
cases of tests/cases_transformer_attention.py (test_backend_ops.py, test_backend_train_ops.py,
test_torch_ops.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import boldc
from boldc import FunctionBuilder, Module, tensor
from boldc.errors import BoldcError, InterpretError
from boldc.ir.catalog import TypeCheck
from boldc.ops.registry import lookup

from backend_check import build_variant, float_close
from opbuild import single_op
from trainutil import assert_c_steps_match, assert_finite_differences, gradients, make_train_step, single_op_trainable

RNG = np.random.default_rng(1414)


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def infer(op, *types, **attrs):
    d = lookup(op)
    return d.infer(list(types), d.normalize_attrs(attrs))


# --- semantics ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (1, 4, 5)),
                                   ((2, 1, 3, 4), (5, 4, 2)), ((2, 3, 5, 4), (2, 3, 4, 5))])
def test_matmul_is_numpy_matmul_summed_in_k_order(sa, sb):
    a, b = f32(*sa), f32(*sb)
    m = boldc.parse(boldc.dumps(single_op("matmul", [a, b], batch_symbolic=False)))  # round-trips
    y = boldc.interpret(m, [a, b])
    want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    assert y.dtype == np.float32 and y.shape == want.shape
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    torch_y = torch.matmul(torch.from_numpy(a).double(), torch.from_numpy(b).double()).numpy()
    np.testing.assert_allclose(y, torch_y, rtol=1e-5, atol=1e-6)
    # the rule: one double sum per output, k ascending from 0.0, rounded once
    out = np.broadcast_shapes(sa[:-2], sb[:-2]) + (sa[-2], sb[-1])
    ab = np.broadcast_to(a, out[:-2] + sa[-2:]).astype(np.float64)
    bb = np.broadcast_to(b, out[:-2] + sb[-2:]).astype(np.float64)
    for idx in list(np.ndindex(out))[:40]:
        *lead, i, j = idx
        acc = 0.0
        for k in range(sa[-1]):
            acc = acc + ab[(*lead, i, k)] * bb[(*lead, k, j)]
        assert np.float32(acc) == y[idx]


def test_matmul_types_with_symbols_and_errors():
    assert infer("matmul", tensor("f32", "N", "L", 8), tensor("f32", 8, 5))[0] == tensor("f32", "N", "L", 5)
    assert infer("matmul", tensor("f32", "N", 4, "L", 8), tensor("f32", "N", 4, 8, "L"))[0] == \
        tensor("f32", "N", 4, "L", "L")
    assert infer("matmul", tensor("f32", "N", 1, 3, 8), tensor("f32", 4, 8, 2))[0] == tensor("f32", "N", 4, 3, 2)
    bad = [((tensor("f32", 8), tensor("f32", 8, 2)), "rank >= 2"),
           ((tensor("f32", 3, 8), tensor("f32", 7, 2)), "columns"),
           ((tensor("f32", 2, 3, 8), tensor("f32", 3, 8, 2)), "batch dims"),
           ((tensor("f32", "N", 3, 8), tensor("f32", "L", 8, 2)), "batch dims"),
           ((tensor("b1", 3, 8), tensor("f32", 8, 2)), "must be f32"),
           ((tensor("f32", 3, 8), tensor("i32", 8, 2)), "must be f32")]
    for types, message in bad:
        with pytest.raises(TypeCheck, match=message):
            infer("matmul", *types)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32])
def test_embedding_is_take_with_negative_ids(dtype):
    table = f32(9, 5)
    ids = RNG.integers(-9, 9, size=(3, 4, 2)).astype(dtype)
    y = lookup("embedding").evaluate([table, ids], {})[0]
    assert y.shape == (3, 4, 2, 5) and y.dtype == np.float32
    assert np.array_equal(y, np.take(table, ids.astype(np.int64), axis=0))
    assert np.array_equal(y, torch.nn.functional.embedding(torch.from_numpy(ids.astype(np.int64) % 9),
                                                           torch.from_numpy(table)).numpy())
    assert infer("embedding", tensor("f32", 9, 5), tensor("i32", "N", "L"))[0] == tensor("f32", "N", "L", 5)


def test_embedding_errors():
    for types, message in [((tensor("f32", 9, 5), tensor("f32", "N", 3)), "ids must be an integer"),
                           ((tensor("i32", 9, 5), tensor("i32", "N", 3)), "table must be f32"),
                           ((tensor("f32", 9), tensor("i32", "N", 3)), "rank 2")]:
        with pytest.raises(TypeCheck, match=message):
            infer("embedding", *types)
    with pytest.raises(BoldcError, match=r"embedding: id 9 is out of range for a table of 9 rows"):
        lookup("embedding").evaluate([f32(9, 5), np.array([[0, 9]], np.int32)], {})
    with pytest.raises(BoldcError, match=r"embedding: id -10 is out of range"):
        lookup("embedding").evaluate([f32(9, 5), np.array([[-10]], np.int32)], {})


def test_embedding_grad_adds_in_index_order():
    dy = f32(4, 6, 3)
    ids = RNG.integers(-5, 5, size=(4, 6)).astype(np.int32)
    got = lookup("embedding_grad").evaluate([dy, ids], {"rows": 5})[0]
    acc = np.zeros((5, 3))
    for i, k in enumerate(ids.reshape(-1)):
        acc[k % 5] = acc[k % 5] + dy.reshape(-1, 3)[i].astype(np.float64)
    assert np.array_equal(got, acc.astype(np.float32))
    with pytest.raises(TypeCheck, match=r"\[\*ids.shape, D\]"):
        infer("embedding_grad", tensor("f32", "N", 5, 3), tensor("i32", "N", 6), rows=5)


def test_masks_are_numpys():
    a = RNG.integers(-1, 2, size=(3, 1, 5)).astype(np.float32)
    b = RNG.integers(-1, 2, size=(4, 5)).astype(np.float32)
    eq = lookup("equal").evaluate([a, b], {})[0]
    assert eq.dtype == np.bool_ and np.array_equal(eq, a == b) and eq.any() and not eq.all()
    assert not lookup("equal").evaluate([np.array([np.nan], np.float32)] * 2, {})[0][0]
    bits = RNG.random((3, 70)) < 0.5
    assert np.array_equal(lookup("not").evaluate([bits], {})[0], ~bits)
    cond = RNG.random((3, 1, 5)) < 0.5
    x, y = f32(1, 4, 5), f32(3, 4, 1)
    w = lookup("where").evaluate([cond, x, y], {})[0]
    assert np.array_equal(w, np.where(cond, x, y)) and w.dtype == np.float32
    assert np.array_equal(w, torch.where(torch.from_numpy(cond), torch.from_numpy(x), torch.from_numpy(y)).numpy())
    assert infer("where", tensor("b1", "N", 1, 1, "L"), tensor("f32", "N", 4, "L", "L"), tensor("f32", 1))[0] == \
        tensor("f32", "N", 4, "L", "L")


def test_mask_type_errors():
    for op, types, message in [
            ("equal", (tensor("f32", "N", 3), tensor("i32", "N", 3)), "same element type"),
            ("equal", (tensor("b1", "N", 3), tensor("b1", "N", 3)), "must be an integer type or f32"),
            ("equal", (tensor("i32", "N", 3), tensor("i32", "N", 4)), "do not broadcast"),
            ("not", (tensor("f32", "N", 3),), "must be b1"),
            ("where", (tensor("f32", "N", 3), tensor("f32", "N", 3), tensor("f32", "N", 3)), "cond must be b1"),
            ("where", (tensor("b1", "N", 3), tensor("f32", "N", 3), tensor("i32", "N", 3)), "same element type"),
            ("where", (tensor("b1", "N", 2), tensor("f32", "N", 3), tensor("f32", "N", 3)), "do not broadcast")]:
        with pytest.raises(TypeCheck, match=message):
            infer(op, *types)


# --- backward rules -------------------------------------------------------------------------------


@pytest.mark.parametrize("sa,sb", [((2, 3, 4), (4, 5)), ((2, 3, 4), (1, 4, 2)), ((2, 1, 2, 3), (3, 3, 2))])
def test_matmul_backward_against_finite_differences(sa, sb):
    m = make_train_step(single_op_trainable("matmul", [f32(*sa), f32(*sb)]), "loss=mse,reduction=sum")
    target = f32(*np.broadcast_shapes(sa[:-2], sb[:-2]), sa[-2], sb[-1])
    grads = assert_finite_differences(m, target)
    assert set(grads) == {"p0", "p1"}


def test_where_backward_against_finite_differences():
    cond = RNG.random((2, 1, 4)) < 0.5
    m = make_train_step(single_op_trainable("where", [cond, f32(2, 3, 4), f32(1, 3, 1)]), "loss=mse,reduction=sum")
    grads = assert_finite_differences(m, f32(2, 3, 4))
    assert set(grads) == {"p1", "p2"}  # cond is not differentiable: not trained


def _torch_grads(fn, arrays):
    ts = [torch.from_numpy(a.astype(np.float64)).requires_grad_(True) for a in arrays]
    fn(*ts).backward()
    return [t.grad.numpy() for t in ts]


def test_matmul_and_embedding_backward_match_torch_autograd():
    a, b = f32(2, 3, 3, 4), f32(3, 4, 5)
    target = f32(2, 3, 3, 5)
    m = make_train_step(single_op_trainable("matmul", [a, b]), "loss=mse,reduction=sum")
    _, grads = gradients(m, [target])
    want = _torch_grads(lambda x, y: ((torch.matmul(x, y) - torch.from_numpy(target).double()) ** 2).sum(), [a, b])
    for name, w in zip(("p0", "p1"), want):
        np.testing.assert_allclose(grads[name], w, rtol=1e-5, atol=1e-5)

    table, ids = f32(7, 3), RNG.integers(-7, 7, size=(4, 5)).astype(np.int32)
    target = f32(4, 5, 3)
    m = make_train_step(single_op_trainable("embedding", [table, ids]), "loss=mse,reduction=sum")
    _, grads = gradients(m, [target])
    assert set(grads) == {"p0"}  # the ids are not differentiable
    want = _torch_grads(lambda t: ((torch.nn.functional.embedding(torch.from_numpy(ids.astype(np.int64) % 7), t)
                                    - torch.from_numpy(target).double()) ** 2).sum(), [table])[0]
    np.testing.assert_allclose(grads["p0"], want, rtol=1e-5, atol=1e-5)


def test_comparisons_pass_no_gradient():
    assert lookup("equal").nondiff_operands == ("a", "b")
    assert lookup("where").nondiff_operands == ("cond",)
    assert lookup("embedding").nondiff_operands == ("ids",)


# --- integer model inputs, end to end -------------------------------------------------------------

V, L, D = 11, 6, 8


def attention_model(seed: int = 0, length=L) -> Module:
    """@forward(ids: i32[N, L]) -> f32[N, 2]: an embedding, one attention head with a padding
    mask (id 0 is padding), a linear classifier on the flattened outputs."""
    rng = np.random.default_rng(seed)
    m = Module()
    fb = FunctionBuilder(m, "forward", [("ids", tensor("i32", "N", length))])

    def param(name, *shape, scale=0.5):
        return m.add_param(name, tensor("f32", *shape), (rng.standard_normal(shape) * scale).astype(np.float32))

    table = param("emb", V, D)
    zero = m.add_param("pad_id", tensor("i32", 1), np.zeros(1, np.int32))
    neg = m.add_param("neg", tensor("f32", 1), np.array([-30.0], np.float32))
    x = fb.op("embedding", [table, fb.args[0]], name="x")
    q, k, v = (fb.op("linear", [x, param(f"w{c}", D, D)], name=c) for c in "qkv")
    kt = fb.op("transpose", [k], {"perm": [0, 2, 1]}, name="kt")
    s = fb.op("matmul", [q, kt], name="s")
    pad = fb.op("equal", [fb.args[0], zero], name="pad")
    keep = fb.op("reshape", [fb.op("not", [pad], name="keep")], {"shape": ["N", 1, length]}, name="keep3")
    s = fb.op("where", [keep, s, neg], name="masked")
    att = fb.op("softmax", [s], {"axis": -1}, name="att")
    o = fb.op("matmul", [att, v], name="o")
    f = fb.op("flatten", [o], name="f")
    fb.ret(fb.op("linear", [f, param("head", 2, length * D, scale=0.1)], name="logits"))
    return m


def token_batch(rng, n, length=L):
    ids = rng.integers(0, V, size=(n, length)).astype(np.int64)  # numpy's default int: int64
    ids[:, -2:] = 0  # padding
    return ids


def test_integer_inputs_run_in_the_interpreter_c_and_torch():
    from boldc.torch import to_torch

    m = attention_model()
    ids = token_batch(np.random.default_rng(1), 5)
    want = boldc.interpret(m, [ids])
    assert want.shape == (5, 2) and np.isfinite(want).all()
    cm = build_variant(m, "simd", max_batch=8)
    got = cm.run("forward", [ids])[0]
    assert float_close(got, want)
    net = to_torch(m, train=False)
    assert float_close(net.infer(ids), want)
    # the same ids as int32, and given as a torch tensor
    assert np.array_equal(boldc.interpret(m, [ids.astype(np.int32)]), want)
    assert float_close(net(torch.from_numpy(ids)).detach().numpy(), want)


def test_integer_input_errors_in_every_engine():
    from boldc.torch import to_torch

    m = attention_model()
    cm = build_variant(m, "portable", max_batch=4)
    net = to_torch(m, train=False)
    engines = {"interpreter": lambda x: boldc.interpret(m, [x]), "C": lambda x: cm.run("forward", [x]),
               "torch": lambda x: net.infer(x)}
    good = token_batch(np.random.default_rng(2), 3)
    huge = good.copy()
    huge[1, 2] = 2**40
    out_of_range = good.copy()
    out_of_range[2, 1] = V
    negative = good.copy()
    negative[0, 0] = -V - 1
    for run in engines.values():
        with pytest.raises(InterpretError, match=r"input %ids of @forward is i32; values outside"):
            run(huge)
        with pytest.raises(InterpretError, match=r"is i32 and needs an integer array, got float"):
            run(good.astype(np.float32))
        for bad in (out_of_range, negative):
            with pytest.raises(BoldcError, match=r"out of range for the table of 11 rows|for a table of 11 rows"):
                run(bad)
    # a refused C call changed nothing: the next call gives the interpreter's values again
    assert float_close(cm.run("forward", [good])[0], boldc.interpret(m, [good]))
    with pytest.raises(BoldcError, match=r"embedding: id 11 is out of range for a table of 11 rows"):
        boldc.interpret(m, [out_of_range])


def test_computed_ids_out_of_range_never_read_outside_the_table_in_c():
    """Ids computed inside the function cannot be checked before the call: the C gives a NaN
    row for an out-of-range one (the interpreter refuses it) and never reads past the table."""
    m = Module()
    fb = FunctionBuilder(m, "forward", [("ids", tensor("i32", "N", 4))])
    table = m.add_param("emb", tensor("f32", 5, 3), f32(5, 3))
    doubled = fb.op("add", [fb.args[0], fb.args[0]], name="twice")
    fb.ret(fb.op("embedding", [table, doubled], name="y"))
    cm = build_variant(m, "portable", max_batch=4)
    ids = np.array([[0, 1, 2, -1], [3, 2**20, -(2**20), 1]], np.int32)  # 2·3 = 6 and ±2^21: out of range
    got = cm.run("forward", [ids])[0]
    ok = (2 * ids >= -5) & (2 * ids < 5)
    assert np.isnan(got[~ok]).all() and not np.isnan(got[ok]).any()
    want = boldc.interpret(m, [ids[:1]])
    assert np.array_equal(got[:1], want)
    with pytest.raises(BoldcError, match=r"embedding: id 6 is out of range"):
        boldc.interpret(m, [ids])


def test_a_symbolic_sequence_length_runs_in_the_interpreter_and_torch():
    from boldc.torch import to_torch

    m2 = Module()
    fb = FunctionBuilder(m2, "forward", [("ids", tensor("i32", "N", "L"))])
    table = m2.add_param("emb", tensor("f32", V, D), f32(V, D))
    x = fb.op("embedding", [table, fb.args[0]], name="x")
    s = fb.op("matmul", [x, fb.op("transpose", [x], {"perm": [0, 2, 1]}, name="xt")], name="s")
    fb.ret(fb.op("softmax", [s], {"axis": -1}, name="att"))
    net = to_torch(m2, train=False)
    for length in (3, 7):
        ids = token_batch(np.random.default_rng(length), 2, length)
        want = boldc.interpret(m2, [ids])
        assert want.shape == (2, length, length)
        assert float_close(net.infer(ids), want)


def test_attention_trains_in_c_as_in_the_interpreter():
    rng = np.random.default_rng(3)
    batches = [(token_batch(rng, 4), rng.integers(0, 2, size=4).astype(np.int64)) for _ in range(4)]
    m = attention_model()
    ref = assert_c_steps_match(m, batches, max_batch=4, variant="simd", lr=1e-2, total_steps=4)
    for name in ("emb", "wq", "wk", "wv", "head"):
        assert not np.allclose(ref.params[name].data, m.params[name].data), f"@{name} not trained"
    assert np.array_equal(ref.params["pad_id"].data, m.params["pad_id"].data)  # an i32 param: not trained


def test_attention_trains_on_torch_as_in_the_interpreter():
    from boldc.backend.training import TrainOptions, training_module
    from boldc.torch import to_torch

    rng = np.random.default_rng(4)
    m = attention_model()
    ref = training_module(m, TrainOptions.from_kwargs({"lr": 1e-2}))
    net = to_torch(m, lr=1e-2)
    for _ in range(2):
        ids, labels = token_batch(rng, 4), rng.integers(0, 2, size=4)
        want = float(boldc.interpret(ref, [ids, labels], "train_step"))
        assert net.train_step(ids, labels) == pytest.approx(want, rel=1e-6)
    for name in ("emb", "wq", "wk", "wv", "head", "neg"):
        assert np.array_equal(net.ir_array(name), ref.params[name].data), f"@{name} differs"
