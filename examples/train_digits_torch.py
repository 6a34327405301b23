"""Train the digits Boolean CNN from random bits on the torch engine (boldc.torch).

    python examples/train_digits_torch.py [--seeds 0 1 2 3 4] [--epochs 30] [--fast] [--threads 1]

The model and data of ``train_digits_c.py --model cnn`` (run (c) of docs/training.md): float
conv 1->32, Boolean convs 32->64 and 64->64 (3x3, xnor, padding F) each followed by a 2x2
OR-pool, float linear 256->10, from random initial values; the shipped digits split (pixels /
16). The same recipe (η = 3 and Adam lr 1e-3, both cosine over the run, batch 64, the C
engine's batches) trained by the torch engine on the CPU: exact (the interpreter's arithmetic)
unless --fast. Prints the test accuracy after every epoch and a summary over the seeds.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from train_digits_c import digits_cnn, digits_data  # noqa: E402

from boldc.torch.engine import compile as torch_compile  # noqa: E402


def train_run(seed: int, data, epochs: int, batch: int, fast: bool, threads: int, verbose: bool) -> list[float]:
    """One run from the random state of ``seed``; the test accuracy after every epoch."""
    x_tr, y_tr, x_te, y_te = data
    steps = math.ceil(len(x_tr) / batch)
    tm = torch_compile(digits_cnn(seed), train=True, max_batch=batch, threads=threads, exact=False if fast else None,
                       eta=3.0, lr=1e-3, total_steps=epochs * steps, seed=seed)
    curve = []

    def on_epoch(epoch, loss):
        curve.append(tm.evaluate(x_te, y_te)[1])
        if verbose:
            print(f"  epoch {epoch + 1:3d}: train loss {loss:.4f}, test accuracy {100 * curve[-1]:.2f}%")

    tm.fit(x_tr, y_tr, epochs=epochs, batch=batch, on_epoch=on_epoch)
    return curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--fast", action="store_true", help="float32 kernels instead of the interpreter's arithmetic")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quiet", action="store_true", help="print only the summary")
    args = ap.parse_args()
    data = digits_data((1, 8, 8))
    finals = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        curve = train_run(seed, data, args.epochs, args.batch, args.fast, args.threads, not args.quiet)
        finals.append(curve[-1])
        print(f"seed {seed}: final test accuracy {100 * curve[-1]:.2f}% ({time.perf_counter() - t0:.1f} s)")
    text = ", ".join(f"{100 * a:.1f}" for a in finals)
    print(f"digits CNN on the torch engine{' (float32 kernels)' if args.fast else ''}: test accuracy over seeds "
          f"{args.seeds}: {text} % (min {100 * min(finals):.1f}, mean {100 * np.mean(finals):.1f})")


if __name__ == "__main__":
    main()
