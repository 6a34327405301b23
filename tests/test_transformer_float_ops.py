"""The transformer's float ops: layernorm, erf, gelu, sub, div, reduce_sum,
reduce_mean and their gradient ops.

- numpy semantics against an independent computation (torch in float64 for layernorm, gelu
  and erf; numpy's own arithmetic for sub, div and the reductions);
- shapes with two symbols (N and L, in any position) through inference and the interpreter;
- every backward rule against central finite differences (test_autodiff's check), layernorm's
  and gelu's against torch autograd, and a train step over [N, L, D] inputs against autograd;
- bad input is a one-line error naming the op and what is wrong.
(The C backend and the torch engine against the interpreter: tests/cases_transformer_float.py's cases
in test_backend_ops.py, test_backend_train_ops.py and test_torch_ops.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_autodiff import finite_difference_check

import boldc
from boldc import FunctionBuilder, Module, tensor
from boldc.errors import BoldcError
from boldc.ir.catalog import TypeCheck
from boldc.ops.registry import lookup

from opbuild import run_single
from trainutil import gradients, make_train_step, roundtrip

RNG = np.random.default_rng(1414)


def f32(*shape, scale=1.0, offset=0.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale + offset).astype(np.float32)


def t64(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def evaluate(op: str, args, attrs=None) -> np.ndarray:
    d = lookup(op)
    return d.evaluate(list(args), d.normalize_attrs(attrs or {}))[0]


# --- numpy semantics ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,axis,bias", [((4, 5, 16), -1, True), ((3, 4, 6), 1, False), ((2, 3, 4, 5), 2, True),
                                             ((2, 3, 4, 5), -1, False), ((6, 7), 0, True)])
def test_layernorm_is_torch_layer_norm(shape, axis, bias):
    x = f32(*shape, scale=3.0, offset=2.0)
    row = shape[axis % len(shape):]
    scale, b = f32(*row), f32(*row)
    args = [x, scale] + ([b] if bias else [])
    attrs = {"axis": axis, "epsilon": 1e-4}
    # (through a function with a batch N, round-tripped; the axis-0 case normalizes the batch too)
    got = evaluate("layernorm", args, attrs) if axis == 0 else run_single("layernorm", [x], args[1:], attrs)
    want = F.layer_norm(t64(x), row, t64(scale), t64(b) if bias else None, eps=1e-4).float().numpy()
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_layernorm_rows_are_normalized_and_a_constant_row_gives_the_bias():
    x = f32(3, 5, 8, scale=10.0, offset=-100.0)
    x[1, 2] = 7.0  # a constant row: x - μ = 0 exactly
    ones, zeros = np.ones(8, np.float32), np.zeros(8, np.float32)
    y = evaluate("layernorm", [x, ones, zeros]).astype(np.float64)
    np.testing.assert_allclose(y.mean(axis=-1), 0.0, atol=1e-6)
    np.testing.assert_allclose(y.var(axis=-1)[np.arange(3) != 1], 1.0, rtol=1e-3)
    b = f32(8)
    assert np.array_equal(evaluate("layernorm", [x, ones, b])[1, 2], b)


@pytest.mark.parametrize("form", ["none", "tanh"])
def test_gelu_is_torch_gelu(form):
    x = np.concatenate([f32(200, scale=3.0), np.array([0.0, -0.0, 1e-30, -40.0, -9.0, 9.0, 40.0], np.float32)])
    got = evaluate("gelu", [x], {"approximate": form})
    want = F.gelu(t64(x), approximate=form).numpy()
    # (absolute below 1e-12: torch's double formula cancels in the far negative tail, ours does not)
    np.testing.assert_allclose(got, want.astype(np.float32), rtol=3e-7, atol=1e-12)


def test_gelu_tanh_form_keeps_its_relative_accuracy_in_the_negative_tail():
    """0.5·x·(1 + tanh u) for x in [-6, -2] (down to ~1e-8 of x) in extended precision: a
    reference in which 1 + tanh u keeps more than 24 bits where float64's would not."""
    x = np.linspace(-6.0, -2.0, 101).astype(np.float32)
    xl = x.astype(np.longdouble)
    u = np.sqrt(np.longdouble(2) / np.longdouble(np.pi)) * (xl + np.longdouble(0.044715) * xl ** 3)
    want = (np.longdouble(0.5) * xl * (1 + np.tanh(u))).astype(np.float64)
    np.testing.assert_allclose(evaluate("gelu", [x], {"approximate": "tanh"}), want, rtol=3e-7)


