"""Boolean layers in boldc's generated C vs onnxruntime FP32 on the float layer of the
same shape, side by side in one run (issue 4, benchmark 1), and the fraction of this
machine's popcount roofline the Boolean layers reach (benchmark 3).

    python bench/bench_layers.py [--repeat 20] [--threads 1 2] [--batch 1 64]

Layers: conv3x3 (pad 1) 128->128 at 32x32, 256->256 at 16x16, 512->512 at 8x8, and
linear 4096->4096. boldc runs bconv2d / blinear (b1 input and weights, integer
pre-activation out) built with isa="native"; onnxruntime runs Conv / MatMul in FP32.

Columns:
- "boldc op": the generated op alone (C clock around the op's function, from
  CompiledModel.profile): what the layer costs inside a compiled network;
- "boldc call": the whole Python call, including converting the API buffers (b1 input
  from bytes to packed words, output NHWC -> NCHW), which a network pays only at its
  boundaries;
- "ORT": InferenceSession.run on a float input.
Ratios are ORT / boldc op. Roofline: word operations of the layer (output elements x
64-bit words of its receptive field) per second, over the peak VPOPCNTQ rate of
popcount_peak.c (register-resident data, one core) times the threads used. Times are
the best of --repeat runs.
"""

from __future__ import annotations

import argparse

import numpy as np
from infer_common import best_of, machine_note, ort_session, popcount_peak
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
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    peak = popcount_peak()
    print(f"machine: {machine_note()}")
    print(f"popcount peak: {peak['popcount'] / 1e9:.1f} G words/s (VPOPCNTQ, registers); "
          f"xor+popcount+add from L1: {peak['xor_popcount_add'] / 1e9:.1f} G words/s")
    header = f"{'layer':26} {'batch':>5} {'thr':>3} {'boldc op':>10} {'boldc call':>11} {'ORT':>10} " \
             f"{'ORT/op':>7} {'ORT/call':>8} {'roofline':>8}"
    print(header)
    print("-" * len(header))
    for label, kind, c, m, hw in LAYERS:
        mod = boolean_module(kind, c, m, hw, rng)
        fmodel = float_model(kind, c, m, hw, rng)
        for batch in args.batch:
            cm = boldc.compile(mod, max_batch=batch, threads=max(args.threads))
            shape = (batch, c, hw, hw) if kind == "conv" else (batch, c)
            xb = rng.random(shape) < 0.5
            xf = rng.standard_normal(shape).astype(np.float32)
            repeat = max(3, args.repeat // (8 if batch > 8 else 1))
            for threads in args.threads:
                cm.set_threads(threads)
                session = ort_session(fmodel, threads)
                t_op = min(cm.profile(xb, repeat=1)[0][1] for _ in range(repeat))
                t_call = best_of(repeat, cm.infer, xb)
                t_ort = best_of(repeat, session.run, None, {"x": xf})
                roof = word_ops(kind, c, m, hw, batch) / t_op / (peak["popcount"] * threads)
                print(f"{label:26} {batch:5} {threads:3} {t_op * 1e3:8.3f}ms {t_call * 1e3:9.3f}ms "
                      f"{t_ort * 1e3:8.3f}ms {t_ort / t_op:6.1f}x {t_ort / t_call:7.1f}x {roof:7.0%}", flush=True)
    print(f"boldc build: {cm.build_info}")


if __name__ == "__main__":
    main()
