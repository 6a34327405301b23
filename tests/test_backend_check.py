"""The checks of backend_check.py on planted differences: each must fail where it should,
and accept only what its docstring allows (docs/backend.md, "Tests")."""

from __future__ import annotations

import numpy as np
import pytest

import boldc
from boldc import FunctionBuilder, Module, tensor
from boldc.backend.model import CompiledModel
from boldc.interp import run

from backend_check import FLIPS, build_variant, run_problems, skip_unless_variant_runs
from conftest import GOLDEN

PORTABLE_INFO = "simd=portable popcount=builtin openmp=no"


def test_simd_variant_skips_when_the_build_reports_portable():
    with pytest.raises(pytest.skip.Exception, match=r"'simd' variant .* built the portable kernels on this host"):
        skip_unless_variant_runs("simd", PORTABLE_INFO)
    skip_unless_variant_runs("simd", "simd=avx512-vpopcntdq popcount=builtin openmp=no")  # runs
    skip_unless_variant_runs("portable", PORTABLE_INFO)  # the portable variants run anywhere


def test_build_variant_skips_a_simd_build_that_is_portable(monkeypatch):
    """A host without AVX-512 VPOPCNTDQ (faked: its build_info) skips the "simd" tests
    instead of silently re-running the portable path."""
    cnn = boldc.load(GOLDEN / "boolean_cnn.bir")
    monkeypatch.setattr(CompiledModel, "build_info", property(lambda self: PORTABLE_INFO))
    with pytest.raises(pytest.skip.Exception, match="portable kernels"):
        build_variant(cnn, "simd")
    assert build_variant(cnn, "portable").build_info == PORTABLE_INFO


def _branches() -> Module:
    """x -> t = threshold(x, 0.5) -> c = cast(t, f32), and apart from t: r = relu(x)."""
    m = Module()
    fb = FunctionBuilder(m, "forward", [("x", tensor("f32", "N", 4))])
    t = fb.op("threshold", [fb.args[0]], {"tau": 0.5}, name="t")
    fb.ret(fb.op("cast", [t], {"to": "f32"}, name="c"), fb.op("relu", [fb.args[0]], name="r"))
    return m


X = np.array([[0.5000001, 3.0, -1.0, 0.25], [2.0, 0.75, -3.0, 1.0]], np.float32)


def _trace(m: Module) -> dict[str, np.ndarray]:
    """The interpreter's values by name, as a C trace would give them."""
    fn = m.function()
    env = run(m, fn, [X])
    return {v.name: env[v].copy() for v in fn.values()}


def test_an_explained_flip_skips_only_what_is_computed_from_it():
    """t[0, 0] flips (x = 0.5000001 lies within tolerance of τ = 0.5): accepted and
    recorded, its downstream cast not compared; relu, which does not read t, still is."""
    m = _branches()
    trace = _trace(m)
    trace["t"][0, 0] = False
    trace["c"][0, 0] = 0.0  # what the C computes from the flipped bit
    trace["r"][1, 1] = 0.5  # an unrelated wrong value, after the flip
    before = len(FLIPS)
    problems = run_problems(m, "forward", [X], trace)
    assert len(FLIPS) == before + 1 and "threshold" in FLIPS[-1], FLIPS[before:]
    assert len(problems) == 1 and "relu" in problems[0], problems


def test_a_flip_far_from_the_threshold_is_a_problem():
    """t[0, 1] flips although x = 3.0 is far from τ = 0.5 (its operands are equal): not a
    rounding flip."""
    m = _branches()
    trace = _trace(m)
    trace["t"][0, 1] = False
    before = len(FLIPS)
    problems = run_problems(m, "forward", [X], trace)
    assert len(FLIPS) == before
    assert problems and "threshold" in problems[0] and "differs from the interpreter" in problems[0], problems
