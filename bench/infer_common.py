"""Shared helpers of the inference benchmarks (bench_layers.py, bench_vgg_small.py).

Not a test: timings on a shared machine vary; every script prints the load average
next to its numbers, and takes the best of several repeats (the least disturbed run).
"""

from __future__ import annotations

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


def ort_session(model, threads: int) -> ort.InferenceSession:
    """onnxruntime CPU session (a path or serialized bytes) with ``threads`` intra-op threads."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model if isinstance(model, (str, bytes)) else str(model), so,
                                providers=["CPUExecutionProvider"])


def popcount_peak() -> dict[str, float]:
    """This machine's popcount rates (64-bit words/s) measured by popcount_peak.c."""
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "popcount_peak"
        cc = os.environ.get("CC", "cc")
        subprocess.run([cc, "-O2", "-march=native", str(HERE / "popcount_peak.c"), "-o", str(exe)], check=True)
        out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    rates = dict(line.split() for line in out.splitlines())
    return {"popcount": float(rates["popcount"]), "xor_popcount_add": float(rates["xor_popcount_add"])}


def machine_note() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (shared machine)"
