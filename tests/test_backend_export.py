"""``boldc compile model.bir -o DIR``: the standalone folder builds with make (no
Python), its main prints what CompiledModel.infer returns, and the inference and the
training exports are built with the Makefile's SANITIZE=1 (AddressSanitizer and
UndefinedBehaviorSanitizer) and run clean, bad inputs included."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import boldc
from boldc.backend.build import RUNTIME_FILES
from boldc.backend.training import TrainOptions, training_module

from backend_check import float_close
from conftest import GOLDEN

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

STRICT = "-std=c99 -O2 -Wall -Wextra -Werror"
SANITIZE = "-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="the export is built with make, which is not installed")
# the sanitizers report on stderr, exit non-zero, and must find nothing
SANITIZER_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=99",
                 "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
SANITIZER_REPORTS = ("runtime error", "AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer")


def _make(folder: Path, *args: str) -> None:
    out = subprocess.run([MAKE, "-C", str(folder), *args], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr


def _run(folder: Path, *args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(["./model", *args], cwd=folder, capture_output=True, text=True, timeout=600, env=env)


def _parse(stdout: str, n_outputs: int = 1) -> list[np.ndarray]:
    rows: list[list] = [[] for _ in range(n_outputs)]
    for line in stdout.splitlines():
        k, _, values = line.partition(":")
        rows[int(k)].append([float(v) for v in values.split()])
    return [np.array(r, dtype=np.float64) for r in rows]


def _export(cli, tmp_path: Path, bir: Path, *extra: str) -> Path:
    out = tmp_path / "out"
    code, stdout, stderr = cli("compile", bir, "-o", out, *extra)
    assert code == 0, stderr
    assert "wrote" in stdout
    return out


@pytest.mark.parametrize("arch", ["", "-march=native"])
def test_exported_folder_builds_and_prints_what_infer_returns(cli, tmp_path, arch):
    bir = GOLDEN / "boolean_cnn.bir"
    out = _export(cli, tmp_path, bir, "--max-batch", "4")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".boldc-export", "Makefile", "README.txt", "main.c", "model.c", "model.h", "model_weights.bin",
         *RUNTIME_FILES])
    _make(out, f"CFLAGS={STRICT}", f"ARCH={arch}")
    x = np.random.default_rng(0).standard_normal((7, 1, 8, 8)).astype("<f4")
    x.tofile(out / "x.bin")
    run = _run(out, "x.bin")
    assert run.returncode == 0, run.stderr
    got = _parse(run.stdout)[0]
    want = boldc.compile(boldc.load(bir)).infer(x)
    assert got.shape == want.shape
    assert np.array_equal(got.astype(np.float32), want), "printed outputs differ from CompiledModel.infer"


def test_export_of_a_boolean_output_model_and_batch_chunks(cli, tmp_path):
    """A model ending in b1 values, several chunks of max_batch, b1 printed 0/1."""
    m = boldc.Module()
    rng = np.random.default_rng(1)
    w = m.add_param("w", boldc.tensor("b1", 70, 100), rng.random((70, 100)) < 0.5)
    fb = boldc.FunctionBuilder(m, "forward", [("x", boldc.tensor("b1", "N", 100))])
    fb.ret(fb.op("threshold", [fb.op("blinear", [fb.args[0], w])], {"tau": 2}))
    bir = tmp_path / "b.bir"
    boldc.save(m, bir)
    out = _export(cli, tmp_path, bir, "--max-batch", "3")
    _make(out, f"CFLAGS={STRICT}")
    x = rng.random((8, 100)) < 0.5
    x.astype(np.uint8).tofile(out / "x.bin")
    run = _run(out, "x.bin")
    assert run.returncode == 0, run.stderr
    assert np.array_equal(_parse(run.stdout)[0].astype(bool), boldc.interpret(m, x))


def test_export_of_a_fixed_batch_model(cli, tmp_path):
    """The digits CNN converted with a fixed input shape 3x1x8x8 (no batch symbol): one
    call computes all three samples, and main prints each output on one line."""
    m = boldc.convert(EXAMPLES / "digits_cnn.onnx", input_shapes={"x": [3, 1, 8, 8]})
    bir = tmp_path / "fixed.bir"
    boldc.save(m, bir)
    out = _export(cli, tmp_path, bir)
    _make(out, f"CFLAGS={STRICT}")
    x = np.random.default_rng(6).standard_normal((3, 1, 8, 8)).astype("<f4")
    x.tofile(out / "x.bin")
    run = _run(out, "x.bin")
    assert run.returncode == 0, run.stderr
    got = _parse(run.stdout)[0]
    assert got.shape == (1, 30), "one line with the whole [3, 10] output"
    want = boldc.interpret(m, x)
    assert float_close(got.reshape(3, 10).astype(np.float32), want)
    assert np.array_equal(got.reshape(3, 10).astype(np.float32), boldc.compile(m).infer(x))


def _sanitizers_unusable() -> str | None:
    """Why this machine's C compiler cannot build and run with ASan + UBSan, or None."""
    import tempfile

    cc = os.environ.get("CC", "cc")
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "probe.c"
        src.write_text("#include <stdlib.h>\nint main(void) { char *p = malloc(4); p[0] = 1; free(p); return 0; }\n")
        try:
            built = subprocess.run([cc, *SANITIZE.split(), "-o", str(Path(d) / "probe"), str(src)],
                                   capture_output=True, text=True, timeout=120)
        except OSError as exc:
            return f"the C compiler {cc} cannot be run ({exc})"
        if built.returncode != 0:
            return f"{cc} cannot build with -fsanitize=address,undefined: {' '.join(built.stderr.split())[:200]}"
        ran = subprocess.run([str(Path(d) / "probe")], capture_output=True, text=True, timeout=60)
        if ran.returncode != 0:
            return f"a program built with ASan does not run here: {' '.join(ran.stderr.split())[:200]}"
    return None


