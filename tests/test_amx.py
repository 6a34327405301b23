"""The integer-signal GEMMs on the AMX tile unit (isa="amx", and "native" on a CPU with
AMX-INT8; docs/backend.md, "The ISA layer"): the exact sums equal the interpreter's bit for
bit at the shapes that exercise every part of the AMX path (whole 64-value steps of k and a
plain-C tail, one or two 8-row panels per tile, the int32 and the int64 accumulators, i8 and
i16 signals), and the same build with BOLDC_NO_AMX=1 runs the VNNI kernels, says so in its
build_info and gives the same values. Skipped, with the reason, where this CPU, compiler or
Linux kernel cannot run AMX tiles; the VNNI kernels are then what "native" builds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import boldc
from boldc.backend.build import check_isa, find_compiler
from boldc.errors import BoldcError

from opbuild import single_op

HERE = Path(__file__).resolve().parent
BATCH = 5


def _amx_or_skip() -> None:
    try:
        check_isa("amx")
    except BoldcError as exc:
        pytest.skip(f"this host cannot build or run the AMX kernels: {exc}")


def _cases() -> list[tuple[str, str, list[np.ndarray], list[np.ndarray], dict]]:
    """(name, op, inputs, params, attrs): reductions of 64·q + r values, 8·odd and 8·even rows."""
    rng = np.random.default_rng(23)
    cases = []
    for dt, top in ((np.int16, 32767), (np.int8, 127)):
        tag = np.dtype(dt).name
        scale = np.array(2.0 ** -7, np.float32)
        for k, m in ((200, 9), (256, 24), (70, 40), (64, 8)):  # linear_grad_x: k = the reduction
            dy = rng.integers(-top, top, (BATCH, k), endpoint=True).astype(dt)
            cases.append((f"lgx_{tag}_{k}_{m}", "linear_grad_x", [dy], [rng.random((k, m)) < 0.5, scale],
                          {"scale": 1.0}))
        # conv2d_grad_x: reduction 9 * M; conv2d_grad_w: reduction N * OH * OW, M rows
        for c, hw, m in ((8, 6, 24), (16, 5, 8), (5, 7, 40)):
            dy = rng.integers(-top, top, (BATCH, m, hw, hw), endpoint=True).astype(dt)
            cases.append((f"cgx_{tag}_{c}_{hw}_{m}", "conv2d_grad_x", [dy], [rng.random((m, c, 3, 3)) < 0.5, scale],
                          {"stride": [1, 1], "pad": [1, 1, 1, 1], "input_hw": [hw, hw], "scale": -0.5}))
            x = rng.random((BATCH, c, hw, hw)) < 0.5
            cases.append((f"cgw_{tag}_{c}_{hw}_{m}", "conv2d_grad_w", [dy, x], [scale],
                          {"stride": [1, 1], "pad": [1, 1, 1, 1], "kernel": [3, 3], "pad_value": -1.0,
                           "scale": 1.0}))
    return cases


CASES = _cases()


def _module() -> boldc.Module:
    m = boldc.Module()
    for name, op, inputs, params, attrs in CASES:
        single_op(op, inputs, params, attrs, module=m, fname=name)
    return m


def _mismatches(cm, module) -> list[str]:
    bad = []
    for name, _, inputs, _, _ in CASES:
        got, want = cm.run(name, inputs), boldc.interpret(module, inputs, name)
        got, want = (v[0] if isinstance(v, (list, tuple)) else v for v in (got, want))
        if not np.array_equal(got.view(np.uint32), want.view(np.uint32)):
            bad.append(f"{name}: {int((got != want).sum())} of {got.size} differ")
    return bad


def test_amx_gemms_equal_the_interpreter():
    _amx_or_skip()
    module = _module()
    cm = boldc.compile(module, isa="amx", max_batch=BATCH, functions=[c[0] for c in CASES])
    assert cm.build_info.startswith("simd=avx512-amx"), cm.build_info
    if "amx-tiles=off" in cm.build_info:
        pytest.skip(f"the Linux kernel did not grant this process the AMX tile state ({cm.build_info})")
    assert not _mismatches(cm, module)


def test_amx_int64_accumulators_equal_the_interpreter():
    """A weight gradient over more than 2^16 pixels of an i16 signal: int64 accumulators."""
    _amx_or_skip()
    rng = np.random.default_rng(5)
    dy = rng.integers(-32767, 32767, (2, 16, 184, 184), endpoint=True).astype(np.int16)
    x = rng.random((2, 8, 184, 184)) < 0.5
    attrs = {"stride": [1, 1], "pad": [1, 1, 1, 1], "kernel": [3, 3], "pad_value": -1.0, "scale": 1.0}
    module = single_op("conv2d_grad_w", [dy, x], [np.array(2.0 ** -20, np.float32)], attrs)
    cm = boldc.compile(module, isa="amx", max_batch=2)
    if "amx-tiles=off" in cm.build_info:
        pytest.skip(f"the Linux kernel did not grant this process the AMX tile state ({cm.build_info})")
    got, want = cm.infer([dy, x]), boldc.interpret(module, [dy, x])
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
import boldc
import test_amx
module = test_amx._module()
cm = boldc.compile(module, isa="amx", max_batch=test_amx.BATCH, functions=[c[0] for c in test_amx.CASES])
print(json.dumps({{"build_info": cm.build_info, "bad": test_amx._mismatches(cm, module)}}))
"""


def test_boldc_no_amx_runs_the_vnni_kernels_with_the_same_values():
    _amx_or_skip()
    env = {**os.environ, "BOLDC_NO_AMX": "1"}
    run = subprocess.run([sys.executable, "-P", "-c", CHILD.format(tests=str(HERE))], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["build_info"].startswith("simd=avx512-amx") and out["build_info"].endswith("amx-tiles=off"), out
    assert out["bad"] == []


def test_amx_microbenchmark_builds_and_runs(tmp_path):
    """bench/igemm_amx.c, the tile's multiply-adds per second (docs/backend.md, AMX)."""
    _amx_or_skip()
    root = HERE.parent
    exe = tmp_path / "igemm_amx"
    sources = [root / "bench" / "igemm_amx.c", root / "runtime" / "bd_isa_amx.c", root / "runtime" / "bd_util.c"]
    built = subprocess.run(find_compiler().split() + ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-march=native",
                                                      f"-I{root / 'runtime'}", *map(str, sources), "-lm", "-o",
                                                      str(exe)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    if run.returncode == 1 and run.stdout.startswith("no AMX tiles"):
        pytest.skip(f"the Linux kernel did not grant the AMX tile state: {run.stdout.strip()}")
    assert run.returncode == 0, run.stderr
    rates = [float(line.split(":")[1].split()[0]) for line in run.stdout.splitlines()]
    assert len(rates) == 2 and min(rates) > 0, run.stdout
