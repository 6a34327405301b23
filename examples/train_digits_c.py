"""Train Boolean networks on scikit-learn's digits through the generated C.

    python examples/train_digits_c.py --model mlp [--freeze-float] [--seeds 0 1 2 3 4]   # runs (a), (b)
    python examples/train_digits_c.py --model cnn [--seeds 0 1 2 3 4]                    # run (c)
    python examples/train_digits_c.py --model mlp --signal-bits 4 --rounding log           # other signals

Data: the shipped examples/digits_train.npz and digits_test.npz (the 75/25 stratified
split with random_state=0; pixels scaled to [0, 1] here). Models, built from random
initial values (no pre-training):

- mlp: 64-128-128-128-10, float first and last layer (trained by Adam, or frozen at
  their random initialisation with --freeze-float), two Boolean xnor hidden layers;
- cnn: float conv 1->32 (3x3), Boolean convs 32->64 and 64->64 (3x3, xnor, padding F)
  each followed by a 2x2 OR-pool, float linear 256->10.

Every training step runs in C (boldc.compile(train=True)); the defaults are the tested
ones of docs/training.md (η = 3 and Adam lr 1e-3, both cosine over the run, batch 64).
Prints the test accuracy after every epoch and a summary over the seeds.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

import boldc
from boldc import FunctionBuilder, Module, tensor

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from train_digits_interp import digits_mlp  # noqa: E402  (the recipe's MLP)


def digits_data(shape=(64,)):
    """(x_train, y_train, x_test, y_test) from the shipped files, pixels / 16."""
    out = []
    for name in ("digits_train.npz", "digits_test.npz"):
        with np.load(HERE / name) as f:
            out += [(f["x"] / 16.0).astype(np.float32).reshape((-1,) + shape), f["y"].astype(np.int32)]
    return tuple(out)


def digits_cnn(seed: int = 0, channels=(32, 64, 64)) -> Module:
    """Float conv 1->c0, threshold, Boolean conv c0->c1, threshold, OR-pool, Boolean conv
    c1->c2, threshold, OR-pool, flatten, float linear -> 10 (PyTorch's default uniform
    init for the float layers, uniform random bits for the Boolean ones)."""
    rng = np.random.default_rng(seed)
    c0, c1, c2 = channels
    m = Module()
    fb = FunctionBuilder(m, "forward", [("x", tensor("f32", "N", 1, 8, 8))])
    pad = {"pad": [1, 1, 1, 1]}
    b = 1 / math.sqrt(9)
    w0 = m.add_param("conv0.w", tensor("f32", c0, 1, 3, 3), rng.uniform(-b, b, (c0, 1, 3, 3)).astype(np.float32))
    b0 = m.add_param("conv0.b", tensor("f32", c0), rng.uniform(-b, b, c0).astype(np.float32))
    h = fb.op("threshold", [fb.op("conv2d", [fb.args[0], w0, b0], pad, name="a0")], name="h0")
    for i, (ci, co) in enumerate(((c0, c1), (c1, c2)), start=1):
        w = m.add_param(f"conv{i}.w", tensor("b1", co, ci, 3, 3), rng.random((co, ci, 3, 3)) < 0.5)
        h = fb.op("threshold", [fb.op("bconv2d", [h, w], pad, name=f"s{i}")], name=f"h{i}")
        h = fb.op("bmaxpool2d", [h], {"kernel": [2, 2], "stride": [2, 2]}, name=f"p{i}")
    h = fb.op("flatten", [h], name="flat")
    k = c2 * 2 * 2
    b = 1 / math.sqrt(k)
    w3 = m.add_param("fc.w", tensor("f32", 10, k), rng.uniform(-b, b, (10, k)).astype(np.float32))
    b3 = m.add_param("fc.b", tensor("f32", 10), rng.uniform(-b, b, 10).astype(np.float32))
    fb.ret(fb.op("linear", [h, w3, b3], name="logits"))
    return m


def train_run(module: Module, data, epochs: int, batch: int = 64, seed: int = 0, verbose: bool = True,
              **options) -> list[float]:
    """Train through C; returns the test accuracy after every epoch."""
    x_tr, y_tr, x_te, y_te = data
    steps = math.ceil(len(x_tr) / batch)
    cm = boldc.compile(module, train=True, max_batch=batch, total_steps=epochs * steps, seed=seed, **options)
    curve = []

    def on_epoch(epoch, loss):
        curve.append(cm.evaluate(x_te, y_te)[1])
        if verbose:
            print(f"  epoch {epoch + 1:3d}: train loss {loss:.4f}, test accuracy {100 * curve[-1]:.2f}%")

    cm.fit(x_tr, y_tr, epochs=epochs, batch=batch, on_epoch=on_epoch)
    return curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    ap.add_argument("--freeze-float", action="store_true", help="train the Boolean layers only")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--eta", type=float, default=3.0, help="Boolean learning rate")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the float layers")
    ap.add_argument("--signal-bits", choices=("16", "8", "4", "f32"), default="16",
                    help="backward signals of the Boolean layers (docs/training.md)")
    ap.add_argument("--rounding", choices=("nearest", "stochastic", "log"), default="nearest",
                    help="rounding of integer signals (log: with --signal-bits 4)")
    args = ap.parse_args()
    data = digits_data((64,) if args.model == "mlp" else (1, 8, 8))
    finals = []
    for seed in args.seeds:
        module = digits_mlp(seed) if args.model == "mlp" else digits_cnn(seed)
        print(f"seed {seed}:")
        t0 = time.perf_counter()
        curve = train_run(module, data, args.epochs, args.batch, seed, eta=args.eta, lr=args.lr,
                          freeze_float=args.freeze_float, signal_bits=args.signal_bits, rounding=args.rounding)
        finals.append(curve[-1])
        print(f"  final test accuracy {100 * curve[-1]:.2f}% ({time.perf_counter() - t0:.1f} s with compilation)")
    text = ", ".join(f"{100 * a:.1f}" for a in finals)
    print(f"{args.model}{' (float layers frozen)' if args.freeze_float else ''}, signals {args.signal_bits} "
          f"{args.rounding}: test accuracy over seeds "
          f"{args.seeds}: {text} % (min {100 * min(finals):.1f}, mean {100 * np.mean(finals):.1f})")


if __name__ == "__main__":
    main()