def _needs_sanitizers() -> None:
    reason = _sanitizers_unusable()
    if reason:
        pytest.skip(reason)


def _clean(run: subprocess.CompletedProcess) -> None:
    """No sanitizer report (and not their exit code 99 or a signal)."""
    assert not any(r in run.stderr for r in SANITIZER_REPORTS), run.stderr[-4000:]
    assert run.returncode in (0, 2), (run.returncode, run.stderr[-4000:])


def test_sanitized_build_runs_clean(cli, tmp_path):
    """The digits CNN (converted from the shipped ONNX) built with the Makefile's SANITIZE=1,
    SIMD kernels on, batch 5 through max_batch 2 (chunks and a partial chunk)."""
    _needs_sanitizers()
    m = boldc.convert(Path(__file__).resolve().parent.parent / "examples" / "digits_cnn.onnx")
    bir = tmp_path / "cnn.bir"
    boldc.save(m, bir)
    out = _export(cli, tmp_path, bir, "--max-batch", "2")
    _make(out, "SANITIZE=1", "EXTRA_CFLAGS=-Werror", "ARCH=-march=native")
    x = np.random.default_rng(2).random((5, 1, 8, 8)).astype("<f4")
    x.tofile(out / "x.bin")
    run = _run(out, "x.bin", env=dict(os.environ, **SANITIZER_ENV))
    _clean(run)
    assert run.returncode == 0, run.stderr[-3000:]
    want = boldc.compile(m).infer(x)
    assert np.array_equal(_parse(run.stdout)[0].astype(np.float32), want)
    x[:, :, :, :3].tofile(out / "short.bin")  # not a whole number of samples
    bad = _run(out, "short.bin", env=dict(os.environ, **SANITIZER_ENV))
    _clean(bad)
    assert bad.returncode == 2 and "whole number of samples" in bad.stderr


def _checkpoint_mutations(raw: bytes, count: int, seed: int) -> list[bytes]:
    """Seeded corruptions of a checkpoint, most with the CRC recomputed so that the checks
    behind it (header, table, size) are reached."""
    import struct
    import zlib

    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        data = bytearray(raw[:-4])
        kind = k % 4
        if kind == 0:  # a header field
            at = int(rng.integers(8, 40))
            data[at] = int(rng.integers(0, 256))
        elif kind == 1:  # anywhere
            data[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
        elif kind == 2:  # cut
            del data[int(rng.integers(0, len(data))):]
        else:  # bytes added
            data += bytes(rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8))
        out.append(bytes(data) + struct.pack("<I", zlib.crc32(bytes(data))))
    return out