def test_erf_is_torch_erf():
    x = np.concatenate([f32(300, scale=2.0), np.array([0.0, -6.0, 6.0, np.inf, -np.inf], np.float32)])
    np.testing.assert_array_equal(evaluate("erf", [x]), torch.erf(t64(x)).float().numpy())


def test_sub_and_div_broadcast_with_numpy_rules():
    a, b = f32(2, 3, 4), f32(3, 1)
    np.testing.assert_array_equal(run_single("sub", [a], [b]), (a.astype(np.float64) - b).astype(np.float32))
    np.testing.assert_array_equal(run_single("div", [a], [b]), a / b)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = evaluate("div", [np.array([1.0, -1.0, 0.0], np.float32), np.zeros(3, np.float32)])
    assert q[0] == np.inf and q[1] == -np.inf and np.isnan(q[2])


@pytest.mark.parametrize("a_type,b_type,want", [("i8", "i8", "i16"), ("i16", "i8", "i32"), ("b1", "b1", "i16"),
                                                ("i32", "i32", "i32"), ("b1", "f32", "f32"), ("i16", "f32", "f32")])
def test_sub_has_the_element_types_of_add(a_type, b_type, want):
    sub, add = lookup("sub"), lookup("add")
    ta, tb = tensor(a_type, "N", 3), tensor(b_type, 3)
    assert str(sub.infer([ta, tb], {})[0]) == f"{want}[N, 3]" == str(add.infer([ta, tb], {})[0])


def test_sub_of_integers_is_exact_and_reads_bits_as_signs():
    a = np.array([-128, 127, 5], np.int8)
    got = evaluate("sub", [a, np.array([127, -128, 1], np.int8)])
    assert got.dtype == np.int16 and got.tolist() == [-255, 255, 4]
    bits = evaluate("sub", [np.array([True, False, True]), np.array([False, True, True])])
    assert bits.dtype == np.int16 and bits.tolist() == [2, -2, 0]
    assert evaluate("div", [np.array([True, False]), np.array([2.0, 4.0], np.float32)]).tolist() == [0.5, -0.25]


@pytest.mark.parametrize("op", ["reduce_sum", "reduce_mean"])
@pytest.mark.parametrize("axes,keepdims", [([-1], True), ([1], False), ([0, 2], True), ([3, 1], False),
                                           ([0, 1, 2, 3], False)])
def test_reductions_are_numpy_sums_and_means(op, axes, keepdims):
    x = f32(3, 4, 2, 5, offset=1.0)
    got = evaluate(op, [x], {"axes": axes, "keepdims": keepdims})
    fn = np.sum if op == "reduce_sum" else np.mean
    want = fn(x.astype(np.float64), axis=tuple(axes), keepdims=keepdims)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_reduce_sum_adds_in_row_major_order():
    """The documented order (from 0.0, position by position), not numpy's pairwise sum: a row
    where the two give different doubles."""
    row = np.array([1e8, 1.0, -1e8, 1e-8, 3.0, -1.0, 7e-9, 2.0, 1e8, -1e8] * 4, np.float32)
    want = 0.0
    for v in row.astype(np.float64):
        want = want + v
    assert evaluate("reduce_sum", [row[None]], {"axes": [1]})[0, 0] == np.float32(want)


# --- symbols N and L ------------------------------------------------------------------------------


def _encoder_block() -> Module:
    """@forward(x: f32[N, L, 8]) -> f32[N, 3]: a gain, layernorm, gelu, x - mean over L, / (1 + erf²),
    the mean and the sum over L, then a linear head (every new op on [N, L, D])."""
    m = Module()
    fb = FunctionBuilder(m, "forward", [("x", tensor("f32", "N", "L", 8))])
    scale = m.add_param("ln.scale", tensor("f32", 8), 1.0 + 0.1 * f32(8))
    bias = m.add_param("ln.bias", tensor("f32", 8), 0.1 * f32(8))
    w = m.add_param("head.w", tensor("f32", 3, 8), 0.3 * f32(3, 8))
    gain = m.add_param("in.gain", tensor("f32", 8), 1.0 + 0.2 * f32(8))
    h = fb.op("layernorm", [fb.op("mul", [fb.args[0], gain]), scale, bias])
    g = fb.op("gelu", [h], {"approximate": "tanh"})
    centered = fb.op("sub", [g, fb.op("reduce_mean", [g], {"axes": [1]})])
    e = fb.op("erf", [centered])
    q = fb.op("div", [centered, fb.op("add", [fb.op("mul", [e, e]), fb.op("exp", [fb.op("sub", [e, e])])])])
    pooled = fb.op("reduce_sum", [fb.op("gelu", [q]), ], {"axes": [1], "keepdims": False})
    fb.ret(fb.op("linear", [pooled, w]))
    return m


