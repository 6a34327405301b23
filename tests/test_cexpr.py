"""The expression layer of the C backend (boldc/backend/cexpr.py, cblock.py).

Every case builds an index expression with the layer (which simplifies as it builds),
then checks (1) the printed C, so that the simplification under test did, or did not,
fire, and (2) the value, over a grid of the variables' values inside their ranges, against
Python's evaluation of the unsimplified expression with C semantics (``cdiv``/``cmod``
below, written here independently of the module). A C compiler evaluates the printed
text on the same grid (``test_printed_c_computes_the_same_values``), so the parentheses
are checked too.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess

import pytest

from boldc.backend.cblock import Block
from boldc.backend.cexpr import Const, Var, div, inside, mod, product
from boldc.backend.layout import Layout
from boldc.ir.types import DType


def cdiv(a: int, b: int) -> int:
    """C's integer division: truncation toward zero (floor, corrected when inexact and negative)."""
    q = a // b
    return q + 1 if q < 0 and q * b != a else q


def cmod(a: int, b: int) -> int:
    return a - cdiv(a, b) * b


def grid(*variables: Var, cap: int = 40):
    """Every combination of values of the variables (an unbounded side stops ``cap`` away)."""
    spans = [range(v.lo if v.lo is not None else -cap, (v.hi if v.hi is not None else cap) + 1) for v in variables]
    for values in itertools.product(*spans):
        yield {v.name: x for v, x in zip(variables, values)}


a03 = Var("a", 0, 3)          # a >= 0
a_neg = Var("a", -3, 3)       # a may be negative
a13 = Var("a", 1, 3)          # a*4 + b >= 0 even for b = -1
b_lt4 = Var("b", 0, 3)        # 0 <= b < 4
b_le4 = Var("b", 0, 4)        # b may equal 4
b_neg = Var("b", -1, 2)       # b may be negative
x20 = Var("x", 0, 20)
x_pm = Var("x", -20, 20)
n = Var("n", 0, None)
i0 = Var("i0", 0, None)
w = Var("w", 0, 3)
bit = Var("k", 0, 63)
oh = Var("oh", 0, 3)
tap = Var("i", 0, 1)

