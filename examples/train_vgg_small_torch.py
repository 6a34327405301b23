"""VGG-Small learns a synthetic 32x32 image task on the torch engine (boldc.torch).

    python examples/train_vgg_small_torch.py [--train 1280] [--test 500] [--epochs 4] [--batch 64]
                                             [--eta 1000] [--lr 1e-3] [--no-batchnorm] [--exact]
                                             [--device cpu] [--threads 2] [--seed 0]

VGG-Small (examples/torch_models.py: six 3x3 convolutions 128-128-256-256-512-512 and the
classifier 8192-1024-10), untrained, converted by boldc (first and last layer float, sign init)
keeping its BatchNorm layers, which @train_step trains on batch statistics (without them the
OR-pools of unbiased bits are almost always T and the network does not learn:
docs/training.md, run (e)). BatchNorm divides the signals by the spread of the
pre-activations (~√m), so the weight signals are small (max |q| 3e-4 to 3e-3 at the first
step) and η is large: 1000 flips a few thousand of the 13 M Boolean weights a step (10 flips
none, 5000 a fifth of them and the loss does not fall); the input-signal rescaling of
docs/method.md §3, which BatchNorm makes redundant, is used only with --no-batchnorm. The data are the
shipped generator's (examples/make_synthetic_images.py: 10 classes of shapes and colours, with
noise, chance 10 %). Training runs on the torch engine with float32 kernels (--exact: the
interpreter's arithmetic, slower) on --device. Prints the test accuracy after every epoch;
exits with 1 unless the last one is at least twice chance (20 %). Measured with the defaults
(80 steps, CPU, 2 threads of a shared machine, 24 minutes): 18.8, 22.6, 29.4, 29.6 % after
the 4 epochs; the mean step loss 2.14, 1.76, 1.61, 1.55.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_synthetic_images import make  # noqa: E402
from torch_models import VGGSmall  # noqa: E402

import boldc  # noqa: E402
from boldc.torch.engine import compile as torch_compile  # noqa: E402
from boldc.torch.onnx_export import export  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=1280)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--eta", type=float, default=1000.0, help="Boolean learning rate")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the float params")
    ap.add_argument("--no-batchnorm", action="store_true", help="convert without BatchNorm (the C run (e))")
    ap.add_argument("--exact", action="store_true", help="the interpreter's arithmetic instead of float32 kernels")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    x_tr, y_tr = make(args.train, rng, 0.15)
    x_te, y_te = make(args.test, rng, 0.15)
    torch.manual_seed(args.seed)
    module = boldc.convert(export(VGGSmall(), torch.zeros(1, 3, 32, 32)), keep_bn=not args.no_batchnorm)
    steps = math.ceil(len(x_tr) / args.batch)
    tm = torch_compile(module, train=True, max_batch=args.batch, threads=args.threads, device=args.device,
                       exact=True if args.exact else False, eta=args.eta, lr=args.lr, rescale=args.no_batchnorm,
                       total_steps=args.epochs * steps, seed=args.seed)
    t0, accuracy = time.perf_counter(), 0.0

    def on_epoch(epoch, loss):
        nonlocal accuracy
        accuracy = tm.evaluate(x_te, y_te)[1]
        print(f"epoch {epoch + 1}: mean step loss {loss:.4f}, test accuracy {100 * accuracy:.1f}% "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)

    tm.fit(x_tr, y_tr, epochs=args.epochs, batch=args.batch, on_epoch=on_epoch)
    print(f"VGG-Small on {args.train} synthetic images, {args.epochs} epochs: test accuracy {100 * accuracy:.1f}% "
          f"(chance 10%)")
    return 0 if accuracy >= 0.2 else 1


if __name__ == "__main__":
    sys.exit(main())