def test_types_keep_symbols_in_any_position():
    x = tensor("f32", "N", "L", 8)
    s = tensor("f32", 8)
    assert str(lookup("layernorm").infer([x, s, s], {"axis": -1, "epsilon": 1e-5})[0]) == "f32[N, L, 8]"
    assert str(lookup("reduce_mean").infer([x], {"axes": [1], "keepdims": False})[0]) == "f32[N, 8]"
    assert str(lookup("reduce_sum").infer([tensor("f32", 4, "L", "N")], {"axes": [0, 2], "keepdims": True})[0]) \
        == "f32[1, L, 1]"
    assert str(lookup("sub").infer([x, tensor("f32", "L", 1)], {})[0]) == "f32[N, L, 8]"
    assert str(lookup("div").infer([tensor("f32", "L", 1, 8), tensor("f32", "N", 8)], {})[0]) == "f32[L, N, 8]"
    grad = lookup("reduce_mean_grad").infer([tensor("f32", "N", 8)], {"axes": [1], "keepdims": False,
                                                                     "shape": ["N", "L", 8]})[0]
    assert str(grad) == "f32[N, L, 8]"
    with pytest.raises(TypeCheck, match="do not broadcast"):
        lookup("sub").infer([x, tensor("f32", "N", 8)], {})  # a symbol broadcasts only with itself or 1


def test_interpreter_binds_n_and_l_and_round_trips():
    m = _encoder_block()
    back = boldc.parse(boldc.dumps(m, weights=True))
    for n, length in ((2, 5), (3, 1), (1, 7)):
        x = f32(n, length, 8)
        y = boldc.interpret(back, [x])
        assert y.shape == (n, 3) and np.isfinite(y).all()
        np.testing.assert_array_equal(y, boldc.interpret(m, [x]))