# (id, variables, simplified expression, unsimplified reference, printed C)
CASES = [
    # constant folding, in C semantics
    ("fold-add", [], Const(7) + 5, lambda e: 12, "12"),
    ("fold-div-negative", [], div(-7, 2), lambda e: cdiv(-7, 2), "-3"),
    ("fold-mod-negative", [], mod(-7, 2), lambda e: cmod(-7, 2), "-1"),
    ("fold-mod-negative-divisor", [], mod(7, -2), lambda e: cmod(7, -2), "1"),
    ("fold-product", [n], product(2, n, 3), lambda e: 2 * e["n"] * 3, "n*6"),
    # identities
    ("x*1", [x_pm], x_pm * 1, lambda e: e["x"] * 1, "x"),
    ("x+0", [x_pm], x_pm + 0, lambda e: e["x"] + 0, "x"),
    ("x*0", [x_pm], x_pm * 0, lambda e: e["x"] * 0, "0"),
    ("x/1", [x_pm], div(x_pm, 1), lambda e: cdiv(e["x"], 1), "x"),
    ("x%1", [x_pm], mod(x_pm, 1), lambda e: cmod(e["x"], 1), "0"),
    ("x-x", [x_pm], x_pm - x_pm, lambda e: 0, "0"),
    # linear forms: like terms merge, constants distribute
    ("distribute", [i0, oh, w], (i0 * 8 + oh) * 8 + w, lambda e: (e["i0"] * 8 + e["oh"]) * 8 + e["w"],
     "i0*64 + oh*8 + w"),
    ("pool-tap", [oh, tap], oh * 2 - 0 + tap * 1, lambda e: e["oh"] * 2 - 0 + e["i"] * 1, "oh*2 + i"),
    ("negative-terms", [oh, tap], tap - oh * 2 - 1, lambda e: e["i"] - e["oh"] * 2 - 1, "i - oh*2 - 1"),
    # (a*K + b) / K -> a and (a*K + b) % K -> b, when a >= 0 and 0 <= b < K
    ("(aK+b)/K", [a03, b_lt4], div(a03 * 4 + b_lt4, 4), lambda e: cdiv(e["a"] * 4 + e["b"], 4), "a"),
    ("(aK+b)%K", [a03, b_lt4], mod(a03 * 4 + b_lt4, 4), lambda e: cmod(e["a"] * 4 + e["b"], 4), "b"),
    ("(aK+b+1)/K", [a03, b_lt4], div(a03 * 4 + b_lt4 + 1, 4), lambda e: cdiv(e["a"] * 4 + e["b"] + 1, 4),
     "a + (b + 1) / 4"),
    # ... not when b may reach K: the quotient keeps b / K, the remainder b % K
    ("(aK+b)/K b<=K", [a03, b_le4], div(a03 * 4 + b_le4, 4), lambda e: cdiv(e["a"] * 4 + e["b"], 4), "a + b / 4"),
    ("(aK+b)%K b<=K", [a03, b_le4], mod(a03 * 4 + b_le4, 4), lambda e: cmod(e["a"] * 4 + e["b"], 4), "b % 4"),
    # ... nor when a may be negative (truncation is not floor there) ...
    ("(aK+b)/K a<0", [a_neg, b_lt4], div(a_neg * 4 + b_lt4, 4), lambda e: cdiv(e["a"] * 4 + e["b"], 4),
     "(a*4 + b) / 4"),
    ("(aK+b)%K a<0", [a_neg, b_lt4], mod(a_neg * 4 + b_lt4, 4), lambda e: cmod(e["a"] * 4 + e["b"], 4),
     "(a*4 + b) % 4"),
    # ... nor when b may be negative
    ("(aK+b)/K b<0", [a03, b_neg], div(a03 * 4 + b_neg, 4), lambda e: cdiv(e["a"] * 4 + e["b"], 4),
     "(a*4 + b) / 4"),
    ("(aK+b)%K b<0", [a03, b_neg], mod(a03 * 4 + b_neg, 4), lambda e: cmod(e["a"] * 4 + e["b"], 4),
     "(a*4 + b) % 4"),
    ("(aK+b)/K b<0 sum>=0", [a13, b_neg], div(a13 * 4 + b_neg, 4), lambda e: cdiv(e["a"] * 4 + e["b"], 4),
     "(a*4 + b) / 4"),
    ("(aK+b)%K b<0 sum>=0", [a13, b_neg], mod(a13 * 4 + b_neg, 4), lambda e: cmod(e["a"] * 4 + e["b"], 4),
     "(a*4 + b) % 4"),
    ("(aK-1)/K", [a13], div(a13 * 4 - 1, 4), lambda e: cdiv(e["a"] * 4 - 1, 4), "a - 1"),
    # a divisor of the coefficient splits too: (a*8 + b) / 4 -> a*2 + b / 4
    ("(a*2K+b)/K", [a03, b_le4], div(a03 * 8 + b_le4, 4), lambda e: cdiv(e["a"] * 8 + e["b"], 4), "a*2 + b / 4"),
    # ranges: 0 <= x < K
    ("x/K small", [b_lt4], div(b_lt4, 4), lambda e: cdiv(e["b"], 4), "0"),
    ("x%K small", [b_lt4], mod(b_lt4, 4), lambda e: cmod(e["b"], 4), "b"),
    ("x/K x<=K", [b_le4], div(b_le4, 4), lambda e: cdiv(e["b"], 4), "b / 4"),
    ("x%K negative", [b_neg], mod(b_neg, 4), lambda e: cmod(e["b"], 4), "b % 4"),
    # nested divisions and remainders
    ("(x/A)/B", [x_pm], div(div(x_pm, 4), 2), lambda e: cdiv(cdiv(e["x"], 4), 2), "x / 8"),
    ("(x%A)%B", [x20], mod(mod(x20, 8), 4), lambda e: cmod(cmod(e["x"], 8), 4), "x % 4"),
    ("(x%A)%B negative", [x_pm], mod(mod(x_pm, 8), 4), lambda e: cmod(cmod(e["x"], 8), 4), "(x % 8) % 4"),
    ("(x%A)%B not a divisor", [x20], mod(mod(x20, 6), 4), lambda e: cmod(cmod(e["x"], 6), 4), "(x % 6) % 4"),
    ("x/-K", [x_pm], div(x_pm, -4), lambda e: cdiv(e["x"], -4), "x / (-4)"),
    ("x/n", [x20, Var("m", 1, 5)], div(x20, Var("m", 1, 5)), lambda e: cdiv(e["x"], e["m"]), "x / m"),
    # the reshape of a packed channels-last [N, 64, 2, 2] into [N, 256]: element 64*w + k of
    # row i0 is channel (i/4) % 64, row (i/2) % 2, column i % 2 of the map (i = i0*256 + 64*w + k)
    ("flatten-channel", [i0, w, bit], mod(div(i0 * 256 + w * 64 + bit, 4), 64),
     lambda e: cmod(cdiv(e["i0"] * 256 + e["w"] * 64 + e["k"], 4), 64), "w*16 + k / 4"),
    ("flatten-row", [i0, w, bit], mod(div(i0 * 256 + w * 64 + bit, 2), 2),
     lambda e: cmod(cdiv(e["i0"] * 256 + e["w"] * 64 + e["k"], 2), 2), "(k / 2) % 2"),
    ("flatten-batch", [i0, w, bit], div(i0 * 256 + w * 64 + bit, 256),
     lambda e: cdiv(e["i0"] * 256 + e["w"] * 64 + e["k"], 256), "i0"),
    ("flatten-word", [i0, w, bit], div(mod(div(i0 * 256 + w * 64 + bit, 4), 64), 64),
     lambda e: cdiv(cmod(cdiv(e["i0"] * 256 + e["w"] * 64 + e["k"], 4), 64), 64), "0"),
    # a product of variables, and a sum times a variable (distributed)
    ("product", [a_neg, b_neg], (a_neg + 1) * b_neg, lambda e: (e["a"] + 1) * e["b"], "a*b + b"),
    ("quotient-times", [x20], div(x20, 3) * 2 + mod(x20, 3), lambda e: cdiv(e["x"], 3) * 2 + cmod(e["x"], 3),
     "(x / 3)*2 + x % 3"),
]