@pytest.mark.parametrize("model", ["digits_mlp", "digits_cnn"])
def test_sanitized_training_export_runs_clean(cli, tmp_path, model):
    """`compile --train` built with SANITIZE=1: two epochs, a resume from the checkpoint
    they wrote, then the bad-input paths (corrupt, truncated, extended and fuzzed
    checkpoints, a truncated data file, labels out of range, files of different sample
    counts, a missing file): every run ends with exit 0 or 2 and no sanitizer report."""
    _needs_sanitizers()
    bir = tmp_path / f"{model}.bir"
    boldc.save(boldc.convert(EXAMPLES / f"{model}.onnx"), bir)
    out = _export(cli, tmp_path, bir, "--train", "--total-steps", "20", "--max-batch", "16")
    _make(out, "SANITIZE=1", "EXTRA_CFLAGS=-Werror", "ARCH=-march=native")
    data = np.load(EXAMPLES / "digits_train.npz")
    x, y = data["x"][:40], data["y"][:40].astype("<i4")
    x.astype("<f4").tofile(out / "x.bin")
    y.tofile(out / "y.bin")
    env = dict(os.environ, **SANITIZER_ENV)

    def train(*args: str) -> subprocess.CompletedProcess:
        run = subprocess.run(["./model_train", *args], cwd=out, capture_output=True, text=True, timeout=600, env=env)
        _clean(run)
        return run

    first = train("2", "out.ckpt", "x.bin", "y.bin")
    assert first.returncode == 0 and first.stdout.count("epoch") == 2, first.stderr[-3000:]
    resumed = train("-r", "out.ckpt", "1", "more.ckpt", "x.bin", "y.bin")
    assert resumed.returncode == 0 and (out / "more.ckpt").exists(), resumed.stderr[-3000:]
    state = training_module(boldc.load(bir), TrainOptions.from_kwargs({"total_steps": 20}))
    assert boldc.load_checkpoint(state, out / "more.ckpt") == {"epoch": 1}  # C wrote it, Python reads it

    raw = (out / "out.ckpt").read_bytes()
    (out / "flip.ckpt").write_bytes(raw[:100] + bytes([raw[100] ^ 4]) + raw[101:])
    (out / "short.ckpt").write_bytes(raw[:len(raw) // 2])
    (out / "long.ckpt").write_bytes(_checkpoint_mutations(raw, 4, 0)[3])
    for name, message in (("flip.ckpt", "checksum mismatch"), ("short.ckpt", "checksum mismatch"),
                          ("long.ckpt", "its size is not the one"), ("x.bin", "not a boldc checkpoint")):
        bad = train("-r", name, "1", "o.ckpt", "x.bin", "y.bin")
        assert bad.returncode == 2 and message in bad.stderr, (name, bad.stderr[-2000:])
    for k, mutated in enumerate(_checkpoint_mutations(raw, 12, 1)):
        (out / "fuzz.ckpt").write_bytes(mutated)
        python_accepts = True
        try:
            boldc.load_checkpoint(state.copy(), out / "fuzz.ckpt")
        except boldc.BoldcError:
            python_accepts = False
        run = train("-r", "fuzz.ckpt", "1", "o.ckpt", "x.bin", "y.bin")
        assert (run.returncode == 0) == python_accepts, (k, run.stderr[-2000:])

    (out / "x_cut.bin").write_bytes((out / "x.bin").read_bytes()[:-3])
    (y + 10).astype("<i4").tofile(out / "y_bad.bin")
    y[:-1].tofile(out / "y_short.bin")
    for args, message in ((("x_cut.bin", "y.bin"), "not a whole number of samples"),
                          (("x.bin", "y_bad.bin"), "label is out of range"),
                          (("x.bin", "y_short.bin"), "different numbers of samples"),
                          (("x.bin", "missing.bin"), "cannot open data file")):
        bad = train("1", "bad.ckpt", *args)
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr[-2000:])
    assert not (out / "bad.ckpt").exists()


def test_corrupt_or_foreign_weights_are_refused(cli, tmp_path):
    out = _export(cli, tmp_path, GOLDEN / "boolean_cnn.bir")
    _make(out)
    np.zeros((1, 1, 8, 8), "<f4").tofile(out / "x.bin")
    blob = (out / "model_weights.bin").read_bytes()
    (out / "bad.bin").write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    run = _run(out, "-w", "bad.bin", "x.bin")
    assert run.returncode == 2 and "checksum" in run.stderr
    (out / "short.bin").write_bytes(blob[:100])
    run = _run(out, "-w", "short.bin", "x.bin")
    assert run.returncode == 2 and "size" in run.stderr
    (tmp_path / "o").mkdir()
    other = _export(cli, tmp_path / "o", GOLDEN / "boolean_mlp.bir")
    run = _run(out, "-w", str(other / "model_weights.bin"), "x.bin")
    assert run.returncode == 2 and "another model" in run.stderr
    np.zeros(10, "<f4").tofile(out / "odd.bin")
    run = _run(out, "odd.bin")
    assert run.returncode == 2 and "whole number of samples" in run.stderr


def test_cli_errors(cli, tmp_path):
    bir = GOLDEN / "boolean_cnn.bir"
    out = _export(cli, tmp_path, bir)
    before = sorted(p.name for p in out.iterdir())
    code, _, err = cli("compile", bir, "-o", out)
    assert code == 2 and "not empty" in err and err.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == before
    code, _, err = cli("compile", bir, "-o", out, "--force", "--name", "net")
    assert code == 0 and (out / "net.c").exists() and not (out / "model.c").exists()
    code, _, err = cli("compile", bir, "-o", tmp_path / "t", "--eta", "2")
    assert code == 2 and "--eta given without --train" in err
    code, _, err = cli("compile", tmp_path / "missing.bir", "-o", tmp_path / "m")
    assert code == 2 and "no such" in err
    code, _, err = cli("compile", bir, "-o", tmp_path / "no" / "parent")
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "t").exists() and not (tmp_path / "m").exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not leftovers, f"temp folders left behind: {leftovers}"