def test_train_step_over_n_and_l_matches_torch_autograd():
    """autodiff through every new op on [N, L, D] (symbolic N and L): the gradients of the
    params equal torch autograd's of the same function in float64."""
    m = roundtrip(make_train_step(_encoder_block(), "loss=mse,reduction=sum"))  # symbols in shape attributes
    x, target = f32(2, 5, 8), f32(2, 3)
    loss, grads = gradients(m, [x, target])
    p = {name: t64(m.params[name].data).requires_grad_() for name in ("in.gain", "ln.scale", "ln.bias", "head.w")}
    h = F.layer_norm(t64(x) * p["in.gain"], (8,), p["ln.scale"], p["ln.bias"], eps=1e-5)
    g = F.gelu(h, approximate="tanh")
    centered = g - g.mean(dim=1, keepdim=True)
    e = torch.erf(centered)
    q = centered / (e * e + torch.exp(e - e))
    y = F.gelu(q).sum(dim=1) @ p["head.w"].t()
    want_loss = ((y - t64(target)) ** 2).sum()
    want_loss.backward()
    assert loss == pytest.approx(want_loss.item(), rel=1e-5)
    for name, t in p.items():
        np.testing.assert_allclose(grads[name], t.grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    assert {"layernorm_grad_x", "layernorm_grad_scale", "gelu_grad", "erf_grad", "sub_grad_b", "div_grad_b",
            "reduce_mean_grad", "expand"} <= {op.name for op in m.function("train_step").ops}


def _train_batches(steps: int, length: int):
    return [(f32(4, length, 8), f32(4, 3)) for _ in range(steps)]


def test_c_and_torch_train_the_block_as_the_interpreter():
    """Inference and 20 training steps (mse, Adam) of the block through the generated C (L bound
    at compile time) and the torch engine (N and L bound from the inputs), from the same state
    on the same batches: the interpreter's loss and float params after every step, within
    FLOAT_RTOL (measured: the same bits)."""
    from boldc.backend.training import TrainOptions, training_module
    from boldc.torch import to_torch

    from backend_check import FLOAT_RTOL, build_variant

    m = _encoder_block()
    x = f32(3, 5, 8)
    cm = build_variant(m, "simd", max_batch=4, dims={"L": 5})
    np.testing.assert_allclose(cm.infer(x), boldc.interpret(m, [x]), rtol=FLOAT_RTOL, atol=FLOAT_RTOL)
    ref = training_module(m, TrainOptions.from_kwargs({"loss": "mse"}))
    cm = build_variant(m, "simd", train=True, max_batch=4, loss="mse", dims={"L": 5})
    net = to_torch(m, loss="mse")
    for step, (xb, yb) in enumerate(_train_batches(20, 5)):
        want = float(boldc.interpret(ref, [xb, yb], "train_step"))
        for engine, got in (("C", cm.train_step(xb, yb)), ("torch", net.train_step(xb, yb))):
            assert got == pytest.approx(want, rel=FLOAT_RTOL), f"{engine}, step {step}: loss {got} vs {want}"
        for name, prm in ref.params.items():
            if prm.type.dtype.is_float and name in m.params:
                scale = float(np.abs(prm.data).max())
                for engine, got in (("C", cm.get_param(name)), ("torch", net.ir_array(name))):
                    err = float(np.abs(got.astype(np.float64) - prm.data).max())
                    assert err <= FLOAT_RTOL * scale, f"{engine}, step {step}: @{name} differs by {err:.3g}"


# --- backward rules -------------------------------------------------------------------------------


FD_CASES = [
    ("layernorm", [f32(3, 6, scale=2.0), f32(6), f32(6)], {}),
    ("layernorm", [f32(2, 3, 4), f32(3, 4)], {"axis": 1}),
    ("layernorm", [f32(2, 2, 3, 3), f32(3), f32(3)], {"axis": -1, "epsilon": 1e-3}),
    ("layernorm", [f32(2, 5), f32(2, 5), f32(2, 5)], {"axis": 0}),
    ("gelu", [f32(3, 5, scale=2.0)], {}),
    ("gelu", [f32(2, 3, 4, scale=2.0)], {"approximate": "tanh"}),
    ("erf", [f32(3, 5)], {}),
    ("sub", [f32(2, 3, 4), f32(3, 1)], {}),
    ("sub", [f32(4), f32(2, 3, 4)], {}),
    ("div", [f32(2, 3, 4), 1.5 + np.abs(f32(3, 1))], {}),
    ("div", [f32(4, 1), 1.5 + np.abs(f32(2, 4, 3))], {}),
    ("reduce_sum", [f32(2, 3, 4)], {"axes": [1]}),
    ("reduce_sum", [f32(2, 3, 4)], {"axes": [0, 2], "keepdims": False}),
    ("reduce_mean", [f32(2, 3, 4)], {"axes": [-1]}),
    ("reduce_mean", [f32(2, 3, 2, 2)], {"axes": [1, 3], "keepdims": False}),
]


@pytest.mark.parametrize("op_name, params, attrs", FD_CASES, ids=[c[0] for c in FD_CASES])
def test_backward_matches_finite_differences(op_name, params, attrs):
    finite_difference_check(op_name, params, attrs)


@pytest.mark.parametrize("shape,axis", [((4, 6, 16), -1), ((3, 4, 5), 1), ((2, 3, 4, 5), 2), ((5, 7), 0)])
def test_layernorm_gradients_match_torch_autograd(shape, axis):
    x, dy = f32(*shape, scale=2.0, offset=1.0), f32(*shape)
    row = shape[axis % len(shape):]
    scale, bias = f32(*row), f32(*row)
    attrs = {"axis": axis, "epsilon": 1e-5}
    tx, ts, tb = (t64(v).requires_grad_() for v in (x, scale, bias))
    (F.layer_norm(tx, row, ts, tb, eps=1e-5) * t64(dy)).sum().backward()
    np.testing.assert_allclose(evaluate("layernorm_grad_x", [dy, x, scale], attrs), tx.grad.numpy(),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(evaluate("layernorm_grad_scale", [dy, x], attrs), ts.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(evaluate("sum_to", [dy], {"shape": list(row)}), tb.grad.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", ["none", "tanh"])
def test_gelu_and_erf_gradients_match_torch_autograd(form):
    x = np.concatenate([f32(300, scale=3.0), np.array([0.0, -0.7518, -12.0, 12.0, -40.0], np.float32)])
    dy = f32(*x.shape)
    tx = t64(x).requires_grad_()
    (F.gelu(tx, approximate=form) * t64(dy)).sum().backward()
    np.testing.assert_allclose(evaluate("gelu_grad", [dy, x], {"approximate": form}), tx.grad.numpy(),
                               rtol=1e-6, atol=1e-7)
    tx = t64(x).requires_grad_()
    (torch.erf(tx) * t64(dy)).sum().backward()
    np.testing.assert_allclose(evaluate("erf_grad", [dy, x]), tx.grad.numpy(), rtol=1e-6, atol=1e-7)


def test_reduce_mean_grad_spreads_the_signal_evenly():
    dy = f32(2, 3)
    got = evaluate("reduce_mean_grad", [dy], {"axes": [1], "keepdims": False, "shape": [2, 4, 3]})
    np.testing.assert_array_equal(got, np.broadcast_to((dy.astype(np.float64) / 4)[:, None], (2, 4, 3))
                                  .astype(np.float32))


# --- bad input ------------------------------------------------------------------------------------


def _function(op: str, operand_types, attrs=None):
    m = Module()
    fb = FunctionBuilder(m, "forward", [(f"x{i}", t) for i, t in enumerate(operand_types)])
    return fb.op(op, list(fb.args), attrs or {})


BAD = [
    ("layernorm", [tensor("f32", "N", "L", 8), tensor("f32", 7)], {}, r"scale must have shape \[8\] \(the dims of the "
     r"input f32\[N, L, 8\] from axis 2\), got f32\[7\]"),
    ("layernorm", [tensor("f32", "N", 4, 8), tensor("f32", 8)], {"axis": 1}, r"scale must have shape \[4, 8\]"),
    ("layernorm", [tensor("f32", "N", 8), tensor("f32", 8), tensor("f32", 1, 8)], {}, r"bias must have shape \[8\]"),
    ("layernorm", [tensor("f32", "N", 8), tensor("f32", 8)], {"axis": 2}, r"axis 2 out of range for input f32\[N, 8\]"),
    ("layernorm", [tensor("i8", "N", 8), tensor("f32", 8)], {}, r"input must be f32, got i8\[N, 8\]"),
    ("layernorm", [tensor("f32", "N", 8), tensor("b1", 8)], {}, r"scale must be f32, got b1\[8\]"),
    ("gelu", [tensor("i16", "N", 8)], {}, r"input must be f32, got i16\[N, 8\]"),
    ("gelu", [tensor("f32", "N", 8)], {"approximate": "sigmoid"}, r"'approximate' = 'sigmoid' is not one of 'none'"),
    ("erf", [tensor("b1", "N", 8)], {}, r"input must be f32, got b1\[N, 8\]"),
    ("sub", [tensor("f32", "N", 3), tensor("f32", 4)], {}, r"shapes f32\[N, 3\] and f32\[4\] do not broadcast"),
    ("div", [tensor("f32", "N", "L"), tensor("f32", "L", "N")], {}, r"do not broadcast"),
    ("reduce_sum", [tensor("f32", "N", 8)], {"axes": [2]}, r"axes \[2\] out of range for rank 2"),
    ("reduce_mean", [tensor("f32", "N", 8)], {"axes": [1, -1]}, r"axes \[1, -1\] name an axis twice"),
    ("reduce_mean", [tensor("f32", "N", 8)], {"axes": []}, r"axes must name at least one axis"),
    ("reduce_sum", [tensor("i32", "N", 8)], {"axes": [1]}, r"input must be f32, got i32\[N, 8\]"),
    ("reduce_mean", [tensor("f32", "N", 8)], {}, r"missing required attribute 'axes'"),
    ("reduce_mean_grad", [tensor("f32", "N", 8)], {"axes": [1], "shape": ["N", 8]},
     r"signal f32\[N, 8\] is not the mean of \['N', 8\] over axes \[1\] \(want \[N, 1\]\)"),
    ("layernorm_grad_scale", [tensor("f32", "N", 8), tensor("f32", "N", 9)], {}, r"signal and input: shapes"),
    ("div_grad_b", [tensor("f32", "N", 8), tensor("f32", "N", 8), tensor("f32", 3)], {}, r"do not broadcast"),
]


@pytest.mark.parametrize("op,types,attrs,message", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_is_a_type_check_naming_it(op, types, attrs, message):
    with pytest.raises(TypeCheck, match=message) as err:
        _function(op, types, attrs)
    assert "\n" not in str(err.value) and f"op '{op}'" in str(err.value)


def test_bad_layernorm_in_a_file_is_one_line_naming_the_node():
    text = """bir 1
param @s : f32[4]
func @forward(%x: f32[N, L, 8]) -> f32[N, L, 8] {
  %h: f32[N, L, 8] = layernorm(%x, @s) {axis = -1}
  return %h
}
"""
    with pytest.raises(BoldcError, match=r"<string>:4:\d+: error: op 'layernorm' \(%h\): scale must have shape \[8\]"):
        boldc.parse(text)