def _small(variables):
    """The grid, shrunk for the wide cases."""
    return list(grid(*variables, cap=6 if len(variables) > 2 else 40))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_simplified_value_and_text(case):
    _, variables, expr, reference, text = case
    assert str(expr) == text
    points = _small(variables) if variables else [{}]
    for env in points:
        assert expr.evaluate(env) == reference(env), env
        if expr.lo is not None:
            assert expr.evaluate(env) >= expr.lo, (env, expr.lo)
        if expr.hi is not None:
            assert expr.evaluate(env) <= expr.hi, (env, expr.hi)


def test_ranges_bound_the_values():
    """Quotients and remainders of negative dividends and divisors keep sound ranges."""
    for expr, variables in [(div(x_pm, 3), [x_pm]), (mod(x_pm, 3), [x_pm]), (div(x_pm, -3), [x_pm]),
                            (mod(x_pm * 5 + 2, 7), [x_pm]), (a_neg * b_neg - 4, [a_neg, b_neg])]:
        values = [expr.evaluate(env) for env in grid(*variables)]
        assert expr.lo is not None and expr.hi is not None
        assert expr.lo <= min(values) and max(values) <= expr.hi, expr


INSIDE = [  # (e, lo, hi, answer): is lo <= e < hi ?
    (oh * 2 + tap, 0, 8, True),             # a 2x2 window of stride 2 without padding never leaves an 8-map
    (oh * 2 + tap - 1, 0, 8, "oh*2 + i - 1 >= 0"),  # with a pad of 1 only the low side can fail
    (oh * 2 + tap + 1, 0, 8, "oh*2 + i + 1 < 8"),
    (oh * 2 + tap, 10, 20, False),
    (x_pm, -5, 5, "x >= -5 && x < 5"),
]


@pytest.mark.parametrize("e,lo,hi,answer", INSIDE, ids=[str(c[3]) for c in INSIDE])
def test_inside_decides_what_the_ranges_decide(e, lo, hi, answer):
    assert inside(e, lo, hi) == answer
    variables = sorted({v for v in (oh, tap, x_pm) if v.name in str(e)}, key=lambda v: v.name)
    for env in grid(*variables):
        holds = lo <= e.evaluate(env) < hi
        if answer is True or answer is False:
            assert holds == answer, env


