"""Single-op cases of the transformer attention ops for the C and torch op tests:
``forward_cases`` feeds test_backend_ops.op_cases, ``train_cases`` train_cases.train_op_cases.
Same conventions as those: ``add(op, inputs, params=(), attrs=None)``, inputs with a batch
of ``B`` first; each function draws from a generator of its own, so that the cases before
keep their values."""

from __future__ import annotations

import numpy as np


def _floats(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _bits(rng, *shape):
    return rng.random(shape) < 0.5


def _small(rng, *shape):
    """f32 values among a few integers, so that equal finds equal pairs."""
    return rng.integers(-2, 3, size=shape).astype(np.float32)


def forward_cases(add, B):
    rng = np.random.default_rng(1402)
    # matmul: rank 3 and 4, broadcast batch dims, a param right operand of rank 2 and 3, column
    # counts below, at and past the C kernel's 64-column blocks
    add("matmul", [_floats(rng, B, 5, 7), _floats(rng, B, 7, 9)])
    add("matmul", [_floats(rng, B, 2, 5, 3), _floats(rng, B, 2, 3, 5)])  # [B, H, L, D] x [B, H, D, L]
    add("matmul", [_floats(rng, B, 4, 6)], [_floats(rng, 1, 6, 70)])     # [B, L, D] x [1, D, E]
    add("matmul", [_floats(rng, B, 3, 33)], [_floats(rng, 33, 128)])     # x [D, E]
    add("matmul", [_floats(rng, B, 1, 4, 6)], [_floats(rng, 3, 6, 130)])  # [B, 1, L, D] x [H, D, E]
    add("matmul", [_floats(rng, B, 2, 3, 4), _floats(rng, B, 1, 4, 2)])  # [B, H, L, D] x [B, 1, D, E]
    # embedding from a computed table (its rows are the batch, so the ids must be valid for a
    # batch of 1: 0 and -1, the last row); tables that are params are in
    # test_transformer_attention_ops.py
    add("embedding", [_floats(rng, B, 5), rng.integers(-1, 1, size=(B, 3)).astype(np.int32)])
    add("embedding", [_floats(rng, B, 3), rng.integers(-1, 1, size=(B, 2, 2)).astype(np.int16)])
    # equal: f32 and integers, broadcast, rank 4
    add("equal", [_small(rng, B, 4, 5), _small(rng, B, 1, 5)])
    add("equal", [rng.integers(0, 3, size=(B, 70)).astype(np.int32), rng.integers(0, 3, size=(B, 70)).astype(np.int32)])
    add("equal", [rng.integers(0, 2, size=(B, 1, 3, 5)).astype(np.int8),
                  rng.integers(0, 2, size=(B, 2, 1, 5)).astype(np.int8)])
    # not: a word and a half of bits, rank 4 (bits packed along the channels)
    add("not", [_bits(rng, B, 70)])
    add("not", [_bits(rng, B, 3, 4, 5)])
    # where: f32, integers and bits, each operand broadcast somewhere, rank 4
    add("where", [_bits(rng, B, 1, 4), _floats(rng, B, 3, 4), _floats(rng, B, 3, 1)])
    add("where", [_bits(rng, B, 1, 1, 5), _floats(rng, B, 2, 3, 5), _floats(rng, B, 1, 3, 5)])
    add("where", [_bits(rng, B, 70), _bits(rng, B, 70), _bits(rng, B, 1)])
    add("where", [_bits(rng, B, 5), rng.integers(-9, 9, size=(B, 5)).astype(np.int16),
                  rng.integers(-9, 9, size=(B, 5)).astype(np.int16)])


def train_cases(add, B):
    rng = np.random.default_rng(2402)
    # embedding_grad: ids with repeats and negative ids, rank 2 and rank 3 ids (a rank-4 signal)
    add("embedding_grad", [_floats(rng, B, 3, 5), rng.integers(-7, 7, size=(B, 3)).astype(np.int32)],
        attrs={"rows": 7})
    add("embedding_grad", [_floats(rng, B, 2, 3, 4), rng.integers(-3, 3, size=(B, 2, 3)).astype(np.int16)],
        attrs={"rows": 3})
    # where_grad: both branches, a broadcast condition
    add("where_grad", [_floats(rng, B, 3, 4), _bits(rng, B, 1, 4)], attrs={"branch": "a"})
    add("where_grad", [_floats(rng, B, 2, 3, 5), _bits(rng, B, 1, 1, 5)], attrs={"branch": "b"})
    # matmul as the backward rule uses it: a transposed operand (k runs over a batch of L)
    add("matmul", [_floats(rng, B, 2, 6, 4), _floats(rng, B, 2, 4, 3)])
