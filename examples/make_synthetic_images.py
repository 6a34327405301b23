"""A synthetic 32x32 colour image task for VGG-Small: 10 classes of shapes and colours with noise.

    python examples/make_synthetic_images.py [--train 5000] [--test 1000] [--seed 0] [--noise 0.15]
                                             [--out examples/synthetic_images.npz]

Class c has a shape (disc, square, triangle, cross, ring for c mod 5) and a colour family (warm
for c < 5, cool for c >= 5); each image draws the shape at a random position (the shape's centre
within the middle 16x16) and size (radius 6 to 11 pixels), its colour with random jitter around
the family's hue, on a random dark background, then adds Gaussian noise (--noise) and clips to
[0, 1]. So both what and where vary, and a network must learn shapes and colours to classify
(chance is 10 %). Everything comes from ``numpy.random.default_rng(seed)``: the same seed gives
the same files. Writes an .npz with x_train, y_train, x_test, y_test (x float32 [N, 3, 32, 32],
y int32), and the training part alone as a data file of ``boldc train`` (x, y) next to it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SIZE = 32
WARM = np.array([[0.95, 0.25, 0.15], [0.95, 0.75, 0.1], [0.9, 0.45, 0.6]])  # red, yellow, pink
COOL = np.array([[0.15, 0.45, 0.95], [0.1, 0.8, 0.45], [0.45, 0.25, 0.9]])  # blue, green, violet


def shape_mask(kind: int, cy: float, cx: float, r: float, angle: float, size: int = SIZE) -> np.ndarray:
    """Boolean [size, size] mask of the shape ``kind`` (0 disc, 1 square, 2 triangle, 3 cross, 4 ring)
    of radius ``r`` centred at pixel coordinates (cy, cx), rotated by ``angle``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy  # rotated coordinates
    if kind == 0:
        return u * u + v * v <= r * r
    if kind == 1:
        return (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    if kind == 2:
        return (v <= 0.6 * r) & (v >= -r + 1.7 * np.abs(u))
    if kind == 3:
        arm = 0.3 * r
        return ((np.abs(u) <= arm) & (np.abs(v) <= r)) | ((np.abs(v) <= arm) & (np.abs(u) <= r))
    d = np.sqrt(u * u + v * v)
    return (d <= r) & (d >= 0.55 * r)


def make(count: int, rng: np.random.Generator, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images [N, 3, 32, 32] in [0, 1] and their labels (uniform over the 10 classes)."""
    y = rng.integers(0, 10, count).astype(np.int32)
    x = np.empty((count, 3, SIZE, SIZE), np.float32)
    for i, label in enumerate(y):
        family = WARM if label < 5 else COOL
        colour = family[rng.integers(0, 3)] + rng.normal(0, 0.06, 3)
        background = rng.uniform(0.0, 0.3, 3)
        mask = shape_mask(int(label) % 5, rng.uniform(8, 24), rng.uniform(8, 24), rng.uniform(6, 11),
                          rng.uniform(0, np.pi))
        img = np.where(mask[None], colour[:, None, None], background[:, None, None])
        x[i] = np.clip(img + rng.normal(0, noise, img.shape), 0.0, 1.0)
    return x, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=5000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", type=float, default=0.15)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "synthetic_images.npz")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    x_train, y_train = make(args.train, rng, args.noise)
    x_test, y_test = make(args.test, rng, args.noise)
    np.savez_compressed(args.out, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    np.savez_compressed(args.out.with_name(args.out.stem + "_train.npz"), x=x_train, y=y_train)
    print(f"wrote {args.out} ({args.train} training and {args.test} test images, 10 classes) and "
          f"{args.out.with_name(args.out.stem + '_train.npz').name}")


if __name__ == "__main__":
    main()
