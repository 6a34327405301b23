"""The NEON kernels (runtime/bd_isa_neon.c) on aarch64, tested from an x86 host: the
folder `boldc compile -o DIR` writes is cross-compiled with Debian's aarch64 compiler
(`make CC=aarch64-linux-gnu-gcc`, linked static so that qemu needs no aarch64 libraries)
and run under qemu-user. Its outputs must equal the interpreter's (b1 and integers bit for
bit, f32 within the tolerance of backend_check.float_close), and two training steps of the
exported training program must leave the b1 weights the interpreter's steps leave, bit for
bit (f32 state within STATE_RTOL of its scale). .ci/run installs the compiler and qemu; the
tests skip, saying so, where they cannot be had."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import boldc
from boldc import FunctionBuilder, Module, tensor
from boldc.backend.training import TrainOptions, training_module

from backend_check import float_close

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CROSS_CC = "aarch64-linux-gnu-gcc"
QEMU = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
MAKE = shutil.which("make")
STATE_RTOL = 1e-5  # as tests/test_train_c.py: relative to the tensor's largest magnitude

pytestmark = pytest.mark.skipif(
    shutil.which(CROSS_CC) is None or QEMU is None or MAKE is None,
    reason=f"needs make, the aarch64 cross compiler ({CROSS_CC}) and qemu-user (qemu-aarch64): "
           "apt-get install gcc-aarch64-linux-gnu qemu-user (.ci/run installs them where it can)")


def _export(cli, tmp_path: Path, module: Module, *options: str) -> Path:
    bir, out = tmp_path / "model.bir", tmp_path / "out"
    boldc.save(module, bir)
    code, _, err = cli("compile", bir, "-o", out, *options)
    assert code == 0, err
    return out


def _cross_build(out: Path, *targets: str) -> None:
    """make CC=aarch64-linux-gnu-gcc, static, warnings as errors; the NEON kernels built."""
    run = subprocess.run([MAKE, "-C", str(out), f"CC={CROSS_CC}", "LDFLAGS=-static", "EXTRA_CFLAGS=-Werror",
                          *targets], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    for program in targets or ("model",):
        assert b"simd=neon" in (out / program).read_bytes(), f"{program} was not built with the NEON kernels"


def _qemu(out: Path, *args: str) -> subprocess.CompletedProcess:
    run = subprocess.run([QEMU, *args], cwd=out, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return run


def _outputs(stdout: str, n_outputs: int) -> list[np.ndarray]:
    """main.c's lines "<output index>: values" as one array per output (a row per sample)."""
    rows: list[list] = [[] for _ in range(n_outputs)]
    for line in stdout.splitlines():
        k, _, values = line.partition(":")
        rows[int(k)].append([float(v) for v in values.split()])
    return [np.array(r, dtype=np.float64) for r in rows]


def boolean_layers() -> Module:
    """b1 x -> bconv2d 70->13 (two words per pixel: a tail word) -> s (integer) and
    threshold -> flatten -> blinear -> l (integer): the binary GEMMs (bgemm4 on pixels,
    bgemm_few on a batch below 4), the integer threshold and the bit repacking."""
    rng = np.random.default_rng(3)
    m = Module()
    w = m.add_param("c.w", tensor("b1", 13, 70, 3, 3), rng.random((13, 70, 3, 3)) < 0.5)
    v = m.add_param("l.w", tensor("b1", 37, 13 * 36), rng.random((37, 13 * 36)) < 0.5)
    fb = FunctionBuilder(m, "forward", [("x", tensor("b1", "N", 70, 6, 6))])
    s = fb.op("bconv2d", [fb.args[0], w], {"pad": [1, 1, 1, 1]})
    h = fb.op("flatten", [fb.op("threshold", [s])])
    fb.ret(s, fb.op("blinear", [h, v]))
    return m


def test_boolean_layers_are_bit_exact_on_neon(cli, tmp_path):
    module = boolean_layers()
    out = _export(cli, tmp_path, module, "--max-batch", "3")
    _cross_build(out)
    x = np.random.default_rng(4).random((7, 70, 6, 6)) < 0.5  # chunks of 3, 3 and 1 samples
    x.astype(np.uint8).tofile(out / "x.bin")
    got = _outputs(_qemu(out, "./model", "x.bin").stdout, 2)
    want = boldc.interpret(module, x)
    for g, w in zip(got, want):
        assert np.array_equal(g, w.reshape(len(x), -1)), "NEON integer outputs differ from the interpreter"


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_digits_inference_on_neon_matches_the_interpreter(cli, tmp_path, name):
    module = boldc.convert(EXAMPLES / f"{name}.onnx")
    out = _export(cli, tmp_path, module, "--max-batch", "4")
    _cross_build(out)
    x = np.load(EXAMPLES / "digits_test.npz")["x"][:9].astype("<f4")  # chunks of 4, 4 and 1
    shape = module.function().args[0].type.shape[1:]
    x = x.reshape((len(x), *shape))
    x.tofile(out / "x.bin")
    got = _outputs(_qemu(out, "./model", "x.bin").stdout, 1)[0]
    want = boldc.interpret(module, x)
    assert float_close(got.astype(np.float32), want), f"NEON logits differ from the interpreter's: {got} vs {want}"


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_training_steps_on_neon_match_the_interpreter(cli, tmp_path, name):
    """`compile --train`, cross-built: two epochs of one batch (two steps) under qemu; the
    checkpoint they write holds the interpreter's b1 weights after the same two steps."""
    module = boldc.convert(EXAMPLES / f"{name}.onnx")
    options = {"eta": 10.0, "total_steps": 10}  # a large eta: many flips to compare
    out = _export(cli, tmp_path, module, "--train", "--eta", "10", "--total-steps", "10", "--max-batch", "16")
    _cross_build(out, "model_train")
    data = np.load(EXAMPLES / "digits_train.npz")
    shape = module.function().args[0].type.shape[1:]
    x, y = data["x"][:16].astype("<f4").reshape((16, *shape)), data["y"][:16].astype("<i4")
    x.tofile(out / "x.bin")
    y.tofile(out / "y.bin")
    _qemu(out, "./model_train", "2", "out.ckpt", "x.bin", "y.bin")

    ref = training_module(module, TrainOptions.from_kwargs(options))
    start = {n: p.data.copy() for n, p in ref.params.items()}
    for _ in range(2):
        boldc.interpret(ref, [x, y], "train_step")
    state = training_module(module, TrainOptions.from_kwargs(options))
    assert boldc.load_checkpoint(state, out / "out.ckpt") == {"epoch": 2}
    flips = 0
    for pname, p in ref.params.items():
        got = state.params[pname].data
        if p.type.dtype.is_float:
            scale = float(np.abs(p.data).max())
            assert float(np.abs(got.astype(np.float64) - p.data).max()) <= STATE_RTOL * scale, pname
        else:
            assert np.array_equal(got, p.data), f"@{pname} differs from the interpreter after two NEON steps"
            flips += int((p.data != start[pname]).sum()) if p.type.dtype.is_bool else 0
    assert flips > 0, "no b1 weight flipped: the steps did not test the optimizer"
