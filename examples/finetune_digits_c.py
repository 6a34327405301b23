"""Fine-tuning through the generated C: a float CNN pre-trained in PyTorch on half of the
digits training set, converted with sign init, fine-tuned on the other half (run (d)).

    python examples/finetune_digits_c.py [--seeds 0 1 2 3 4] [--epochs 20] [--eta 3] [--no-batchnorm]

1. The training split (1347 images) is cut in two stratified halves (seeded numpy, no
   scikit-learn): A (674) for pre-training, B (673) for fine-tuning.
2. PyTorch trains the digits CNN of examples/torch_models.py (conv 32-64-64 with
   BatchNorm and ReLU, max-pool, linear) on A for --pretrain-epochs epochs (Adam,
   seed 0, pixels / 16 with the scale folded into the first conv afterwards), and it
   is exported to ONNX.
3. boldc converts it twice: with sign init (the Boolean weights are the signs of the
   pre-trained ones) and with random bits (the same network, the Boolean weights
   uniform random): the float first and last layers keep their pre-trained weights in
   both, BatchNorm is removed.
4. Both train on B through the generated C with the same options (docs/training.md
   defaults: η and lr cosine over the run, batch 64); the test accuracy (the shipped
   450-image test split) after every epoch gives the epochs-to-95 % curves.

Needs torch (the test extra) for step 2.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

import boldc

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from train_digits_c import train_run  # noqa: E402


def raw_digits():
    """(x_train, y_train, x_test, y_test) from the shipped files: raw pixels 0..16, [N, 1, 8, 8]."""
    out = []
    for name in ("digits_train.npz", "digits_test.npz"):
        with np.load(HERE / name) as f:
            out += [f["x"].astype(np.float32).reshape(-1, 1, 8, 8), f["y"].astype(np.int32)]
    return tuple(out)


def halves(y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of two stratified halves of the samples (each class split in two)."""
    rng = np.random.default_rng(seed)
    a, b = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        a.append(idx[: (len(idx) + 1) // 2])
        b.append(idx[(len(idx) + 1) // 2:])
    return np.sort(np.concatenate(a)), np.sort(np.concatenate(b))


def pretrain(x: np.ndarray, y: np.ndarray, epochs: int, path: Path, batchnorm: bool = True) -> None:
    """Train the float digits CNN in PyTorch on (x, y) and export it to ``path`` (ONNX,
    raw pixel input). Without ``batchnorm`` its BatchNorm layers are left out (the
    conversion removes them in any case)."""
    import torch
    from digits import train
    from onnx_export import export_onnx
    from torch_models import DigitsCNN

    torch.manual_seed(0)
    model = DigitsCNN()
    if not batchnorm:
        for i, layer in enumerate(model.features):
            if isinstance(layer, torch.nn.BatchNorm2d):
                model.features[i] = torch.nn.Identity()
    train(model, x, y.astype(np.int64), epochs, seed=None)  # the RNG goes on from the model's init
    with torch.no_grad():
        model.features[0].weight /= 16.0  # take raw pixels 0..16
    export_onnx(model, (1, 1, 8, 8), path)


def epochs_to(curve: list[float], target: float) -> int | None:
    return next((i + 1 for i, a in enumerate(curve) if a >= target), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of the shuffling and random bits")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--pretrain-epochs", type=int, default=20)
    ap.add_argument("--eta", type=float, default=3.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--signal-bits", choices=("16", "8", "4", "f32"), default="16",
                    help="backward signals of the Boolean layers (docs/training.md)")
    ap.add_argument("--no-batchnorm", action="store_true",
                    help="pre-train the CNN without its BatchNorm layers (the conversion removes them anyway)")
    args = ap.parse_args()
    x_tr, y_tr, x_te, y_te = raw_digits()
    part_a, part_b = halves(y_tr)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "digits_cnn_half.onnx"
        pretrain(x_tr[part_a], y_tr[part_a], args.pretrain_epochs, onnx_path, not args.no_batchnorm)
        float_acc = float((boldc.interpret(boldc.import_onnx(onnx_path), x_te).argmax(1) == y_te).mean())
        print(f"float CNN pre-trained on half A ({len(part_a)} images): test accuracy {100 * float_acc:.2f}%")
        data = (x_tr[part_b], y_tr[part_b], x_te, y_te)
        rows = []
        for seed in args.seeds:
            for init in ("sign", "random"):
                module = boldc.convert(onnx_path, init=init, seed=seed)
                before = float((boldc.interpret(module, x_te).argmax(1) == y_te).mean())
                print(f"seed {seed}, {init} init (test accuracy before training {100 * before:.2f}%), "
                      f"training on half B ({len(part_b)} images):")
                curve = train_run(module, data, args.epochs, seed=seed, eta=args.eta, lr=args.lr,
                                  signal_bits=args.signal_bits)
                rows.append((seed, init, curve))
    print(f"\nepochs to {100 * args.target:.0f}% test accuracy, and the curve (test accuracy per epoch, %):")
    for seed, init, curve in rows:
        reach = epochs_to(curve, args.target)
        print(f"  seed {seed} {init:6s}: {reach if reach else 'not reached':>11}  "
              + " ".join(f"{100 * a:.1f}" for a in curve))


if __name__ == "__main__":
    main()
