"""Arena planning: every intermediate buffer of a function gets an offset in one
caller-provided arena (docs/backend.md, "Memory").

A buffer lives from the op that defines it to its last use (inclusive). Buffers
whose lifetimes overlap never overlap in memory. The planner places the biggest
buffers first, each at the lowest 64-byte-aligned offset that is free over its
whole lifetime (the greedy-by-size heuristic of TFLite's arena planner); with
``reuse=False`` every buffer gets its own bytes (the trace build, so that every
value can be read after the call).
"""

from __future__ import annotations

from dataclasses import dataclass

ALIGN = 64


@dataclass
class Buffer:
    key: object      # what the buffer holds (a value, or ("scratch", op index))
    size: int        # bytes
    first: int       # op index that writes it first (-1: function entry)
    last: int        # op index that reads it last (len(ops): the function's exit)
    offset: int = -1

    @property
    def padded(self) -> int:
        return max(ALIGN, -(-self.size // ALIGN) * ALIGN)

    def lives_with(self, other: Buffer) -> bool:
        return self.first <= other.last and other.first <= self.last


def plan(buffers: list[Buffer], reuse: bool = True) -> int:
    """Assign ``offset`` to every buffer; returns the arena size in bytes."""
    if not reuse:
        top = 0
        for b in buffers:
            b.offset = top
            top += b.padded
        return top
    placed: list[Buffer] = []
    for b in sorted(buffers, key=lambda b: (-b.padded, b.first, b.last)):
        busy = sorted((p.offset, p.offset + p.padded) for p in placed if p.lives_with(b))
        offset = 0
        for lo, hi in busy:
            if offset + b.padded <= lo:
                break
            offset = max(offset, hi)
        b.offset = offset
        placed.append(b)
    return max((b.offset + b.padded for b in buffers), default=0)

