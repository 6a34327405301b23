"""The boldc command line: commands, and one-line user errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

import boldc

from conftest import GOLDEN

MLP = GOLDEN / "boolean_mlp.bir"


def test_version(cli):
    code, out, _ = cli("--version")
    assert code == 0 and out.strip() == f"boldc {boldc.__version__}"


def test_console_script_runs_as_module():
    res = subprocess.run([sys.executable, "-P", "-m", "boldc", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == f"boldc {boldc.__version__}"


def test_show_prints_canonical_text(cli):
    code, out, err = cli("show", MLP)
    assert code == 0 and err == ""
    assert out == MLP.read_text()
    code, out, _ = cli("show", MLP, "--no-weights")
    assert code == 0 and "resources" not in out and out == boldc.dumps(boldc.load(MLP), weights=False)


def test_run_writes_interpreter_output(cli, tmp_path):
    x = np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, out, err = cli("run", MLP, "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    assert code == 0, err
    y = np.load(tmp_path / "y.npy")
    assert np.array_equal(y, boldc.interpret(boldc.load(MLP), x))
    code, out, _ = cli("run", MLP, "-i", tmp_path / "x.npy")
    assert code == 0 and out.startswith("%logits: float32[5, 10]")


def _one_line_error(code, out, err, pattern):
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert pattern in lines[0], lines[0]


def test_user_errors_are_one_line(cli, tmp_path):
    _one_line_error(*cli("show", tmp_path / "missing.bir"), "missing.bir: no such IR file")
    bad = tmp_path / "bad.bir"
    bad.write_text(MLP.read_text().replace("blinear(%h0", "blinear(%h9"))
    _one_line_error(*cli("show", bad), "bad.bir:12:28: op 'blinear': undefined value %h9")
    _one_line_error(*cli("show", MLP, "--frobnicate"), "--frobnicate: no such option of 'boldc show'")
    _one_line_error(*cli("frobnicate"), "frobnicate: no such command (commands: convert, show,")
    _one_line_error(*cli("run", MLP), "--input: required option missing (see 'boldc run --help')")
    np.save(tmp_path / "x.npy", np.zeros((2, 3), np.float32))
    _one_line_error(*cli("run", MLP, "-i", tmp_path / "x.npy"), "input %x of @forward must be f32[N, 64]")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    _one_line_error(*cli("run", MLP, "-i", tmp_path / "junk.npy"), "junk.npy: not a readable .npy/.npz file")


def test_installed_script_error_exit_code(tmp_path):
    res = subprocess.run([sys.executable, "-P", "-m", "boldc", "show", str(tmp_path / "nope.bir")],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"boldc: error: {tmp_path / 'nope.bir'}: no such IR file"]
