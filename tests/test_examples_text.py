"""The text-encoder example: its seeded task generator, and the script end to end (--quick:
tiny data and model, one epoch each) through the C backend and the torch engine."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
import text_data  # noqa: E402


def _ordered(seq) -> bool:
    """The label's definition, by brute force over position pairs."""
    return any(a == text_data.A and b == text_data.B for i, a in enumerate(seq) for b in seq[i + 1:])


def test_ordered_pair_is_seeded_balanced_and_labelled():
    x1, y1 = text_data.ordered_pair(200, np.random.default_rng(5), length=20, vocab=12)
    x2, y2 = text_data.ordered_pair(200, np.random.default_rng(5), length=20, vocab=12)
    x3, _ = text_data.ordered_pair(200, np.random.default_rng(6), length=20, vocab=12)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    assert x1.shape == (200, 20) and x1.dtype == np.int64 and y1.dtype == np.int64
    assert y1.sum() == 100
    assert (x1[:, 0] == text_data.CLS).all() and x1.min() >= 0 and x1.max() < 12
    assert [int(_ordered(s)) for s in x1] == y1.tolist()
    # neither marker's presence decides the label
    has_both = (x1 == text_data.A).any(1) & (x1 == text_data.B).any(1)
    assert 0 < (has_both & (y1 == 0)).sum() and (has_both == (y1 == 1)).mean() < 0.9
    # padding only after the content
    for s in x1:
        pads = np.flatnonzero(s == text_data.PAD)
        assert pads.size == 0 or (s[pads[0]:] == text_data.PAD).all()


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="vocab"):
        text_data.ordered_pair(4, np.random.default_rng(0), length=8, vocab=4)


@pytest.mark.parametrize("engine", ["c", "torch"])
def test_example_runs_end_to_end(engine):
    pytest.importorskip("torch", reason="the example trains the float model in PyTorch")
    command = [sys.executable, "-P", str(EXAMPLES / "text_encoder.py"), "--quick", "--threads", "1",
               "--engine", engine]
    out = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = out.stdout.strip().splitlines()[-1]
    assert "Boolean accuracy" in summary and f"{engine} engine" in summary, out.stdout[-2000:]
    # every reported accuracy is a fraction of the 32 test sequences
    accuracies = [float(v) for v in re.findall(r"accuracy (\d\.\d+)", out.stdout)]
    assert len(accuracies) >= 4 and all(0.0 <= a <= 1.0 and abs(a * 32 - round(a * 32)) < 0.05 for a in accuracies), \
        accuracies
    assert "converted, before fine-tuning: test accuracy" in out.stdout
