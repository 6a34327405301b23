"""VGG-Small (3x32x32) end to end: boldc-generated C of the converted Boolean network
vs onnxruntime FP32 on the source ONNX, side by side in one run.

    python bench/bench_vgg_small.py [--repeat 10] [--threads 1 2] [--batch 1 64] [--isa native avx2]

The source model is examples/export_large.py's VGG-Small (untrained; needs torch),
converted with ``boldc.convert`` (defaults: first and last layers float, the rest
Boolean, BatchNorm removed). boldc times CompiledModel.infer on a float input (the
whole call: input conversion, every op, output); ORT times InferenceSession.run on the
same input. Best of --repeat runs. boldc is built for each --isa (default "native"; one
this machine cannot run is skipped, saying so), named in the "isa" column. The per-op
split of one boldc run is printed for the largest batch and the last ISA
(CompiledModel.profile).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from infer_common import best_of, machine_note, ort_session, runnable_isas

import boldc

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def export_vgg_small(path: Path) -> None:
    sys.path.insert(0, str(EXAMPLES))
    from export_large import build
    from onnx_export import export_onnx

    model, shape = build("vgg_small")
    export_onnx(model, shape, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--isa", nargs="+", default=["native"], help="kernels to measure (native, avx512, avx2, portable)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "vgg_small.onnx"
        export_vgg_small(onnx_path)
        module = boldc.convert(onnx_path)
        sessions = {t: ort_session(onnx_path, t) for t in args.threads}
        name = sessions[args.threads[0]].get_inputs()[0].name
        rng = np.random.default_rng(0)
        print(f"machine: {machine_note()}")
        isas = runnable_isas(args.isa)
        print(f"{'batch':>5} {'thr':>3} {'isa':>16} {'boldc':>10} {'ORT':>10} {'ORT/boldc':>9}")
        for batch in args.batch:
            builds = [boldc.compile(module, max_batch=batch, threads=max(args.threads), isa=isa) for isa in isas]
            x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
            for threads in args.threads:
                t_o = best_of(args.repeat, sessions[threads].run, None, {name: x})
                for cm in builds:
                    cm.set_threads(threads)
                    t_b = best_of(args.repeat, cm.infer, x)
                    print(f"{batch:5} {threads:3} {cm.simd:>16} {t_b * 1e3:8.2f}ms {t_o * 1e3:8.2f}ms "
                          f"{t_o / t_b:8.1f}x", flush=True)
        cm.set_threads(1)
        print(f"\nper op, batch {batch}, 1 thread (ms):")
        for desc, t in cm.profile(x, repeat=3):
            print(f"  {t * 1e3:8.3f}  {desc}")
        print(f"boldc build: {cm.build_info}; arena {cm.arena_bytes / 1e6:.1f} MB, "
              f"params {cm.params_bytes / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
