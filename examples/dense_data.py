"""Seeded procedural data for the dense-prediction examples (segmentation, super-resolution).

Everything comes from ``numpy.random.default_rng(seed)``: the same seed gives the same arrays,
so nothing has to be downloaded or shipped.

- ``scenes``: colour images [N, 3, S, S] in [0, 1] of 1 to 3 shapes (disc, square, triangle,
  ring) of random colours, sizes, positions and rotations, drawn over each other on a textured
  noise background; the labels [N, S, S] (int32) are the class of each pixel: 0 background,
  1 disc, 2 square, 3 triangle, 4 ring (the shape drawn last wins where shapes overlap).
  Colour says nothing about the class: a network must learn shapes.
- ``textures``: high-resolution colour images [N, 3, S, S] in [0, 1] (oriented sinusoidal
  gratings, sharp-edged shapes and fine noise), and ``downsample`` makes the low-resolution
  input of super-resolution (the mean of each 2x2 block, as a camera's pixels integrate).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_synthetic_images import shape_mask  # noqa: E402

CLASSES = ("background", "disc", "square", "triangle", "ring")
SHAPE_OF_CLASS = {1: 0, 2: 1, 3: 2, 4: 4}  # class -> make_synthetic_images.shape_mask kind


def _shape_mask(kind: int, size: int, cy: float, cx: float, r: float, angle: float) -> np.ndarray:
    """Boolean [size, size] mask of class ``kind`` (1 disc, 2 square, 3 triangle, 4 ring), the
    shapes of make_synthetic_images (pixel centres at +0.5)."""
    return shape_mask(SHAPE_OF_CLASS[kind], cy - 0.5, cx - 0.5, r, angle, size)


def _smooth_noise(rng: np.random.Generator, size: int, cell: int) -> np.ndarray:
    """[size, size] noise in [0, 1]: uniform values on a coarse grid of ``cell`` pixels, upsampled
    bilinearly (a cheap texture)."""
    n = size // cell + 2
    grid = rng.uniform(0, 1, (n, n))
    t = (np.arange(size) + 0.5) / cell
    i = np.floor(t).astype(int)
    f = t - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None] + rows[:, i + 1] * f[None]


def scenes(count: int, rng: np.random.Generator, size: int = 32, noise: float = 0.08) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images [N, 3, size, size] and their per-pixel labels [N, size, size] (see the module)."""
    x = np.empty((count, 3, size, size), np.float32)
    y = np.zeros((count, size, size), np.int32)
    for i in range(count):
        base = rng.uniform(0.2, 0.8, 3)
        texture = _smooth_noise(rng, size, int(rng.integers(3, 8))) - 0.5
        img = np.clip(base[:, None, None] + 0.35 * texture[None] * rng.uniform(0.5, 1.0, 3)[:, None, None], 0, 1)
        for _ in range(int(rng.integers(1, 4))):
            kind = int(rng.integers(1, len(CLASSES)))
            r = rng.uniform(0.16, 0.3) * size
            mask = _shape_mask(kind, size, rng.uniform(r, size - r), rng.uniform(r, size - r), r, rng.uniform(0, np.pi))
            colour = rng.uniform(0, 1, 3)
            img = np.where(mask[None], colour[:, None, None], img)
            y[i][mask] = kind
        x[i] = np.clip(img + rng.normal(0, noise, img.shape), 0.0, 1.0)
    return x, y


def textures(count: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """``count`` high-resolution images [N, 3, size, size] in [0, 1] (see the module)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    out = np.empty((count, 3, size, size), np.float32)
    for i in range(count):
        img = np.zeros((3, size, size))
        for _ in range(int(rng.integers(2, 4))):  # gratings of random frequency, orientation and colour
            angle, period = rng.uniform(0, np.pi), rng.uniform(3.0, 10.0)
            wave = np.sin(2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / period + rng.uniform(0, 2 * np.pi))
            img += rng.uniform(0.1, 0.3, 3)[:, None, None] * wave[None]
        for _ in range(int(rng.integers(1, 4))):  # sharp edges
            r = rng.uniform(0.15, 0.3) * size
            mask = _shape_mask(int(rng.integers(1, 5)), size, rng.uniform(0, size), rng.uniform(0, size), r,
                               rng.uniform(0, np.pi))
            img = np.where(mask[None], img + rng.uniform(-0.4, 0.4, 3)[:, None, None], img)
        img += 0.5 + rng.normal(0, 0.02, img.shape)
        out[i] = np.clip(img, 0.0, 1.0)
    return out


def downsample(hr: np.ndarray, factor: int = 2) -> np.ndarray:
    """The low-resolution image: the mean of each ``factor`` x ``factor`` block of [N, C, H, W]."""
    n, c, h, w = hr.shape
    blocks = hr.reshape(n, c, h // factor, factor, w // factor, factor).astype(np.float64)
    return blocks.mean(axis=(3, 5)).astype(np.float32)

