"""The steps both dense-prediction examples take: train the float PyTorch model, export and
convert it, fine-tune the Boolean model through the C backend (or the torch engine), and
evaluate with a boldc metric; the loop over the seeds and its summary (``run_seeds``). The
text-encoder example uses them too.
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
from onnx_export import export_onnx  # noqa: E402

import boldc  # noqa: E402


def train_float(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, loss_fn, epochs: int, batch: int,
                lr: float, seed: int, threads: int) -> torch.nn.Module:
    """Adam with a cosine learning rate over ``epochs`` of shuffled batches (float32, CPU)."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * math.ceil(len(x) / batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    rng = np.random.default_rng(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        total = 0.0
        for i in range(0, len(x), batch):
            idx = torch.from_numpy(order[i:i + batch])
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"  float epoch {epoch + 1:3d}: train loss {total / len(x):.4f}")
    return model.eval()


def predict_float(model: torch.nn.Module, x: np.ndarray, batch: int = 64) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[i:i + batch])).numpy() for i in range(0, len(x), batch)])


def to_boolean(model: torch.nn.Module, input_shape: tuple[int, ...], **convert_options) -> boldc.Module:
    """Export the float model (dynamic batch) and convert it with ``boldc.convert``."""
    return boldc.convert(export_onnx(model, input_shape), **convert_options)


def fine_tune(module: boldc.Module, data: tuple, engine: str, epochs: int, batch: int, seed: int, threads: int,
              metric: str, verbose: bool = True, **options) -> tuple[list[float], object]:
    """Train ``module`` through C (``engine="c"``) or the torch engine (``"torch"``) and return the
    test ``metric`` after every epoch, and the trained model."""
    x_tr, y_tr, x_te, y_te = data
    steps = epochs * math.ceil(len(x_tr) / batch)
    if engine == "c":
        model = boldc.compile(module, train=True, max_batch=batch, threads=threads, total_steps=steps, seed=seed,
                              **options)
    else:
        from boldc.torch.engine import compile as torch_compile

        model = torch_compile(module, train=True, max_batch=batch, threads=threads, exact=False,
                              total_steps=steps, seed=seed, **options)
    curve = []
    t0 = time.perf_counter()

    def on_epoch(epoch, loss):
        curve.append(model.evaluate(x_te, y_te, metric=metric)[1])
        if verbose:
            print(f"  {engine} epoch {epoch + 1:3d}: train loss {loss:.4f}, test {metric} {curve[-1]:.4f} "
                  f"({time.perf_counter() - t0:.0f} s)")

    model.fit(x_tr, y_tr, epochs=epochs, batch=batch, on_epoch=on_epoch)
    return curve, model


def joined(values, digits: int = 3) -> str:
    """The values with ``digits`` decimals, comma-separated."""
    return ", ".join(f"{v:.{digits}f}" for v in values)


def run_seeds(args: argparse.Namespace, run, seed_line, summary) -> None:
    """``run(seed, args)`` for each of ``args.seeds``: "seed S:" before each, then
    ``seed_line(*result)`` and the seconds it took; at the end ``summary(*columns)``, the
    results' columns as arrays (one value a seed)."""
    results = []
    for seed in args.seeds:
        print(f"seed {seed}:")
        t0 = time.perf_counter()
        results.append(run(seed, args))
        print(f"  {seed_line(*results[-1])} ({time.perf_counter() - t0:.0f} s)")
    print(summary(*np.array(results).T))


def parser(doc: str, lr: float) -> argparse.ArgumentParser:
    """The options both examples take (``lr``: the default Adam learning rate of fine-tuning)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--train", type=int, default=2000, help="training images")
    ap.add_argument("--test", type=int, default=400, help="test images")
    ap.add_argument("--size", type=int, default=32, help="side of the images (the output side; a multiple of 4)")
    ap.add_argument("--width", type=int, default=32, help="channels of the model")
    ap.add_argument("--float-epochs", type=int, default=10, help="epochs of float training (PyTorch)")
    ap.add_argument("--epochs", type=int, default=10, help="epochs of Boolean fine-tuning")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--eta", type=float, default=3.0, help="Boolean learning rate")
    ap.add_argument("--lr", type=float, default=lr, help="Adam learning rate of the float layers")
    ap.add_argument("--keep-bn", action=argparse.BooleanOptionalAction, default=True,
                    help="convert keeping BatchNorm (trained on batch statistics; --no-keep-bn removes it)")
    ap.add_argument("--rescale", action="store_true", help="the input-signal rescaling of docs/method.md")
    ap.add_argument("--engine", choices=("c", "torch"), default="c")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="a tiny run (smoke test)")
    return ap


def parse(ap: argparse.ArgumentParser, **quick) -> argparse.Namespace:
    """The options; with --quick, tiny sizes and one epoch of each training (and ``quick``'s values)."""
    args = ap.parse_args()
    if args.quick:
        small = dict(train=64, test=32, size=16, width=8, float_epochs=1, epochs=1, **quick)
        for name, value in small.items():
            setattr(args, name, value)
    return args