def test_printed_c_computes_the_same_values(tmp_path):
    """The printed text, compiled, gives the reference values (precedence and parentheses)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc or gcc) on PATH: the backend needs one to build anything")
    lines, expected = ["#include <stdio.h>", "int main(void) {"], []
    for _, variables, expr, reference, _ in CASES:
        for env in (_small(variables) if variables else [{}])[:200]:
            decl = " ".join(f"const long {k} = {v};" for k, v in env.items())
            lines.append(f"{{ {decl} printf(\"%ld\\n\", (long)({expr})); }}")
            expected.append(reference(env))
    for e, lo, hi, answer in INSIDE:
        if isinstance(answer, str):
            for env in grid(*sorted({v for v in (oh, tap, x_pm) if v.name in str(e)}, key=lambda v: v.name)):
                decl = " ".join(f"const long {k} = {v};" for k, v in env.items())
                lines.append(f"{{ {decl} printf(\"%ld\\n\", (long)({answer})); }}")
                expected.append(int(lo <= e.evaluate(env) < hi))
    lines += ["return 0;", "}"]
    (tmp_path / "t.c").write_text("\n".join(lines) + "\n")
    subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-Wno-unused-variable", "-o", str(tmp_path / "t"),
                    str(tmp_path / "t.c")], check=True, capture_output=True)
    out = subprocess.run([str(tmp_path / "t")], check=True, capture_output=True, text=True).stdout.split()
    assert [int(v) for v in out] == expected


def test_strings_are_variables_or_numbers_only():
    assert div("bd_c", 64) == div(Var("bd_c"), 64)
    assert str(mod("12", 5)) == "2"
    with pytest.raises(TypeError, match="not an index expression"):
        div("i + 1", 2)
    with pytest.raises(ZeroDivisionError):
        div(x20, 0)


# --- the statement builder ------------------------------------------------------------------------


def test_a_loop_of_one_trip_is_no_loop_and_its_variable_is_zero():
    b = Block()
    with b.loop("i", 1) as i, b.loop("j", 5) as j:
        b(f"y[{i * 5 + j}] = 0;")
    assert i == Const(0)
    assert b.text() == "for (long j = 0; j < 5; ++j)\n    y[j] = 0;\n"


def test_loops_brace_a_body_of_several_statements_or_a_declaration():
    b = Block()
    with b.loop("i", "n") as i:
        b.decl(f"const long k = {i * 2};")
    with b.loop("j", 3) as j:
        b(f"a[{j}] = 0;", f"b[{j}] = 0;")
    assert b.text() == ("for (long i = 0; i < n; ++i) {\n    const long k = i*2;\n}\n"
                        "for (long j = 0; j < 3; ++j) {\n    a[j] = 0;\n    b[j] = 0;\n}\n")


def test_conditions_the_ranges_decide_are_not_emitted():
    b = Block()
    with b.loop("oh", 4) as o, b.loop("i", 2) as i:
        with b.when(inside(o * 2 + i, 0, 8)):
            b("s += 1;")
        with b.when(inside(o * 2 + i, 8, 9)):
            b("never();")
        with b.when(inside(o * 2 + i - 1, 0, 8)):
            b("t += 1;")
    text = b.text()
    assert "never" not in text and "if (oh*2 + i >= 0" not in text
    assert "s += 1;" in text and "if (oh*2 + i - 1 >= 0)\n" in text


def test_let_names_only_what_is_not_a_variable_already():
    b = Block()
    assert b.let("k", oh) is oh and b.let("k", 3) == Const(3)
    v = b.let("k", oh * 2 + 1)
    assert (v.lo, v.hi) == (1, 7) and b.text() == "const long k = oh*2 + 1;\n"


def test_parallel_pragma_only_for_enough_work():
    b = Block()
    with b.loop("i", 10, work=Const(640)):
        b("x();")
    with b.loop("i", "n", work=n * 64):
        b("x();")
    with b.loop("i", 4096, work=Const(65536)):
        b("x();")
    lines = b.text().splitlines()
    assert lines[0].startswith("for") and lines[2] == "PARALLEL_FOR_IF(n*64 > 32768)" and lines[5] == "PARALLEL_FOR"


# --- the layouts address through it ---------------------------------------------------------------


def test_channels_last_offsets_and_packed_bits_print_simplified():
    x = Layout(DType.f32, ("n", 1, 8, 8))
    i = [Var("i0", 0, None), Const(0), Var("i2", 0, 7), Var("i3", 0, 7)]
    assert str(x.offset(i)[0]) == "i0*64 + i2*8 + i3"
    bits = Layout(DType.b1, ("n", 64, 2, 2))
    word, bit = bits.offset([i0, w * 16 + div(bit_var := Var("k", 0, 63), 4), Const(1), Const(0)])
    assert (str(word), str(bit)) == ("i0*4 + 2", "w*16 + k / 4")
    assert str(bits.load("x", [i0, bit_var, Const(0), Const(0)])) == "((int)((x[i0*4] >> k) & 1u))"