def test_exported_training_program_matches_compiled_model(cli, tmp_path):
    """`compile --train`: the folder builds the training example; two epochs of it write a
    checkpoint equal (b1 bit for bit, floats within tolerance) to the state of a
    CompiledModel trained on the same batches, which boldc.load_checkpoint reads; -r
    resumes from it."""
    bir = tmp_path / "digits.bir"
    boldc.save(boldc.convert(EXAMPLES / "digits_mlp.onnx"), bir)
    out = _export(cli, tmp_path, bir, "--train", "--total-steps", "10", "--max-batch", "32")
    assert (out / "train_main.c").exists()
    _make(out, f"CFLAGS={STRICT}", "ARCH=-march=native")
    data = np.load(EXAMPLES / "digits_train.npz")
    x, y = data["x"][:150], data["y"][:150].astype("<i4")
    x.astype("<f4").tofile(out / "x.bin")
    y.tofile(out / "y.bin")
    run = subprocess.run(["./model_train", "2", "out.ckpt", "x.bin", "y.bin"], cwd=out, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("epoch") == 2
    cm = boldc.compile(boldc.load(bir), train=True, total_steps=10, max_batch=32)
    for _ in range(2):
        for s in range(0, 150, 32):
            cm.train_step(x[s:s + 32], y[s:s + 32])
    state = training_module(boldc.load(bir), TrainOptions.from_kwargs({"total_steps": 10}))
    assert boldc.load_checkpoint(state, out / "out.ckpt") == {"epoch": 2}
    for name, p in state.params.items():
        got = cm.get_param(name)
        if p.type.dtype.is_float:
            assert float_close(got, p.data), name
        else:
            assert np.array_equal(got, p.data), name
    resumed = subprocess.run(["./model_train", "-r", "out.ckpt", "1", "more.ckpt", "x.bin", "y.bin"], cwd=out,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0 and (out / "more.ckpt").exists(), resumed.stderr
    bad = subprocess.run(["./model_train", "-r", "x.bin", "1", "o.ckpt", "x.bin", "y.bin"], cwd=out,
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "not a boldc checkpoint" in bad.stderr
    (y + 10).astype("<i4").tofile(out / "bad_y.bin")
    bad = subprocess.run(["./model_train", "1", "o.ckpt", "x.bin", "bad_y.bin"], cwd=out, capture_output=True,
                         text=True, timeout=600)
    assert bad.returncode == 2 and "label is out of range" in bad.stderr and not (out / "o.ckpt").exists()


def _one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_force_replaces_only_an_export_or_an_empty_folder(cli, tmp_path):
    bir = GOLDEN / "boolean_mlp.bir"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    code, _, err = cli("compile", bir, "-o", mine, "--force")
    _one_line_error(code, err, str(mine), "neither")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("compile", bir, "-o", empty, "--force")[0] == 0 and (empty / ".boldc-export").is_file()
    code, _, err = cli("compile", bir, "-o", empty, "--force", "--name", "other")
    assert code == 0 and (empty / "other.c").exists() and not (empty / "model.c").exists(), err


def test_folder_write_errors_are_one_line(cli, tmp_path, monkeypatch):
    """An OS error while writing or renaming the folder: one line naming it, the old
    folder left as it was, no temp folder left behind."""
    bir = GOLDEN / "boolean_mlp.bir"
    out = _export(cli, tmp_path, bir)
    before = sorted(p.name for p in out.iterdir())
    monkeypatch.chdir(out)
    code, _, err = cli("compile", bir, "-o", ".", "--force")  # renaming "." away: EBUSY or EINVAL
    _one_line_error(code, err, ".: cannot write the folder")
    assert sorted(p.name for p in out.iterdir()) == before
    monkeypatch.chdir(tmp_path)
    if Path("/proc/self").is_dir():  # Linux: a directory in which nobody can create a folder
        code, _, err = cli("compile", bir, "-o", "/proc/boldc_out")
        _one_line_error(code, err, "/proc/boldc_out: cannot write the folder")
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("args,needle", [
    (["--name", "main"], "taken by a file of the exported folder (main.c, main.o)"),
    (["--name", "Makefile"], "taken by a file of the exported folder (Makefile)"),
    (["--name", "train_main", "--train"], "train_main.c"),
    (["--name", "bd_float"], "taken by the boldc runtime"),
    (["--name", "boldc_rt"], "taken by the boldc runtime"),
    (["--name", "bd"], "taken by the boldc runtime"),
    (["--name", "my model"], "must be a C identifier"),
    (["--name", "static"], "must be a C identifier"),
    (["--name", "_model"], "must be a C identifier"),
    (["--max-batch", "3000000000"], "max_batch must be in 1..65536"),
    (["--threads", "5000"], "threads must be in 1..1024"),
])
def test_bad_names_and_bounds_are_refused(cli, tmp_path, args, needle):
    code, _, err = cli("compile", GOLDEN / "boolean_mlp.bir", "-o", tmp_path / "out", *args)
    _one_line_error(code, err, needle)
    assert not (tmp_path / "out").exists()


def test_an_arena_over_the_limit_is_refused_with_its_size(cli, tmp_path):
    m = boldc.Module()
    fb = boldc.FunctionBuilder(m, "forward", [("x", boldc.tensor("f32", "N", 4, 256, 256))])
    fb.ret(fb.op("relu", [fb.args[0]]))
    bir = tmp_path / "big.bir"
    boldc.save(m, bir)
    code, _, err = cli("compile", bir, "-o", tmp_path / "out", "--max-batch", "65536")
    _one_line_error(code, err, "the arena would take", "GiB", "max_batch=65536")
    with pytest.raises(boldc.BoldcError, match=r"arena would take [\d,]+ bytes \(\d+\.\d GiB\)"):
        boldc.compile(m, max_batch=65536)
    with pytest.raises(boldc.BoldcError, match="max_batch must be in"):
        boldc.compile(m, max_batch=2**31)
