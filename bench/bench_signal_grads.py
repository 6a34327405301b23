"""The integer-signal gradient GEMMs of VGG-Small, op by op: the runtime of this checkout
against the runtime of an earlier git revision (the float-GEMM path before the integer
kernels, by default the commit that precedes them), each built the same way, called directly.

    python bench/bench_signal_grads.py [--base REV] [--isa native avx2 portable] [--threads 1 2]
                                       [--bits 16 8] [--batch 64] [--repeat 5]

Each runtime is built with cffi from its own runtime/ files (the checkout's, and
``git show REV:runtime/...``), with OpenMP and the flags of ``boldc.compile(isa=...)`` of this
checkout (which imports its own boldc, whatever is installed).
The ops are the ones a VGG-Small training step runs on the 16- or 8-bit signal of every
Boolean layer (docs/training.md, "Speed and memory"): conv2d_grad_x_int and
conv2d_grad_w_int of the five Boolean 3x3 convolutions (128-128 at 32x32, 128-256 and
256-256 at 16x16, 256-512 and 512-512 at 8x8) and linear_grad_x_int / linear_grad_w_int of
the 8192-1024 classifier, at the training batch. Both runtimes run on the same inputs and
their results are compared (they must be equal bit for bit: the sums are exact). Times are
medians of --repeat calls, the two runtimes interleaved call by call, after one warm-up
call each; the load average is printed with them (a shared machine: repeat, compare
medians).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's boldc (its build flags), not an installed one
from boldc.backend import build  # noqa: E402

DEFAULT_BASE = "e0afb8b"  # the last commit with the integer signals on the float GEMMs

# What cffi declares of each runtime, taken from that runtime's own boldc_rt.h (the old and the
# new one may differ): the three config structs and the functions this script calls.
STRUCTS = ("bd_exec", "bd_lgrad", "bd_cgrad")
FUNCTIONS = ("bd_linear_grad_x_int", "bd_linear_grad_w_int", "bd_conv2d_grad_x_int", "bd_conv2d_grad_w_int")


def cdef_of(header: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", header, flags=re.S)
    structs = [m.group(0) for m in re.finditer(r"typedef struct \{[^}]*\} (\w+);", text) if m.group(1) in STRUCTS]
    names = "|".join(FUNCTIONS)
    functions = re.findall(rf"^(?:size_t|void) (?:{names})(?:_scratch)?\([^;]*\);", text, flags=re.M)
    return "\n".join(structs + functions + ["const char *bd_build_info(void);"])


I8, I16, B1 = 1, 2, 4
CONVS = [(128, 32, 128), (128, 16, 256), (256, 16, 256), (256, 8, 512), (512, 8, 512)]  # C, H (= W), M
LINEAR = (8192, 1024)  # inputs, outputs of the Boolean classifier


def runtime_files(rev: str | None) -> dict[str, str]:
    """The runtime's .c and .h files of the checkout (rev None) or of a git revision."""
    if rev is None:
        return {f.name: f.read_text() for f in sorted((ROOT / "runtime").iterdir()) if f.suffix in (".c", ".h")}
    names = subprocess.run(["git", "ls-tree", "--name-only", rev, "runtime/"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    return {Path(n).name: subprocess.run(["git", "show", f"{rev}:{n}"], cwd=ROOT, check=True, capture_output=True,
                                         text=True).stdout for n in names if n.endswith((".c", ".h"))}


class Runtime:
    """One cffi build of a runtime: ``lib``, ``ffi`` and its build info."""

    def __init__(self, tag: str, files: dict[str, str], isa: str, directory: Path):
        import cffi

        src = directory / "src"
        src.mkdir(parents=True)
        for name, text in files.items():
            (src / name).write_text(text)
        builder = cffi.FFI()
        builder.cdef(cdef_of(files["boldc_rt.h"]))
        name = f"_bench_grads_{tag}"
        builder.set_source(name, '#include "boldc_rt.h"\n', include_dirs=[str(src)],
                           sources=[str(src / n) for n in sorted(files) if n.endswith(".c")],
                           extra_compile_args=build.c_flags(isa, openmp=True), extra_link_args=["-fopenmp"])
        spec = importlib.util.spec_from_file_location(name, builder.compile(tmpdir=str(directory / "out")))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.ffi, self.lib = module.ffi, module.lib
        self.info = self.ffi.string(self.lib.bd_build_info()).decode()

    def ptr(self, a: np.ndarray):
        return self.ffi.from_buffer("char[]", a)


def conv_ops(batch: int, bits: int, rng) -> list[tuple]:
    """(name, kind, config fields, dy, other bits, result shape) of the conv layers."""
    dtype = np.int16 if bits == 16 else np.int8
    out = []
    for c, h, m in CONVS:
        geo = {"C": c, "H": h, "W": h, "M": m, "OH": h, "OW": h, "kh": 3, "kw": 3, "sh": 1, "sw": 1, "dh": 1,
               "dw": 1, "pt": 1, "pl": 1, "groups": 1, "other_type": B1, "scale": 1.0, "pad_value": -1.0,
               "max_batch": batch, "max_threads": 2, "dy_type": I16 if bits == 16 else I8}
        info = np.iinfo(dtype)
        dy = rng.integers(info.min, info.max + 1, (batch, h, h, m)).astype(dtype)
        w = rng.integers(0, 2 ** 63, (m, 9 * ((c + 63) // 64)), dtype=np.uint64)
        x = rng.integers(0, 2 ** 63, (batch * h * h, (c + 63) // 64), dtype=np.uint64)
        name = f"conv {c}->{m} @{h}x{h}"
        out.append((name, "conv2d_grad_x_int", geo, dy, w, (batch, h, h, c)))
        out.append((name, "conv2d_grad_w_int", geo, dy, x, (m, 3, 3, c)))
    k, m = LINEAR
    fields = {"M": m, "K": k, "other_type": B1, "scale": 1.0, "max_rows": batch, "max_threads": 2,
              "dy_type": I16 if bits == 16 else I8}
    info = np.iinfo(dtype)
    dy = rng.integers(info.min, info.max + 1, (batch, m)).astype(dtype)
    out.append((f"linear {k}->{m}", "linear_grad_x_int", fields,
                dy, rng.integers(0, 2 ** 63, (m, k // 64), dtype=np.uint64), (batch, k)))
    out.append((f"linear {k}->{m}", "linear_grad_w_int", fields,
                dy, rng.integers(0, 2 ** 63, (batch, k // 64), dtype=np.uint64), (m, k)))
    return out


def call(rt: Runtime, kind: str, fields: dict, dy, other, shape, batch: int, threads: int):
    """A closure running the op once on rt (its own scratch and result), and the result."""
    struct = "bd_cgrad *" if kind.startswith("conv") else "bd_lgrad *"
    cfg = rt.ffi.new(struct, fields)
    ex = rt.ffi.new("bd_exec *", {"n": batch, "threads": threads})
    scratch = np.zeros(max(int(getattr(rt.lib, f"bd_{kind}_scratch")(cfg)), 1), np.uint8)
    out = np.zeros(shape, np.float32)
    scale = np.array(2.0 ** -10, np.float32)
    fn = getattr(rt.lib, f"bd_{kind}")
    buffers = [rt.ptr(a) for a in (dy, other, scale, out, scratch)]  # alive as long as the closure
    args = [buffers[0]] + [rt.ffi.cast(t, b) for t, b in zip(("uint64_t *", "float *", "float *", "unsigned char *"),
                                                              buffers[1:])]
    if kind.startswith("linear"):
        return (lambda keep=buffers: fn(cfg, ex, batch, *args)), out
    return (lambda keep=buffers: fn(cfg, ex, *args)), out


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default=DEFAULT_BASE, help="git revision of the old runtime (default %(default)s)")
    ap.add_argument("--isa", nargs="+", default=["native", "avx2"], choices=list(build.ISA_FLAGS))
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--bits", nargs="+", type=int, default=[16, 8], choices=[16, 8])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; old runtime: {args.base}")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for isa in args.isa:
            build.check_isa(isa)
            old = Runtime(f"old_{isa.replace('-', '_')}", runtime_files(args.base), isa, Path(tmp, f"old_{isa}"))
            new = Runtime(f"new_{isa.replace('-', '_')}", runtime_files(None), isa, Path(tmp, f"new_{isa}"))
            print(f"\nisa={isa}: old {old.info} | new {new.info}")
            print("| layer | op | bits | threads | old ms | new ms | old / new |\n|---|---|---|---|---|---|---|")
            for bits in args.bits:
                totals = {t: [0.0, 0.0] for t in args.threads}
                for name, kind, fields, dy, other, shape in conv_ops(args.batch, bits, rng):
                    for threads in args.threads:
                        (f_old, out_old), (f_new, out_new) = (call(rt, kind, fields, dy, other, shape, args.batch,
                                                                   threads) for rt in (old, new))
                        f_old(), f_new()
                        assert np.array_equal(out_old.view(np.uint32), out_new.view(np.uint32)), \
                            f"{name} {kind}: the two runtimes differ"
                        times = [(timed(f_old), timed(f_new)) for _ in range(args.repeat)]
                        t_old = statistics.median(t[0] for t in times) * 1e3
                        t_new = statistics.median(t[1] for t in times) * 1e3
                        totals[threads][0] += t_old
                        totals[threads][1] += t_new
                        print(f"| {name} | {kind} | {bits} | {threads} | {t_old:.1f} | {t_new:.1f} | "
                              f"{t_old / t_new:.2f} |", flush=True)
                for threads, (t_old, t_new) in totals.items():
                    print(f"| **all** | | {bits} | {threads} | {t_old:.1f} | {t_new:.1f} | {t_old / t_new:.2f} |")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
