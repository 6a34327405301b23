"""Train the digits MLP 64-128-128-128-10 from scratch with the reference interpreter.

    python examples/train_digits_interp.py [--freeze-float] [--eta 3] [--epochs 30] [--seed 0]

The first and last layers are float (trained by Adam, or frozen at their random
initialisation with --freeze-float), the two hidden layers Boolean (xnor neurons,
random initial bits, trained by the Boolean optimizer of docs/method.md §4). Data: scikit-learn's
digits scaled to [0, 1], 75/25 stratified split with random_state=0. The default
hyper-parameters are the documented ones (docs/training.md, "Defaults"); this script
is how they were measured. The C side runs the same recipe through generated code.
"""

from __future__ import annotations

import argparse

import numpy as np
from rich.progress import Progress

import boldc
from boldc import FunctionBuilder, Module, tensor
from boldc.passes import PassManager


def digits_mlp(seed: int = 0, hidden=(128, 128, 128)) -> Module:
    """64-h0-...-10: float first and last layer with bias (PyTorch's default uniform init),
    Boolean hidden layers (uniform random bits), threshold activations."""
    rng = np.random.default_rng(seed)
    m = Module()
    sizes = (64, *hidden, 10)
    fb = FunctionBuilder(m, "forward", [("x", tensor("f32", "N", 64))])
    h = fb.args[0]
    last = len(sizes) - 2
    for i, (fi, fo) in enumerate(zip(sizes, sizes[1:])):
        if i in (0, last):
            b = 1 / np.sqrt(fi)
            w = m.add_param(f"fc{i}.w", tensor("f32", fo, fi), rng.uniform(-b, b, (fo, fi)).astype(np.float32))
            bias = m.add_param(f"fc{i}.b", tensor("f32", fo), rng.uniform(-b, b, fo).astype(np.float32))
            s = fb.op("linear", [h, w, bias], name=f"a{i}")
        else:
            w = m.add_param(f"fc{i}.w", tensor("b1", fo, fi), rng.random((fo, fi)) < 0.5)
            s = fb.op("blinear", [h, w], name=f"s{i}")
        h = fb.op("threshold", [s], name=f"h{i}") if i < last else s
    fb.ret(h)
    return m


def digits_split():
    """scikit-learn digits scaled to [0, 1]: (x_train, x_test, y_train, y_test)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    return train_test_split(x, d.target.astype(np.int32), test_size=0.25, stratify=d.target, random_state=0)


def accuracy(module: Module, x: np.ndarray, y: np.ndarray) -> float:
    return float((boldc.interpret(module, x).argmax(axis=1) == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--eta", type=float, default=3.0, help="Boolean optimizer learning rate")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the float layers")
    ap.add_argument("--schedule", default="cosine", choices=("constant", "cosine", "poly"))
    ap.add_argument("--threshold-grad", default="tanh", choices=("tanh", "box", "bireal"))
    ap.add_argument("--freeze-float", action="store_true", help="train the Boolean layers only")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    xtr, xte, ytr, yte = digits_split()
    m = digits_mlp(args.seed)
    steps = len(xtr) // args.batch
    freeze = "true" if args.freeze_float else "false"
    PassManager(f"autodiff{{threshold-grad={args.threshold_grad},freeze-float={freeze}}},"
                f"insert-optimizer{{eta={args.eta},lr={args.lr},schedule={args.schedule},"
                f"lr-schedule={args.schedule},total-steps={steps * args.epochs}}}").run(m)
    rng = np.random.default_rng(args.seed)
    with Progress() as progress:
        task = progress.add_task("training", total=args.epochs * steps)
        for epoch in range(args.epochs):
            order = rng.permutation(len(xtr))
            losses = [float(boldc.interpret(m, [xtr[idx], ytr[idx]], "train_step"))
                      for idx in (order[s * args.batch:(s + 1) * args.batch] for s in range(steps))]
            progress.update(task, advance=steps,
                            description=f"epoch {epoch + 1} loss {np.mean(losses):.3f}")
    print(f"test accuracy {accuracy(m, xte, yte):.4f} (train {accuracy(m, xtr, ytr):.4f})")


if __name__ == "__main__":
    main()
