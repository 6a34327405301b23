"""Helpers for the C backend tests: build variants, and comparisons of every value of a
compiled run (``CompiledModel.trace``) with the reference interpreter.

Each module is built twice per variant (``Builds``): traced (``trace=True``: every value
has its own bytes, so every value can be read back) and as shipped (``trace=False``, what
``boldc.compile`` gives a user: arena reuse and in-place kernels). Checks, all strict:

- ``replay_problems``: every op is re-run by the interpreter on the operand values the
  C code actually had; its results must equal the C results bit for bit (b1 and
  integers) or within FLOAT_RTOL (f32). This proves each op's C implementation.
- ``run_problems``: the C values against an independent interpreter run from the
  same inputs. b1 and integer values must be equal; float values within tolerance.
  A float rounding difference may legitimately flip a threshold bit when the float
  lies within the tolerance of the threshold: such a flip must be explained by that
  margin (checked per element), and the values computed from it (and only those) are
  then covered by the replay only. Explained flips are recorded in FLIPS.
- ``shipped_problems``: the shipped build's outputs (and params, for functions that
  update them) equal the traced build's bit for bit and the interpreter's by the rules
  above, and its arena plan passes ``arena_problems``: no two buffers whose values are
  live at the same op overlap, with liveness computed here from the function itself.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest

import boldc
from boldc import Module
from boldc.interp import resolve_attrs, run
from boldc.ir.core import Param
from boldc.ops.registry import lookup

FLOAT_RTOL = 1e-5  # relative to the tensor's largest magnitude, and to each element

# The paths every bit-exactness test runs: the best SIMD kernels this machine has
# ("simd": isa="native"), the AVX2 kernels where the machine runs them besides ("avx2", on
# an AVX-512 machine; on an AVX2 machine "simd" is that path already), the portable kernels
# with the compiler's popcount, and the portable kernels with the C popcount.
VARIANTS = {
    "simd": {"isa": "native", "popcount": "builtin"},
    "avx2": {"isa": "avx2", "popcount": "builtin"},
    # the VNNI kernels where "native" builds the AMX ones (skipped where native is this path)
    "avx512": {"isa": "avx512", "popcount": "builtin"},
    "portable": {"isa": "portable", "popcount": "builtin"},
    "portable-popcount": {"isa": "portable", "popcount": "portable"},
}


def skip_unless_variant_runs(variant: str, build_info: str) -> None:
    """Skip (with the reason) when a build does not run the path its variant names: on a
    host without SIMD kernels, isa="native" selects the portable kernels (``build_info``
    says ``simd=portable``), which the "portable" variant already tests."""
    simd = dict(part.split("=", 1) for part in build_info.split() if "=" in part).get("simd")
    if variant == "simd" and simd in (None, "portable"):
        pytest.skip(f"the 'simd' variant (isa='native') built the portable kernels on this host "
                    f"(build_info: {build_info!r}): no SIMD kernels to test here; 'portable' covers this path")


def skip_unless_host_runs(variant: str) -> None:
    """Skip (with the reason) a variant that names an ISA this host cannot build or run
    (boldc.compile's own check refuses it), or whose kernels "simd" already runs here."""
    from boldc.backend.build import check_isa, simd_path
    from boldc.errors import BoldcError

    isa = VARIANTS[variant]["isa"]
    if isa in ("native", "portable"):
        return
    try:
        check_isa(isa)
    except BoldcError as exc:
        pytest.skip(f"the '{variant}' variant cannot run on this host: {exc}")
    if simd_path("native") == simd_path(isa):
        pytest.skip(f"the '{variant}' variant is this host's best path: the 'simd' variant (isa='native') "
                    f"already runs the {simd_path(isa)} kernels here")


def build_variant(module: Module, variant: str, **options):
    """``boldc.compile(module, **options)`` on one of the VARIANTS; skips when the host
    cannot run that variant's path or the build does not run it (``skip_unless_host_runs``,
    ``skip_unless_variant_runs``)."""
    skip_unless_host_runs(variant)
    cm = boldc.compile(module, **VARIANTS[variant], **options)
    skip_unless_variant_runs(variant, cm.build_info)
    return cm


@dataclass
class Builds:
    """One module compiled twice on one variant: ``traced`` (trace=True) and ``shipped``
    (trace=False: the arena plan and in-place kernels users get)."""

    traced: object
    shipped: object


def compile_variant(module: Module, variant: str, **options) -> Builds:
    """Every function of ``module``, traced and as shipped, on one of the VARIANTS."""
    functions = list(module.functions)
    return Builds(build_variant(module, variant, trace=True, functions=functions, **options),
                  build_variant(module, variant, trace=False, functions=functions, **options))


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


def _operands(op, values: dict) -> list[np.ndarray]:
    return [o.data if isinstance(o, Param) else values[o.name] for o in op.operands]


def _bindings(fn, n: int) -> dict[str, int]:
    return {d: n for a in fn.args for d in a.type.shape if isinstance(d, str)}


def replay_problems(module: Module, fn_name: str, trace: dict[str, np.ndarray], n: int) -> list[str]:
    fn = module.function(fn_name)
    bindings = _bindings(fn, n)
    problems = []
    for i, op in enumerate(fn.ops):
        opdef = lookup(op.name)
        want = opdef.evaluate(_operands(op, trace), resolve_attrs(opdef, op.attrs, bindings))
        for r, w in zip(op.results, want):
            if not same(trace[r.name], w, r.type.dtype.is_float):
                problems.append(f"op {i} {op.describe()}: C result differs from the interpreter on the C inputs"
                                + _diff(trace[r.name], w))
    return problems


# Explained rounding flips run_problems accepted ("@function: op (n elements)"); the model
# tests assert that none happened on their data. replay_problems still covers every op.
FLIPS: list[str] = []


@dataclass
class RunResult:
    problems: list[str]
    ref: dict[str, np.ndarray]  # the interpreter's value of every value, by name
    downstream: set[str]  # values computed from an explained rounding flip (not compared)


def compare_run(module: Module, fn_name: str, inputs, trace: dict[str, np.ndarray], n: int) -> RunResult:
    """run_problems, with the interpreter's values and the values downstream of a flip."""
    fn = module.function(fn_name)
    bindings = _bindings(fn, n)
    env = run(module, fn, inputs)
    ref = {v.name: env[v] for v in fn.values()}
    problems, downstream = [], set()
    for a in fn.args:
        if not same(trace[a.name], ref[a.name], a.type.dtype.is_float):
            problems.append(f"argument %{a.name} differs after the input copy")
    for op in fn.ops:
        if any(not isinstance(o, Param) and o.name in downstream for o in op.operands):
            downstream.update(r.name for r in op.results)  # computed from a flip: replay_problems covers it
            continue
        for r in op.results:
            if same(trace[r.name], ref[r.name], r.type.dtype.is_float):
                continue
            flipped = None if r.type.dtype.is_float else _rounding_flip(op, r, ref, trace, bindings)
            if flipped:
                FLIPS.append(f"@{fn_name}: {op.describe()} ({flipped} elements)")
                downstream.update(x.name for x in op.results)
                break
            problems.append(f"{op.describe()}: C value differs from the interpreter run" + _diff(trace[r.name],
                                                                                              ref[r.name]))
    return RunResult(problems, ref, downstream)


def run_problems(module: Module, fn_name: str, inputs, trace: dict[str, np.ndarray], n: int = 1) -> list[str]:
    return compare_run(module, fn_name, inputs, trace, n).problems


def _rounding_flip(op, result, ref, trace, bindings) -> int:
    """The number of elements of ``result`` (b1 or integer, computed from float operands)
    that differ from the interpreter's, if every one of them is explained by float
    rounding of the operands; 0 otherwise.

    replay_problems proves the op exact on the C inputs, so a difference here comes from
    the inputs; it is explained only where they are within tolerance of each other and a
    decision boundary (a threshold, a rounding boundary of a cast) lies within FLOAT_RTOL
    of the interpreter's operand: moving the float operands to the ends of their
    tolerance band, in every combination of directions, must change the element's result,
    and the C result must lie between the results so reached."""
    floats = [k for k, o in enumerate(op.operands) if not isinstance(o, Param) and o.type.dtype.is_float]
    if not floats or len(floats) > 3:
        return 0
    if not all(isinstance(o, Param) or same(trace[o.name], ref[o.name], o.type.dtype.is_float) for o in op.operands):
        return 0
    opdef = lookup(op.name)
    attrs = resolve_attrs(opdef, op.attrs, bindings)
    position = op.results.index(result)
    values = _operands(op, ref)
    reached = []
    for signs in itertools.product((-1.0, 1.0), repeat=len(floats)):
        moved = list(values)
        for k, sign in zip(floats, signs):
            v = np.asarray(values[k], np.float64)
            band = FLOAT_RTOL * (np.abs(v) + np.abs(v).max(initial=0.0))
            moved[k] = (v + sign * band).astype(values[k].dtype)
        reached.append(np.asarray(opdef.evaluate(moved, attrs)[position], np.float64))
    got, want = np.asarray(trace[result.name]), np.asarray(ref[result.name])
    bad = got != want
    lo, hi = np.min(reached, axis=0)[bad], np.max(reached, axis=0)[bad]
    c = got[bad].astype(np.float64)
    explained = (lo < hi) & (lo <= c) & (c <= hi)
    return int(bad.sum()) if explained.all() else 0


def arena_problems(program, module: Module, fn_name: str) -> list[str]:
    """Overlaps in the arena plan of ``fn_name`` between buffers that are live together.

    Liveness is computed here from the function itself, not taken from the planner:
    a value lives from the op that defines it (an argument from the entry, -1, where it
    is copied in) to its last reader (a returned value to the exit, len(ops), where it
    is copied out; an unread result at its op only); the scratch of op i lives at op i.
    Two buffers live at a common op must not share a byte, except in place: a result
    of op i may take exactly the bytes of an operand of op i whose last reader is op i."""
    code = program.functions[fn_name]
    fn = module.function(fn_name)
    batch = program.options.max_batch
    first = {id(a): -1 for a in fn.args}
    last: dict[int, int] = {}
    inplace: set[tuple[int, int]] = set()  # (operand, result) pairs allowed to share bytes
    for i, op in enumerate(fn.ops):
        for o in op.operands:
            if not isinstance(o, Param):
                last[id(o)] = i
        first.update((id(r), i) for r in op.results)
    for v in fn.returns:
        if not isinstance(v, Param):
            last[id(v)] = len(fn.ops)
    for i, op in enumerate(fn.ops):
        inplace.update((id(o), id(r)) for o in op.operands if not isinstance(o, Param) and last[id(o)] == i
                       for r in op.results)
    spans = []  # (what, key, first op, last op, first byte, end byte)
    for v in list(fn.args) + [r for op in fn.ops for r in op.results]:
        slot = code.slots[id(v)]
        start = slot.buffer.offset
        spans.append((v.ref, id(v), first[id(v)], max(first[id(v)], last.get(id(v), -1)), start,
                      start + slot.layout.nbytes(batch)))
    for b in code.buffers:
        if isinstance(b.key, tuple) and b.key[0] == "scratch":
            spans.append((f"the scratch of op {b.key[1]}", None, b.key[1], b.key[1], b.offset, b.offset + b.size))
    problems = []
    for a, b in itertools.combinations(spans, 2):
        if a[4] == a[5] or b[4] == b[5] or a[2] > b[3] or b[2] > a[3] or a[5] <= b[4] or b[5] <= a[4]:
            continue  # empty, not live together, or disjoint bytes
        if ((a[1], b[1]) in inplace or (b[1], a[1]) in inplace) and a[4:] == b[4:]:
            continue
        live = max(a[2], b[2])
        problems.append(f"@{fn_name}: {a[0]} (ops {a[2]}..{a[3]}, bytes {a[4]}..{a[5]}) and {b[0]} (ops "
                        f"{b[2]}..{b[3]}, bytes {b[4]}..{b[5]}) overlap while both live at op {live}")
    return problems


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


def shipped_problems(module: Module, builds: Builds, fname: str, inputs, trace: dict, checked: RunResult) -> list[str]:
    """The shipped build against the traced one (bit for bit: same kernels, other buffers)
    and the interpreter (except values downstream of an explained flip), and its arena."""
    fn = module.function(fname)
    problems = arena_problems(builds.shipped.program, builds.shipped.module, fname)
    got = builds.shipped.run(fname, inputs)
    for k, (v, g) in enumerate(zip(fn.returns, got)):
        traced = builds.traced.get_param(v.name) if isinstance(v, Param) else trace[v.name]
        if not (g.dtype == traced.dtype and np.array_equal(g, traced, equal_nan=g.dtype.kind == "f")):
            problems.append(f"output {k} ({v.ref}) of the shipped build differs from the traced build's"
                            + _diff(g, traced))
        elif not isinstance(v, Param) and v.name not in checked.downstream \
                and not same(g, checked.ref[v.name], v.type.dtype.is_float):
            problems.append(f"output {k} ({v.ref}) of the shipped build differs from the interpreter"
                            + _diff(g, checked.ref[v.name]))
    if builds.shipped.params_image() != builds.traced.params_image():
        problems.append(f"@{fname}: the params after the call differ between the shipped and the traced build")
    return problems


def check_all(module: Module, builds: Builds, fname: str, inputs: list[np.ndarray]) -> list[str]:
    """Every check for one function on one batch of inputs (both builds run it once)."""
    trace = builds.traced.trace(inputs, func=fname)
    n = inputs[0].shape[0] if inputs and inputs[0].ndim else 1
    checked = compare_run(module, fname, inputs, trace, n)
    return (replay_problems(module, fname, trace, n) + checked.problems
            + shipped_problems(module, builds, fname, inputs, trace, checked))
