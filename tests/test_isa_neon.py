"""The NEON kernels (runtime/bd_isa_neon.c) on aarch64, tested from an x86 host: the
folder `boldc compile -o DIR` writes is cross-compiled with Debian's aarch64 compiler
(`make CC=aarch64-linux-gnu-gcc`, linked static so that qemu needs no aarch64 libraries)
and run under qemu-user. Its outputs must equal the interpreter's (b1 and integers bit for
bit, f32 within the tolerance of backend_check.float_close), and two training steps of the
exported training program (16- and 8-bit signals; the int8 kernels also with the dot-product
extension) must leave the b1 weights the interpreter's steps leave, bit for bit (f32 state
within STATE_RTOL of its scale). The integer GEMM micro-kernels are also checked alone
against the sums they compute. .ci/run installs the compiler and qemu; the
tests skip, saying so, where they cannot be had."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import boldc
from boldc import FunctionBuilder, Module, tensor
from boldc.backend.build import runtime_text
from boldc.backend.export import export
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


def _cross_build(out: Path, *targets: str, cflags: str = "") -> None:
    """make CC=aarch64-linux-gnu-gcc, static, warnings as errors (and ``cflags``); the NEON
    kernels built."""
    run = subprocess.run([MAKE, "-C", str(out), f"CC={CROSS_CC}", "LDFLAGS=-static",
                          f"EXTRA_CFLAGS=-Werror {cflags}".strip(), *targets], capture_output=True, text=True,
                         timeout=600)
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


DOTPROD = "-march=armv8.2-a+dotprod"  # the int8 gradient kernels then use SDOT (bd_isa_neon.c)


@pytest.mark.parametrize("name,bits,cflags", [("digits_mlp", 16, ""), ("digits_cnn", 16, ""), ("digits_cnn", 8, ""),
                                              ("digits_cnn", 8, DOTPROD)])
def test_training_steps_on_neon_match_the_interpreter(tmp_path, name, bits, cflags):
    """The export of `compile --train` (with `bits`-bit signals: the int16 or int8 gradient
    kernels), cross-built: two epochs of one batch (two steps) under qemu; the checkpoint they
    write holds the interpreter's b1 weights after the same two steps."""
    module = boldc.convert(EXAMPLES / f"{name}.onnx")
    options = {"eta": 10.0, "total_steps": 10, "signal_bits": bits}  # a large eta: many flips to compare
    out = export(training_module(module, TrainOptions.from_kwargs(options)), tmp_path / "out", max_batch=16,
                 train=True)
    _cross_build(out, "model_train", cflags=cflags)
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


# The integer GEMM micro-kernels of bd_isa.h against the sums they stand for, on random panels:
# every group count up to 40, A k-major and row-major, the int8 signal biased (a = z + 128),
# the tile's corner cut to every row count and many column counts, stored or added into C,
# which stays untouched outside the corner.
KERNEL_CHECK = r"""
#include "bd_isa.h"
#include <stdio.h>
#include <stdlib.h>
static int16_t i16(const unsigned char *p) { int16_t v; memcpy(&v, p, 2); return v; }
int main(void) {
    static unsigned char A[4 * BD_MR * 40], B[4 * BD_NR * 40];
    int32_t bsum[BD_NR], C[BD_MR * 40], C0[BD_MR * 40];
    const long ldc = 40;
    long bad = 0;
    srand(1);
    for (int kg = 1; kg <= 40; ++kg)
        for (int layout = 0; layout < 2; ++layout)
            for (int wide = 0; wide < 2; ++wide) {
                const long ars = layout ? kg : 1, aks = layout ? 1 : BD_MR;
                const int rows = 1 + kg % BD_MR, cols = 1 + (kg * 7 + layout) % BD_NR, add = (kg + wide) % 2;
                for (int i = 0; i < 4 * BD_MR * kg; ++i) A[i] = (unsigned char)rand();
                for (int i = 0; i < 4 * BD_NR * kg; i += 1 + wide) { /* e = -1, 0, 1 as int8 or int16 */
                    const int16_t e = (int16_t)(rand() % 3 - 1);
                    if (wide) memcpy(B + i, &e, 2); else B[i] = (unsigned char)(int8_t)e;
                }
                for (int j = 0; j < BD_NR; ++j) {
                    bsum[j] = 0;
                    for (int t = 0; t < 4 * kg; ++t) bsum[j] += (int8_t)B[4 * BD_NR * (t / 4) + 4 * j + t % 4];
                }
                for (int i = 0; i < BD_MR * 40; ++i) C[i] = C0[i] = rand() % 1000 - 500;
                if (wide) bd_isa_igemm_i16(kg, A, ars, aks, B, C, ldc, rows, cols, add);
                else bd_isa_igemm_i8(kg, A, ars, aks, B, bsum, C, ldc, rows, cols, add);
                for (int r = 0; r < BD_MR; ++r)
                    for (int j = 0; j < 40; ++j) {
                        long want = C0[r * ldc + j];
                        if (r < rows && j < cols) {
                            want = add ? want : 0;
                            for (int q = 0; q < kg; ++q) {
                                const unsigned char *a = A + 4 * (r * ars + q * aks), *b = B + 4 * (q * BD_NR + j);
                                if (wide) want += i16(a) * i16(b) + i16(a + 2) * i16(b + 2);
                                else for (int t = 0; t < 4; ++t) want += (a[t] - 128) * (int8_t)b[t];
                            }
                        }
                        bad += C[r * ldc + j] != want;
                    }
            }
    printf("%s %ld\n", BD_SIMD_NAME, bad);
    return 0;
}
"""


@pytest.mark.parametrize("cflags", ["", DOTPROD])
def test_integer_gemm_kernels_are_exact_on_neon(tmp_path, cflags):
    for name in ("boldc_rt.h", "bd_isa.h", "bd_isa_neon.c"):
        (tmp_path / name).write_text(runtime_text(name))
    (tmp_path / "check.c").write_text(KERNEL_CHECK)
    run = subprocess.run([CROSS_CC, "-std=c99", "-O2", "-Wall", "-Werror", *cflags.split(), "-static", "-o", "check",
                          "check.c", "bd_isa_neon.c"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert _qemu(tmp_path, "./check").stdout.split() == ["neon", "0"], "NEON integer kernels differ from their sums"
