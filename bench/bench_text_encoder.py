"""A BERT-style encoder end to end: the boldc C of the converted (mixed Boolean) encoder vs
onnxruntime FP32 on its float ONNX, side by side in one run.

    python bench/bench_text_encoder.py [--repeat 10] [--threads 1 2] [--batch 32] [--length 64] [--isa native]

The model is examples/torch_models.py's TextEncoder (2 layers, d_model 64, 4 heads, FFN 128,
vocabulary 16), untrained (timing does not depend on the values), exported with a dynamic
batch and converted with ``boldc.convert`` (defaults, or --binarize-activations). boldc times
CompiledModel.infer on int32 token ids (the whole call); ORT times InferenceSession.run on the
same ids as int64. Best of --repeat runs; the ratio is ORT time / boldc time (> 1: boldc faster).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from infer_common import best_of, machine_note, ort_session, runnable_isas

import boldc

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
VOCAB = 16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--isa", nargs="+", default=["native"])
    ap.add_argument("--binarize-activations", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(EXAMPLES))
    import torch
    from text_data import ordered_pair
    from torch_models import TextEncoder

    from boldc.torch.onnx_export import export

    print(f"machine: {machine_note()}")
    isas = runnable_isas(args.isa)
    torch.manual_seed(0)
    ids, _ = ordered_pair(args.batch, np.random.default_rng(0), args.length, VOCAB)
    proto = export(TextEncoder(VOCAB, args.length), torch.from_numpy(ids[:2]), input_names=["ids"])
    module = boldc.convert(proto, binarize_activations=args.binarize_activations)
    sessions = {t: ort_session(proto.SerializeToString(), t) for t in args.threads}
    print(f"{'batch':>5} {'length':>6} {'thr':>3} {'isa':>16} {'boldc ms':>9} {'ORT ms':>9} {'ORT/boldc':>9}")
    for isa in isas:
        cm = boldc.compile(module, max_batch=args.batch, threads=max(args.threads), isa=isa)
        for threads in args.threads:
            cm.set_threads(threads)
            t_boldc = best_of(args.repeat, cm.infer, ids.astype(np.int32))
            t_ort = best_of(args.repeat, sessions[threads].run, None, {"ids": ids})
            print(f"{args.batch:5d} {args.length:6d} {threads:3d} {cm.simd:>16} {1e3 * t_boldc:9.2f} "
                  f"{1e3 * t_ort:9.2f} {t_ort / t_boldc:9.2f}")


if __name__ == "__main__":
    main()
