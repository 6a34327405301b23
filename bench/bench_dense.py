"""Dense prediction end to end: the boldc C of the Boolean DeepLab-style segmenter and EDSR-style
super-resolution network vs onnxruntime FP32 on their float ONNX, side by side in one run.

    python bench/bench_dense.py [--repeat 10] [--threads 1 2] [--batch 8] [--size 64] [--isa native]

The models are examples/torch_models.py's DeepLabSmall (input 3 x size x size, 5 classes) and
EDSRSmall (x2: input 3 x size/2 x size/2), untrained (timing does not depend on the values),
exported by examples/onnx_export.py and converted with ``boldc.convert`` (defaults). boldc
times CompiledModel.infer on a float input (the whole call); ORT times InferenceSession.run on
the same input. Best of --repeat runs; the ratio is ORT time / boldc time (> 1: boldc faster).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from infer_common import best_of, machine_note, ort_session, runnable_isas

import boldc

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def models(size: int) -> list[tuple[str, object, tuple[int, ...]]]:
    """(name, float ONNX ModelProto, input shape without the batch) of both models."""
    sys.path.insert(0, str(EXAMPLES))
    import torch
    from onnx_export import export_onnx
    from torch_models import DeepLabSmall, EDSRSmall

    torch.manual_seed(0)
    out = []
    for name, model, shape in (("DeepLabSmall", DeepLabSmall(), (3, size, size)),
                               ("EDSRSmall x2", EDSRSmall(), (3, size // 2, size // 2))):
        out.append((name, export_onnx(model, (1, *shape)), shape))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=64, help="image side of the segmenter (the SR output side)")
    ap.add_argument("--isa", nargs="+", default=["native"])
    args = ap.parse_args()
    print(f"machine: {machine_note()}")
    isas = runnable_isas(args.isa)
    rng = np.random.default_rng(0)
    print(f"{'model':>14} {'batch':>5} {'thr':>3} {'isa':>16} {'boldc ms':>9} {'ORT ms':>9} {'ORT/boldc':>9}")
    for name, proto, shape in models(args.size):
        module = boldc.convert(proto)
        x = rng.uniform(0, 1, (args.batch, *shape)).astype(np.float32)
        sessions = {t: ort_session(proto.SerializeToString(), t) for t in args.threads}
        feed_name = sessions[args.threads[0]].get_inputs()[0].name
        for isa in isas:
            cm = boldc.compile(module, max_batch=args.batch, threads=max(args.threads), isa=isa)
            for threads in args.threads:
                cm.set_threads(threads)
                t_boldc = best_of(args.repeat, cm.infer, x)
                t_ort = best_of(args.repeat, sessions[threads].run, None, {feed_name: x})
                print(f"{name:>14} {args.batch:5d} {threads:3d} {cm.simd:>16} {1e3 * t_boldc:9.2f} "
                      f"{1e3 * t_ort:9.2f} {t_ort / t_boldc:9.2f}")


if __name__ == "__main__":
    main()
