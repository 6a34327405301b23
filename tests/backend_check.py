"""Helpers for the C backend tests: build variants, and comparisons of every value of a
compiled run (``CompiledModel.trace``) with the reference interpreter.

Two checks, both strict:

- ``replay_problems``: every op is re-run by the interpreter on the operand values the
  C code actually had; its results must equal the C results bit for bit (b1 and
  integers) or within FLOAT_RTOL (f32). This proves each op's C implementation.
- ``run_problems``: the C values against an independent interpreter run from the
  same inputs. b1 and integer values must be equal; float values within tolerance.
  A float rounding difference may legitimately flip a threshold bit when the float
  lies within the tolerance of the threshold: such a flip must be explained by that
  margin (checked), and values downstream of it are then covered by the replay only.
"""

from __future__ import annotations

import numpy as np

import boldc
from boldc import Module
from boldc.interp import resolve_attrs, run
from boldc.ir.core import Param
from boldc.ops.registry import lookup

FLOAT_RTOL = 1e-5  # relative to the tensor's largest magnitude, and to each element

# The paths every bit-exactness test runs: the SIMD kernels this machine has, the portable
# kernels with the compiler's popcount, and the portable kernels with the C popcount.
VARIANTS = {
    "simd": {"isa": "native", "popcount": "builtin"},
    "portable": {"isa": "portable", "popcount": "builtin"},
    "portable-popcount": {"isa": "portable", "popcount": "portable"},
}


def float_close(got: np.ndarray, want: np.ndarray) -> bool:
    """|got - want| <= FLOAT_RTOL * (|want| + max|want|), NaNs in the same places."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return False
    nan = np.isnan(want)
    if not np.array_equal(nan, np.isnan(got)):
        return False
    g, w = got[~nan], want[~nan]
    if not w.size:
        return True
    inf = np.isinf(w)
    if not np.array_equal(g[inf], w[inf]):
        return False
    g, w = g[~inf], w[~inf]
    scale = np.abs(w).max(initial=0.0)
    return bool(np.all(np.abs(g - w) <= FLOAT_RTOL * (np.abs(w) + scale)))


def same(got: np.ndarray, want: np.ndarray, is_float: bool) -> bool:
    if is_float:
        return float_close(got, want)
    return got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)


def _operands(module: Module, op, values: dict) -> list[np.ndarray]:
    return [o.data if isinstance(o, Param) else values[o.name] for o in op.operands]


def replay_problems(module: Module, fn_name: str, trace: dict[str, np.ndarray], n: int) -> list[str]:
    fn = module.function(fn_name)
    symbols = {d for a in fn.args for d in a.type.shape if isinstance(d, str)}
    bindings = {s: n for s in symbols}
    problems = []
    for i, op in enumerate(fn.ops):
        opdef = lookup(op.name)
        want = opdef.evaluate(_operands(module, op, trace), resolve_attrs(opdef, op.attrs, bindings))
        for r, w in zip(op.results, want):
            if not same(trace[r.name], w, r.type.dtype.is_float):
                problems.append(f"op {i} {op.describe()}: C result differs from the interpreter on the C inputs"
                                + _diff(trace[r.name], w))
    return problems


# Ops after which run_problems stopped comparing because of an explained rounding flip
# (tests report them; replay_problems still covers every op).
FLIPS: list[str] = []


def run_problems(module: Module, fn_name: str, inputs, trace: dict[str, np.ndarray]) -> list[str]:
    fn = module.function(fn_name)
    env = run(module, fn, inputs)
    ref = {v.name: env[id(v)] for v in fn.values()}
    problems = []
    for a in fn.args:
        if not same(trace[a.name], ref[a.name], a.type.dtype.is_float):
            problems.append(f"argument %{a.name} differs after the input copy")
    for op in fn.ops:
        for r in op.results:
            if same(trace[r.name], ref[r.name], r.type.dtype.is_float):
                continue
            if not r.type.dtype.is_float and _rounding_flip(op, ref, trace):
                FLIPS.append(f"@{fn_name}: {op.describe()}")
                return problems  # downstream values: covered by replay_problems
            problems.append(f"{op.describe()}: C value differs from the interpreter run" + _diff(trace[r.name],
                                                                                              ref[r.name]))
    return problems


def _rounding_flip(op, ref, trace) -> bool:
    """True if a b1/integer result computed from float operands may differ only because
    those operands differ within tolerance: replay_problems proves the op exact on the
    C inputs, so a difference here comes from the inputs, i.e. from float rounding
    (a value within tolerance of a threshold, or of a rounding boundary)."""
    floats = [o for o in op.operands if not isinstance(o, Param) and o.type.dtype.is_float]
    if not floats:
        return False
    return all(isinstance(o, Param) or same(trace[o.name], ref[o.name], o.type.dtype.is_float) for o in op.operands)


def _diff(got, want) -> str:
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return f" (shape {got.shape} vs {want.shape})"
    if want.dtype == np.bool_ or np.issubdtype(want.dtype, np.integer):
        bad = np.argwhere(got != want)
        return f" ({len(bad)} of {want.size} differ, first at {bad[0].tolist() if len(bad) else None})"
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    return f" (max abs err {err.max():.3g}, max |want| {np.abs(want).max():.3g})"


# --- running checks ---------------------------------------------------------------------------


def check_all(module: Module, compiled, fname: str, inputs: list[np.ndarray]) -> list[str]:
    """Both checks for one function on one batch of inputs."""
    trace = compiled.trace(inputs, func=fname)
    n = inputs[0].shape[0] if inputs and inputs[0].ndim else 1
    return replay_problems(module, fname, trace, n) + run_problems(module, fname, inputs, trace)


def compile_variant(module: Module, variant: str, **options):
    """Every function of ``module``, traced, on one of the VARIANTS."""
    return boldc.compile(module, trace=True, functions=list(module.functions), **VARIANTS[variant], **options)
