"""Write the digits data files the quickstart trains and evaluates on.

    python examples/make_digits_data.py [--out examples/]

scikit-learn's 8x8 digits (1797 images, raw pixel values 0..16, as the shipped ONNX
models take them), split 75/25 stratified with random_state=0 (the split of every
digits example): examples/digits_train.npz (1347 samples) and digits_test.npz (450),
each with x (float32 [N, 64]) and y (int64 labels [N]). A model with a [N, 1, 8, 8]
input (the digits CNN) reads the same files through --data after a reshape: the
files store the MLP's layout; examples/digits_c.py reshapes them. Needs scikit-learn
(the test extra) only to regenerate the files.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np


def digits_split():
    """(x_train, x_test, y_train, y_test): float32 pixels 0..16, int64 labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x, y = d.data.astype(np.float32), d.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)


def write_npz(path: Path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path.write_bytes(buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="output directory")
    args = ap.parse_args()
    x_tr, x_te, y_tr, y_te = digits_split()
    write_npz(args.out / "digits_train.npz", x=x_tr, y=y_tr)
    write_npz(args.out / "digits_test.npz", x=x_te, y=y_te)
    print(f"wrote {args.out / 'digits_train.npz'} ({len(x_tr)} samples) and {args.out / 'digits_test.npz'} "
          f"({len(x_te)} samples)")


if __name__ == "__main__":
    main()
