"""Train the digits MLP and CNN briefly and export them to ONNX (the models boldc ships).

    python examples/digits.py [--out examples/]

Data: scikit-learn's 8x8 digits (1797 images, pixel values 0..16), split 75/25
stratified with random_state=0. The networks train on pixels / 16; the scale is then
folded into the first layer, so the exported models take the raw pixel values:
``[N, 64]`` for the MLP, ``[N, 1, 8, 8]`` for the CNN. Needs torch and scikit-learn
(the test extra).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_export import export_onnx  # noqa: E402
from torch_models import DigitsCNN, DigitsMLP  # noqa: E402


def digits_split():
    """(x_train, x_test, y_train, y_test): float32 pixels 0..16, int64 labels."""
    d = load_digits()
    x, y = d.data.astype(np.float32), d.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)


def train(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int | None = 0) -> None:
    """Adam (lr 1e-3), batches of 64 on pixels / 16; ``seed`` None keeps torch's RNG as it is."""
    if seed is not None:
        torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x / 16.0), torch.from_numpy(y)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="output directory")
    ap.add_argument("--epochs", type=int, default=40)
    args = ap.parse_args()
    x_tr, x_te, y_tr, y_te = digits_split()

    torch.manual_seed(0)
    mlp = DigitsMLP()
    train(mlp, x_tr, y_tr, args.epochs)
    with torch.no_grad():
        mlp.body[0].weight /= 16.0  # take raw pixels 0..16
    print(f"digits MLP: test accuracy {accuracy(mlp, x_te, y_te):.4f}")
    export_onnx(mlp, (1, 64), args.out / "digits_mlp.onnx")

    torch.manual_seed(0)
    cnn = DigitsCNN()
    x_tr4, x_te4 = x_tr.reshape(-1, 1, 8, 8), x_te.reshape(-1, 1, 8, 8)
    train(cnn, x_tr4, y_tr, args.epochs // 2)
    with torch.no_grad():
        cnn.features[0].weight /= 16.0
    print(f"digits CNN: test accuracy {accuracy(cnn, x_te4, y_te):.4f}")
    export_onnx(cnn, (1, 1, 8, 8), args.out / "digits_cnn.onnx")


if __name__ == "__main__":
    main()
