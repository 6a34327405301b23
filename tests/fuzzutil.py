"""Shared pieces of the fuzz tests (tests/test_fuzz_*.py).

Each fuzz test feeds mutated inputs to one reader and enforces one rule: the input is
accepted and valid, or refused with a one-line ``BoldcError``; never another
exception, never a hang. The runs are bounded and seeded (hypothesis, derandomized:
CI sees the same cases every time). ``BOLDC_FUZZ_SCALE=N`` multiplies every test's case
count for longer runs, and ``BOLDC_FUZZ_SEED=S`` draws other cases; each test prints its
counts (run, refused, accepted) — ``pytest -s`` shows them — and appends them as a JSON
line to ``$BOLDC_FUZZ_REPORT`` when it is set.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections import Counter
from contextlib import contextmanager

from hypothesis import HealthCheck, seed, settings
from hypothesis import strategies as st

from boldc.errors import BoldcError

SCALE = max(1, int(os.environ.get("BOLDC_FUZZ_SCALE", "1")))
SEED = os.environ.get("BOLDC_FUZZ_SEED")


def fuzz_settings(examples: int):
    """Hypothesis settings of a fuzz test: ``examples`` × BOLDC_FUZZ_SCALE cases, seeded,
    no example database (nothing is kept between runs), no per-case deadline (the
    ``time_limit`` of each case is the hang check)."""
    base = settings(max_examples=examples * SCALE, deadline=None, database=None, derandomize=SEED is None,
                    suppress_health_check=list(HealthCheck))

    def deco(fn):
        fn = base(fn)
        return seed(int(SEED))(fn) if SEED is not None else fn

    return deco


KINDS = ("flip", "byte", "truncate", "insert", "delete")
SOME_BYTES = st.binary(min_size=1, max_size=8)


def byte_edit(draw, raw: bytes, span: tuple[int, int] | None = None, inserts=SOME_BYTES) -> bytes:
    """``raw`` after one edit drawn with hypothesis's ``draw`` at a position in ``span``
    (default: anywhere): a bit flipped, a byte replaced, the file cut there, bytes
    (from ``inserts``) inserted, or up to 40 bytes deleted."""
    lo, hi = span or (0, len(raw))
    at = draw(st.integers(lo, hi - 1))
    data = bytearray(raw)
    kind = draw(st.sampled_from(KINDS))
    if kind == "flip":
        data[at] ^= 1 << draw(st.integers(0, 7))
    elif kind == "byte":
        data[at] = draw(st.integers(0, 255))
    elif kind == "truncate":
        del data[at:]
    elif kind == "insert":
        data[at:at] = draw(inserts)
    else:
        del data[at:at + draw(st.integers(1, 40))]
    return bytes(data)


class Hang(Exception):
    """A case ran past its time limit."""


@contextmanager
def time_limit(seconds: float):
    """Raise Hang in the block after ``seconds`` (SIGALRM; the main thread of a POSIX
    system, else no limit)."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def expire(*_):
        raise Hang(f"ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Outcomes:
    """Counts of one fuzz test: every case is run, then accepted or refused."""

    def __init__(self, name: str):
        self.name = name
        self.counts: Counter[str] = Counter()

    @contextmanager
    def case(self, seconds: float = 30.0):
        """Run one case: a BoldcError (one line) counts as refused, no error as accepted;
        any other exception, a message of several lines, or a hang fails the test."""
        self.counts["run"] += 1
        try:
            with time_limit(seconds):
                yield
        except BoldcError as exc:
            text = str(exc)
            assert text and "\n" not in text, f"a refusal must be one line: {text!r}"
            self.counts["refused"] += 1
        else:
            self.counts["accepted"] += 1

    def refused(self) -> None:
        """Record a refusal seen another way (a CLI exit 2)."""
        self.counts["run"] += 1
        self.counts["refused"] += 1

    def accepted(self) -> None:
        self.counts["run"] += 1
        self.counts["accepted"] += 1

    def report(self, minimum_run: int) -> None:
        """Print the counts (and append them to $BOLDC_FUZZ_REPORT), then check that the
        run was not empty."""
        c = self.counts
        print(f"\nfuzz {self.name}: {c['run']} run, {c['refused']} refused, {c['accepted']} accepted")
        path = os.environ.get("BOLDC_FUZZ_REPORT")
        if path:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"test": self.name, **c}) + "\n")
        assert c["run"] >= minimum_run, c
        assert c["run"] == c["refused"] + c["accepted"], c
