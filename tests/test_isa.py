"""The ISA layer from the outside (docs/backend.md, "The ISA layer"): every ISA file builds
warning-free for every target, `isa=` selects and reports the kernels it names or is
refused with one line where this machine cannot build or run them, `threads=` is the number
of threads calls use, and the roofline microbenchmark builds and runs for every ISA.
The kernels' values are checked against the interpreter by the variant-parametrized op and
model tests (backend_check.VARIANTS) and, for NEON, by tests/test_isa_neon.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import boldc
from boldc.backend import build
from boldc.backend.api import default_threads
from boldc.backend.build import ISA_FLAGS, RUNTIME_FILES, check_isa, find_compiler, runtime_text, simd_path
from boldc.errors import BoldcError

from conftest import GOLDEN

ROOT = Path(__file__).resolve().parent.parent
CROSS_CC = "aarch64-linux-gnu-gcc"
QEMU = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
STRICT = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off"]
X86_ISAS = ["portable", "avx2", "avx512", "amx", "native"]


def _host_is_x86() -> bool:
    return simd_path("avx2") == "avx2"


def _runs_here(isa: str) -> None:
    try:
        check_isa(isa)
    except BoldcError as exc:
        pytest.skip(f"this host cannot run the {isa} kernels: {exc}")


@pytest.fixture(scope="module")
def runtime_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("runtime")
    for name in RUNTIME_FILES:
        (d / name).write_text(runtime_text(name))
    return d


def _compile_runtime(cc: str, flags: list[str], folder: Path) -> None:
    for name in (n for n in RUNTIME_FILES if n.endswith(".c")):
        run = subprocess.run(cc.split() + STRICT + flags + ["-c", name, "-o", os.devnull], cwd=folder,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, f"{name} with {' '.join(flags) or 'no flags'}:\n{run.stderr}"


@pytest.mark.parametrize("isa", X86_ISAS)
def test_runtime_builds_warning_free_for_every_x86_isa(runtime_dir, isa):
    if not _host_is_x86():
        pytest.skip("the x86 ISAs need an x86 compiler; this one is not")
    _compile_runtime(find_compiler(), ISA_FLAGS[isa], runtime_dir)


def test_runtime_builds_warning_free_for_neon(runtime_dir):
    if shutil.which(CROSS_CC) is None:
        pytest.skip(f"the aarch64 cross compiler ({CROSS_CC}) is not installed: apt-get install gcc-aarch64-linux-gnu")
    _compile_runtime(CROSS_CC, ISA_FLAGS["neon"], runtime_dir)
    assert simd_path("neon", CROSS_CC) == "neon"
    assert simd_path("portable", CROSS_CC) == "portable"  # -DBD_NO_SIMD wins on aarch64 too


def test_each_named_isa_selects_its_kernels():
    if not _host_is_x86():
        pytest.skip("the x86 ISAs need an x86 compiler; this one is not")
    assert [simd_path(i) for i in ("portable", "avx2", "avx512", "amx")] == ["portable", "avx2", "avx512-vpopcntdq",
                                                                             "avx512-amx"]


def test_compile_reports_the_kernels_it_built():
    cnn = boldc.load(GOLDEN / "boolean_cnn.bir")
    x = np.random.default_rng(1).standard_normal((5, 1, 8, 8)).astype(np.float32)
    want = boldc.interpret(cnn, x)
    for isa in ("native", "portable", "avx2", "avx512", "amx"):
        try:
            check_isa(isa)
        except BoldcError:
            continue  # test_native_is_the_best_path_of_this_host covers the refusal
        cm = boldc.compile(cnn, isa=isa, threads=1)
        assert cm.simd == (simd_path("native") if isa == "native" else build.SIMD_PATHS[isa])
        assert cm.build_info.startswith(f"simd={cm.simd} ")
        np.testing.assert_allclose(cm.infer(x), want, rtol=1e-5, atol=1e-4)


def test_native_is_the_best_path_of_this_host():
    """On a CPU with AVX-512 VPOPCNTDQ "native" builds those kernels (with the AMX tiles where
    the CPU has AMX-INT8), else AVX2 where the CPU has AVX2 + FMA + POPCNT (the other ISAs are
    then refused or portable)."""
    runnable = []
    for isa in ("amx", "avx512", "avx2", "neon"):
        try:
            check_isa(isa)
            runnable.append(build.SIMD_PATHS[isa])
        except BoldcError:
            pass
    assert simd_path("native") == (runnable[0] if runnable else "portable")


def test_an_isa_the_compiler_cannot_target_is_one_line():
    if not _host_is_x86():
        pytest.skip("this host's compiler targets aarch64")
    with pytest.raises(BoldcError, match=r"isa 'neon': the C compiler .* does not target it") as err:
        boldc.compile(boldc.load(GOLDEN / "boolean_cnn.bir"), isa="neon")
    assert "\n" not in str(err.value) and "boldc compile MODEL -o DIR" in str(err.value)
    with pytest.raises(BoldcError, match="unknown isa 'sse9'"):
        boldc.compile(boldc.load(GOLDEN / "boolean_cnn.bir"), isa="sse9")


def test_an_isa_the_cpu_lacks_is_refused_before_building(monkeypatch):
    """A CPU without VPOPCNTDQ (faked: -march=native's macros without it) gets a one-line
    error naming what it lacks instead of a library that dies of an illegal instruction."""
    if not _host_is_x86():
        pytest.skip("the x86 ISAs need an x86 compiler; this one is not")
    real = build._predefined

    def without_vpopcntdq(cc, flags):
        macros = real(cc, flags)
        return macros - {"__AVX512VPOPCNTDQ__"} if flags == ("-march=native",) and macros else macros

    monkeypatch.setattr(build, "_predefined", without_vpopcntdq)
    with pytest.raises(BoldcError, match=r"isa 'avx512': this machine's CPU lacks AVX512VPOPCNTDQ") as err:
        boldc.compile(boldc.load(GOLDEN / "boolean_cnn.bir"), isa="avx512")
    assert "\n" not in str(err.value)


def test_threads_is_the_number_calls_use():
    """threads=2 runs on 2 threads from the first call (it used to be only the maximum,
    with calls on 1 thread until set_threads); the default is this process's cores."""
    cnn = boldc.load(GOLDEN / "boolean_cnn.bir")
    x = np.random.default_rng(2).standard_normal((6, 1, 8, 8)).astype(np.float32)
    two = boldc.compile(cnn, threads=2)
    assert two.threads == 2 and two._ctx.threads == 2 and "openmp=yes" in two.build_info
    two.set_threads(1)
    assert two.threads == 1 and two._ctx.threads == 1
    one = boldc.compile(cnn, threads=1)
    assert one.threads == 1 and "openmp=no" in one.build_info
    assert np.array_equal(one.infer(x), two.infer(x))
    default = boldc.compile(cnn)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert default.threads == default_threads() == min(cores, 1024)
    assert default.options.max_threads == default.threads


def _popcount_peak(cc: str, flags: list[str], tmp_path: Path, runner: list[str]) -> dict[str, str]:
    exe = tmp_path / "popcount_peak"
    built = subprocess.run(cc.split() + STRICT + flags + [str(ROOT / "bench" / "popcount_peak.c"), "-o", str(exe)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    run = subprocess.run(runner + [str(exe), "20000"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return dict(line.split() for line in run.stdout.splitlines())


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
def test_roofline_benchmark_builds_and_runs_for_every_isa(tmp_path, isa):
    """bench/popcount_peak.c used to be AVX-512 only (it did not compile on an AVX2 CPU)."""
    _runs_here(isa)
    rates = _popcount_peak(find_compiler(), ISA_FLAGS[isa], tmp_path, [])
    assert rates["isa"] == build.SIMD_PATHS[isa]
    assert float(rates["popcount"]) > 0 and float(rates["xor_popcount_add"]) > 0


def test_roofline_benchmark_runs_with_neon_under_qemu(tmp_path):
    if shutil.which(CROSS_CC) is None or QEMU is None:
        pytest.skip(f"needs {CROSS_CC} and qemu-aarch64: apt-get install gcc-aarch64-linux-gnu qemu-user")
    rates = _popcount_peak(CROSS_CC, ["-static"], tmp_path, [QEMU])
    assert rates["isa"] == "neon" and float(rates["popcount_simd"]) > 0


def test_avx2_variant_skips_where_the_host_cannot_run_it_or_simd_already_does(monkeypatch):
    """backend_check's "avx2" variant: a host without AVX2 (faked: check_isa refuses) and an
    AVX2 host (faked: "native" selects avx2) skip it, saying why; here it runs avx2."""
    import backend_check

    cnn = boldc.load(GOLDEN / "boolean_cnn.bir")

    def refuse(isa, cc=None):
        raise BoldcError(f"isa '{isa}': this machine's CPU lacks AVX2")

    with monkeypatch.context() as m:
        m.setattr(build, "check_isa", refuse)
        with pytest.raises(pytest.skip.Exception, match="'avx2' variant cannot run on this host: .* lacks AVX2"):
            backend_check.build_variant(cnn, "avx2")
    with monkeypatch.context() as m:
        m.setattr(build, "simd_path", lambda isa, cc=None: "avx2")
        with pytest.raises(pytest.skip.Exception, match="'simd' variant .* already runs the avx2 kernels"):
            backend_check.build_variant(cnn, "avx2")
    _runs_here("avx2")
    if simd_path("native") == "avx2":
        pytest.skip("this host's best path is AVX2: the 'simd' variant runs it")
    assert backend_check.build_variant(cnn, "avx2", threads=1).simd == "avx2"
