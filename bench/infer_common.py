"""Shared helpers of the inference benchmarks (bench_layers.py, bench_vgg_small.py).

Not a test: timings on a shared machine vary; every script prints the load average
next to its numbers, and takes the best of several repeats (the least disturbed run).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import onnxruntime as ort

HERE = Path(__file__).resolve().parent


def best_of(repeat: int, fn, *args) -> float:
    """Smallest wall time of ``repeat`` calls ``fn(*args)`` (seconds), after one warm-up call."""
    fn(*args)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t)
    return best


def ort_session(model, threads: int, profile_prefix: str | None = None) -> ort.InferenceSession:
    """onnxruntime CPU session (a path or serialized bytes) with ``threads`` intra-op threads
    (with ``profile_prefix``: onnxruntime's profiler on, writing its JSON file there)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model if isinstance(model, (str, bytes)) else str(model), so,
                                providers=["CPUExecutionProvider"])


def ort_kernel_time(model, threads: int, feed: dict, repeat: int) -> float:
    """Best of ``repeat`` runs (after one warm-up run) of the summed kernel times of every
    node onnxruntime executes in one ``session.run`` (its profiler, microsecond clock), in
    seconds: ORT's computation alone, without the per-run overhead of ``run`` (binding
    inputs, allocating outputs), as boldc's op alone is timed by a C clock around it. A
    separate profiled session, so the profiler does not slow the plain ``run`` timings."""
    with tempfile.TemporaryDirectory() as tmp:
        session = ort_session(model, threads, profile_prefix=str(Path(tmp) / "ort"))
        for _ in range(repeat + 1):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = [(e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    totals = [sum(e["dur"] for e in kernels if lo <= e["ts"] <= hi) for lo, hi in runs[1:]]
    return min(totals) * 1e-6


def popcount_peak(isa: str = "native") -> dict[str, float | str]:
    """This core's popcount rates (64-bit words/s) measured by popcount_peak.c built with the
    flags of boldc's ``isa`` (so the roofline is that of the kernels measured beside it);
    "isa" names the path it measured (bd_isa.h's BD_SIMD_NAME)."""
    from boldc.backend.build import ISA_FLAGS

    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "popcount_peak"
        cc = os.environ.get("CC", "cc")
        built = subprocess.run([cc, "-O2", *ISA_FLAGS[isa], str(HERE / "popcount_peak.c"), "-o", str(exe)],
                               capture_output=True, text=True)
        if built.returncode != 0:
            raise SystemExit(f"bench/popcount_peak.c does not build for isa {isa} with {cc}: {built.stderr[-2000:]}")
        out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    rates = dict(line.split() for line in out.splitlines())
    return {k: (v if k == "isa" else float(v)) for k, v in rates.items()}


def runnable_isas(isas: list[str]) -> list[str]:
    """The ISAs of ``isas`` this machine can build and run (the others named, skipped)."""
    from boldc.backend.build import check_isa
    from boldc.errors import BoldcError

    keep = []
    for isa in isas:
        try:
            check_isa(isa)
            keep.append(isa)
        except BoldcError as exc:
            print(f"skipped: {exc}")
    return keep


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; else the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def machine_note() -> str:
    load = os.getloadavg()
    return (f"{cpu_name()}, {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
            "(shared machine)")
