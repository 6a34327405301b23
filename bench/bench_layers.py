"""Boolean layers in boldc's generated C vs onnxruntime FP32 on the float layer of the
same shape, side by side in one run, and the fraction of this
machine's popcount roofline the Boolean layers reach (benchmark 3).

    python bench/bench_layers.py [--repeat 20] [--threads 1 2] [--batch 1 64] [--isa native avx2]

Layers: conv3x3 (pad 1) 128->128 at 32x32, 256->256 at 16x16, 512->512 at 8x8, and
linear 4096->4096. boldc runs bconv2d / blinear (b1 input and weights, integer
pre-activation out) built with each --isa (default "native"; an ISA this machine cannot
run is skipped, saying so); onnxruntime runs Conv / MatMul in FP32.

Columns, timed alike in pairs (both in this process):
- "boldc op" vs "ORT op": the computation alone. boldc: the generated op (C clock
  around the op's function, from CompiledModel.profile), what the layer costs inside a
  compiled network; ORT: the summed kernel times of the nodes one run executes (its
  profiler; with its layout reorders), without the overhead of session.run.
  "op ratio" = ORT op / boldc op.
- "boldc call" vs "ORT run": the whole call from Python. boldc: CompiledModel.infer,
  including converting the API buffers (b1 input from bytes to packed words, output
  NHWC -> NCHW), which a network pays only at its boundaries; ORT:
  InferenceSession.run on a float input. "call ratio" = ORT run / boldc call.
Roofline: word operations of the layer (output elements x 64-bit words of its
receptive field) per second of "boldc op", over the peak popcount rate of one core for
the same ISA (popcount_peak.c built with that ISA's flags: VPOPCNTQ for AVX-512, the
faster of POPCNT and the vpshufb table with Harley-Seal adders for AVX2, CNT for NEON)
times the threads used. The "isa" column names the kernels measured. Times are the best
of --repeat runs.
"""

from __future__ import annotations

import argparse

import numpy as np
from infer_common import best_of, machine_note, ort_kernel_time, ort_session, popcount_peak, runnable_isas
from onnx import TensorProto, helper

import boldc
from boldc import FunctionBuilder, Module, tensor

LAYERS = [("conv3x3 128->128 @32x32", "conv", 128, 128, 32), ("conv3x3 256->256 @16x16", "conv", 256, 256, 16),
          ("conv3x3 512->512 @8x8", "conv", 512, 512, 8), ("linear 4096->4096", "linear", 4096, 4096, 0)]


def boolean_module(kind: str, c: int, m: int, hw: int, rng) -> Module:
    mod = Module()
    if kind == "conv":
        w = mod.add_param("w", tensor("b1", m, c, 3, 3), rng.random((m, c, 3, 3)) < 0.5)
        fb = FunctionBuilder(mod, "forward", [("x", tensor("b1", "N", c, hw, hw))])
        fb.ret(fb.op("bconv2d", [fb.args[0], w], {"pad": [1, 1, 1, 1]}))
    else:
        w = mod.add_param("w", tensor("b1", m, c), rng.random((m, c)) < 0.5)
        fb = FunctionBuilder(mod, "forward", [("x", tensor("b1", "N", c))])
        fb.ret(fb.op("blinear", [fb.args[0], w]))
    return mod


def float_model(kind: str, c: int, m: int, hw: int, rng) -> bytes:
    if kind == "conv":
        w = helper.make_tensor("W", TensorProto.FLOAT, [m, c, 3, 3], rng.standard_normal(m * c * 9).astype(np.float32))
        node = helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c, hw, hw])
    else:
        w = helper.make_tensor("W", TensorProto.FLOAT, [c, m], rng.standard_normal(m * c).astype(np.float32))
        node = helper.make_node("MatMul", ["x", "W"], ["y"])
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph([node], "layer", [x], [y], [w]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10  # onnxruntime 1.31 reads IR <= 13
    return model.SerializeToString()


def word_ops(kind: str, c: int, m: int, hw: int, batch: int) -> int:
    """64-bit XNOR-popcount word operations of one run of the layer."""
    if kind == "conv":
        return batch * hw * hw * m * 9 * -(-c // 64)
    return batch * m * -(-c // 64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--isa", nargs="+", default=["native"], help="kernels to measure (native, avx512, avx2, portable)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"machine: {machine_note()}")
    peaks = {}
    for isa in runnable_isas(args.isa):
        peaks[isa] = peak = popcount_peak(isa)
        print(f"popcount peak ({peak['isa']}): {peak['popcount'] / 1e9:.1f} G words/s per core; "
              f"xor+popcount+add from L1 (scalar loop): {peak['xor_popcount_add'] / 1e9:.1f} G words/s")
    if not peaks:
        raise SystemExit("no ISA of --isa runs on this machine")
    header = f"{'layer':26} {'batch':>5} {'thr':>3} {'isa':>16} {'boldc op':>10} {'ORT op':>10} {'op ratio':>8} " \
             f"{'boldc call':>11} {'ORT run':>10} {'call ratio':>10} {'roofline':>8}"
    print(header)
    print("-" * len(header))
    for label, kind, c, m, hw in LAYERS:
        mod = boolean_module(kind, c, m, hw, rng)
        fmodel = float_model(kind, c, m, hw, rng)
        for batch in args.batch:
            shape = (batch, c, hw, hw) if kind == "conv" else (batch, c)
            xb = rng.random(shape) < 0.5
            xf = rng.standard_normal(shape).astype(np.float32)
            repeat = max(3, args.repeat // (8 if batch > 8 else 1))
            for threads in args.threads:
                session = ort_session(fmodel, threads)
                t_ort_op = ort_kernel_time(fmodel, threads, {"x": xf}, repeat)
                t_ort = best_of(repeat, session.run, None, {"x": xf})
                for isa, peak in peaks.items():
                    cm = boldc.compile(mod, max_batch=batch, threads=max(args.threads), isa=isa)
                    cm.set_threads(threads)
                    t_op = min(cm.profile(xb, repeat=1)[0][1] for _ in range(repeat))
                    t_call = best_of(repeat, cm.infer, xb)
                    roof = word_ops(kind, c, m, hw, batch) / t_op / (peak["popcount"] * threads)
                    print(f"{label:26} {batch:5} {threads:3} {cm.simd:>16} {t_op * 1e3:8.3f}ms {t_ort_op * 1e3:8.3f}ms "
                          f"{t_ort_op / t_op:7.1f}x {t_call * 1e3:9.3f}ms {t_ort * 1e3:8.3f}ms {t_ort / t_call:9.1f}x "
                          f"{roof:7.0%}", flush=True)
    print(f"boldc build: {cm.build_info}; machine after the run: {machine_note()}")


if __name__ == "__main__":
    main()
