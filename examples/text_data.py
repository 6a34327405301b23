"""A generated sequence-classification task that needs attention (seeded; nothing downloaded).

``ordered_pair(n, rng, length, vocab)``: token sequences of ``length`` ids; position 0 holds
[CLS] (id 1), then a random number of content tokens (ids 4 .. vocab-1, and the two marker
tokens A = 2 and B = 3 at random places), then padding (id 0) to the end. The label is 1 when
some A comes before some B (A ... B, with anything between), else 0. Negative sequences hold
both markers in the wrong order, only one of them or none, so neither "A present" nor "B
present" nor any single position decides the label: the model must relate two positions.
Classes are balanced (half the sequences of each label).
"""

from __future__ import annotations

import numpy as np

PAD, CLS, A, B = 0, 1, 2, 3
FIRST_CONTENT = 4


def _label(seq: np.ndarray) -> int:
    a = np.flatnonzero(seq == A)
    b = np.flatnonzero(seq == B)
    return int(a.size > 0 and b.size > 0 and a.min() < b.max())


def _sequence(rng: np.random.Generator, length: int, vocab: int, positive: bool) -> np.ndarray:
    seq = np.full(length, PAD, dtype=np.int64)
    seq[0] = CLS
    used = int(rng.integers(length // 2, length))  # content tokens after [CLS]
    body = rng.integers(FIRST_CONTENT, vocab, size=used)
    i, j = np.sort(rng.choice(used, size=2, replace=False))
    kind = "ordered" if positive else rng.choice(["reversed", "reversed", "only_a", "only_b", "none"])
    if kind == "ordered":
        body[i], body[j] = A, B
    elif kind == "reversed":
        body[i], body[j] = B, A
    elif kind == "only_a":
        body[i] = A
    elif kind == "only_b":
        body[j] = B
    seq[1:1 + used] = body
    return seq


def ordered_pair(n: int, rng: np.random.Generator, length: int = 32, vocab: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64 [n, length], labels int64 [n]) of the task above."""
    if vocab <= FIRST_CONTENT or length < 4:
        raise ValueError(f"need vocab > {FIRST_CONTENT} and length >= 4, got vocab={vocab}, length={length}")
    labels = rng.permutation(np.arange(n) % 2)
    ids = np.stack([_sequence(rng, length, vocab, bool(y)) for y in labels]) if n else np.zeros((0, length), np.int64)
    assert all(_label(s) == y for s, y in zip(ids, labels))  # the construction gives the stated label
    return ids, labels.astype(np.int64)
