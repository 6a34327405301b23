"""The shape of the generated model.c (boldc/backend/emit.py, cfile.py, templates/module.c.j2):
op functions that declare only what they use, one table of ops per function run by one
loop (profiling included), and C symbols that cannot collide."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_backend_ops import CASES, STATIC_CASES

import boldc
from boldc.backend.ckernel import EmitError
from boldc.backend.emit import Options, generate

from opbuild import single_op
from train_cases import TRAIN_CASES

ROOT = Path(__file__).parent.parent


def _module(cases, batch_symbolic=True) -> boldc.Module:
    m = boldc.Module()
    for name, op, inputs, params, attrs in cases:
        single_op(op, inputs, params, attrs, module=m, fname=name, batch_symbolic=batch_symbolic)
    return m


@pytest.fixture(scope="module")
def programs():
    forward = _module(CASES)
    for name, op, inputs, params, attrs in STATIC_CASES:
        single_op(op, inputs, params, attrs, module=forward, fname=name, batch_symbolic=False)
    return {"ops": generate(forward, Options(max_batch=6, max_threads=2)),
            "train ops": generate(_module(TRAIN_CASES), Options(max_batch=6, max_threads=2))}


@pytest.mark.parametrize("openmp", [False, True], ids=["plain", "openmp"])
@pytest.mark.parametrize("which", ["ops", "train ops"])
def test_every_op_case_compiles_without_a_warning(programs, which, openmp, tmp_path):
    """-Wall -Wextra -Werror: an op function that declared a local it does not use, or a
    loop the simplifier left empty of meaning (a self-comparison of an integer), fails."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc or gcc) on PATH: the backend needs one to build anything")
    program = programs[which]
    (tmp_path / "model.c").write_text(program.model_c)
    (tmp_path / "model.h").write_text(program.model_h)
    flags = ["-fopenmp"] if openmp else []
    r = subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", *flags,
                        "-I", str(ROOT / "runtime"), "-I", str(tmp_path), str(tmp_path / "model.c")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[:4000]


def test_op_functions_have_no_void_casts_and_one_table_per_function(programs):
    c = programs["train ops"].model_c
    op_functions = re.findall(r"^static void (\w+_op\d+)\(const model_frame \*frame\)$", c, flags=re.M)
    assert op_functions and "(void)frame;" not in c
    assert not re.search(r"\(void\)(n|ex|arena|params|bd_nt|scratch)\b", c)
    tables = re.findall(r"static const model_op_fn (\w+)_ops\[\] = \{(.*?)\};", c, flags=re.S)
    listed = [name for _, body in tables for name in re.findall(r"\w+", body)]
    assert sorted(listed) == sorted(op_functions)
    assert c.count("bd_seconds()") == 2  # the one loop that runs (and times) every table


def test_profile_times_every_op_through_the_table():
    m = boldc.convert(ROOT / "examples" / "digits_mlp.onnx")
    cm = boldc.compile(m, max_batch=4)
    x = np.random.default_rng(0).standard_normal((4, *m.function().args[0].type.shape[1:])).astype(np.float32)
    times = cm.profile(x, repeat=3)
    assert [desc for desc, _ in times] == [op.describe() for op in m.function().ops]
    assert all(t >= 0 for _, t in times) and sum(t for _, t in times) > 0


def test_a_function_named_like_a_generated_symbol_is_refused():
    x = np.zeros((2, 3), np.float32)
    m = _module([("forward", "relu", [x], [], {})])
    single_op("relu", [x], [], {}, module=m, fname="forward_ops")  # model_forward_ops: forward's op table
    with pytest.raises(EmitError, match=r"function @forward_ops: its C symbol model_forward_ops is taken by @forward"):
        generate(m, Options())
    other = _module([("init", "relu", [x], [], {})])  # model_init
    with pytest.raises(EmitError, match="model_init is taken by the generated file"):
        generate(other, Options())
