"""The dense-prediction examples: their seeded data generators, and both scripts end to end
(--quick: tiny data and models, one epoch each) through the C backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
import dense_data  # noqa: E402


def test_scenes_are_seeded_and_labelled():
    x1, y1 = dense_data.scenes(12, np.random.default_rng(3), size=24)
    x2, y2 = dense_data.scenes(12, np.random.default_rng(3), size=24)
    x3, _ = dense_data.scenes(12, np.random.default_rng(4), size=24)
    assert x1.shape == (12, 3, 24, 24) and x1.dtype == np.float32 and y1.shape == (12, 24, 24)
    assert y1.dtype == np.int32
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    assert 0.0 <= x1.min() and x1.max() <= 1.0
    assert set(np.unique(y1)) <= set(range(len(dense_data.CLASSES)))
    assert (y1 > 0).any(axis=(1, 2)).all(), "every image has at least one shape"
    assert (y1 == 0).mean() > 0.3, "and background"


def test_shape_pixels_have_the_shape_colour():
    """Without noise, the pixels a label calls shape k carry the flat colours of the (at most 3)
    shapes drawn there, while the background is a texture of many values."""
    x, y = dense_data.scenes(20, np.random.default_rng(0), size=32, noise=0.0)
    for img, lab in zip(x, y):
        for k in np.unique(lab[lab > 0]):
            assert len(np.unique(img[:, lab == k].T, axis=0)) <= 3
        assert len(np.unique(img[:, lab == 0].T, axis=0)) > 50


def test_downsample_is_the_block_mean():
    hr = dense_data.textures(3, np.random.default_rng(1), size=16)
    lr = dense_data.downsample(hr)
    assert lr.shape == (3, 3, 8, 8)
    np.testing.assert_allclose(lr[1, 2, 3, 5], hr[1, 2, 6:8, 10:12].mean(), rtol=1e-6)
    np.testing.assert_array_equal(hr, dense_data.textures(3, np.random.default_rng(1), size=16))


@pytest.mark.parametrize("engine", ["c", "torch"])
@pytest.mark.parametrize("script,metric", [("segmentation.py", "mIoU"), ("super_resolution.py", "Boolean")])
def test_example_runs_end_to_end(script, metric, engine):
    pytest.importorskip("torch", reason="the examples train the float model in PyTorch")
    command = [sys.executable, "-P", str(EXAMPLES / script), "--quick", "--threads", "1", "--engine", engine]
    out = subprocess.run(command,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = out.stdout.strip().splitlines()[-1]
    assert metric in summary and f"{engine} engine" in summary, out.stdout[-2000:]
    assert "nan" not in summary.lower(), summary
