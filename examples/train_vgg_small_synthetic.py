"""VGG-Small trains through the generated C: 50 steps on synthetic 32x32x3 data (run (e)).

    python examples/train_vgg_small_synthetic.py [--steps 50] [--batch 64] [--eta 30] [--no-rescale]
                                                 [--frozen "features.*"] [--threads 1]

VGG-Small (examples/torch_models.py: six 3x3 convolutions 128-128-256-256-512-512 and
the classifier 8192-1024-10; untrained, exported with examples/export_large.py, so
torch is needed) is converted with the defaults (first and last layer float,
BatchNorm removed, sign init) and trained in C (boldc.compile(train=True)) with the
input-signal rescaling of docs/method.md §3 (without it the signals grow with depth and the first
step flips half of the first layers' weights). The data are 10 classes, each a fixed
random image plus Gaussian noise (--noise), fresh every step; --frozen keeps params
(glob patterns) at their initial values. The script fails (exit code 1) if a loss is NaN or infinite, or if the mean
loss of the last 10 steps is not below that of the first 10 (divergence).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import boldc

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def vgg_small_module(tmp: Path) -> boldc.Module:
    from export_large import build
    from onnx_export import export_onnx

    model, shape = build("vgg_small")
    export_onnx(model, shape, tmp / "vgg_small.onnx")
    return boldc.convert(tmp / "vgg_small.onnx")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--eta", type=float, default=30.0, help="Boolean learning rate")
    ap.add_argument("--no-rescale", action="store_true", help="no input-signal rescaling")
    ap.add_argument("--frozen", nargs="*", default=[], help="params not trained (glob patterns)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--noise", type=float, default=1.0, help="noise scale (the class images have scale 1)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--signal-bits", choices=("16", "8", "4", "f32"), default="16",
                    help="backward signals of the Boolean layers (docs/training.md)")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    templates = rng.standard_normal((10, 3, 32, 32)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        module = vgg_small_module(Path(tmp))
    t0 = time.perf_counter()
    cm = boldc.compile(module, train=True, max_batch=args.batch, threads=args.threads, eta=args.eta, lr=args.lr,
                       total_steps=args.steps, rescale=not args.no_rescale, frozen=args.frozen,
                       signal_bits=args.signal_bits)
    cm.set_threads(args.threads)
    print(f"compiled in {time.perf_counter() - t0:.1f} s: params image {cm.params_bytes / 2**20:.1f} MiB, "
          f"arena {cm.arena_bytes / 2**20:.1f} MiB, {cm.build_info}")
    losses, seconds = [], []
    for step in range(args.steps):
        y = rng.integers(0, 10, args.batch).astype(np.int32)
        x = templates[y] + args.noise * rng.standard_normal((args.batch, 3, 32, 32)).astype(np.float32)
        t = time.perf_counter()
        losses.append(cm.train_step(x, y))
        seconds.append(time.perf_counter() - t)
        print(f"step {step + 1:3d}: loss {losses[-1]:.4f} ({seconds[-1]:.2f} s)")
        if not math.isfinite(losses[-1]):
            print("FAILED: the loss is not finite")
            return 1
    y = np.repeat(np.arange(10, dtype=np.int32), 10)
    x = templates[y] + args.noise * rng.standard_normal((len(y), 3, 32, 32)).astype(np.float32)
    loss, accuracy = cm.evaluate(x, y)
    first, last = float(np.mean(losses[:10])), float(np.mean(losses[-10:]))
    print(f"mean loss of the first 10 steps {first:.4f}, of the last 10 {last:.4f}; on 100 new samples: "
          f"loss {loss:.4f}, accuracy {100 * accuracy:.1f}%; median step {np.median(seconds):.2f} s")
    if not last < first:
        print("FAILED: the loss did not decrease")
        return 1
    print("OK: no NaN, no divergence")
    return 0


if __name__ == "__main__":
    sys.exit(main())
