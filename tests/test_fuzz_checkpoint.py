"""Fuzzing the checkpoint readers: mutations of a checkpoint of the digits MLP's training
state through the Python reader (``boldc.checkpoint``) and the C reader
(``CompiledModel.load_checkpoint``, runtime/bd_ckpt.c). Rule (tests/fuzzutil.py), and
the two must agree: both accept the file and load the same params and meta, or both
refuse it with a one-line BoldcError, the C model's params unchanged."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from fuzzutil import Outcomes, fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

import boldc
from boldc.backend.training import TrainOptions, training_module
from boldc.checkpoint import HEADER, _align, _table, decode_checkpoint, encode_checkpoint, fnv1a64
from boldc.errors import BoldcError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
META = {"epoch": 2, "run": {"epochs": 3, "batch": 4}}


@pytest.fixture(scope="module")
def subject():
    """(training module, its compiled model, a valid checkpoint of it)."""
    module = training_module(boldc.convert(EXAMPLES / "digits_mlp.onnx"), TrainOptions.from_kwargs({}))
    rng = np.random.default_rng(0)
    for p in module.params.values():  # state that differs from the compiled model's own
        p.data = (rng.random(p.data.shape) < 0.5) if p.type.dtype.is_bool else \
            rng.integers(-9, 9, p.data.shape).astype(p.data.dtype)
    cm = boldc.compile(module, train=True, max_batch=4)
    return module, cm, encode_checkpoint(module, META)


def _fix_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def _layout(module, meta_raw: bytes) -> bytes:
    """A checkpoint of ``module`` with any meta bytes (the writer takes JSON objects only)."""
    table, spans = _table(module, len(meta_raw))
    out = bytearray(HEADER.pack(b"BOLDCKPT", 1, len(module.params), len(table), fnv1a64(table), len(meta_raw), 0))
    out += table + meta_raw
    from boldc.ir.resources import raw_bytes

    for p, (offset, _) in zip(module.params.values(), spans):
        out += bytes(offset - len(out)) + raw_bytes(p.data, p.type)
    out += bytes(_align(len(out)) - len(out))
    return _fix_crc(bytes(out))


HEADER_FIELDS = {"version": (8, "<I"), "count": (12, "<I"), "table_bytes": (16, "<Q"), "table_hash": (24, "<Q"),
                 "meta_bytes": (32, "<I"), "reserved": (36, "<I")}
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                       max_size=3), max_leaves=6)


@st.composite
def mutation(draw, subject):
    module, _, raw = subject
    table_len = struct.unpack_from("<Q", raw, 16)[0]
    kind = draw(st.sampled_from(["bytes", "bytes_crc", "header", "table", "meta", "meta_bytes", "data", "trailing",
                                 "truncate", "padding"]))
    data = bytearray(raw)
    if kind in ("bytes", "bytes_crc"):
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        return kind, bytes(data) if kind == "bytes" else _fix_crc(bytes(data[:-4]))
    if kind == "header":
        offset, fmt = HEADER_FIELDS[draw(st.sampled_from(sorted(HEADER_FIELDS)))]
        bits = 8 * struct.calcsize(fmt)
        value = draw(st.one_of(st.integers(0, 2**bits - 1), st.sampled_from([0, 1, 2**bits - 1, len(raw)])))
        struct.pack_into(fmt, data, offset, value)
        return kind, _fix_crc(bytes(data[:-4]))
    if kind == "table":  # an edited table whose hash and CRC are right: only the model check can refuse it
        at = HEADER.size + draw(st.integers(0, table_len - 1))
        data[at] = draw(st.integers(0, 255))
        struct.pack_into("<Q", data, 24, fnv1a64(bytes(data[HEADER.size:HEADER.size + table_len])))
        return kind, _fix_crc(bytes(data[:-4]))
    if kind == "meta":
        return kind, _layout(module, json.dumps(draw(JSON_VALUES)).encode())
    if kind == "meta_bytes":
        return kind, _layout(module, draw(st.binary(max_size=40)))
    if kind == "data":  # other weights, CRC right: a valid checkpoint
        start = _align(HEADER.size + table_len + struct.unpack_from("<I", raw, 32)[0])
        at = draw(st.integers(start, len(data) - 5))
        data[at] = draw(st.integers(0, 255))
        return kind, _fix_crc(bytes(data[:-4]))
    if kind == "trailing":
        return kind, _fix_crc(bytes(data[:-4]) + draw(st.binary(min_size=1, max_size=16)))
    if kind == "truncate":
        cut = draw(st.integers(0, len(data) - 1))
        return kind, bytes(data[:cut]) if draw(st.booleans()) else _fix_crc(bytes(data[:max(0, cut - 4)]))
    # padding: the zero bytes before a param's data, made non-zero (CRC right): neither reader checks them
    table, spans = _table(module, struct.unpack_from("<I", raw, 32)[0])
    gaps = [o for o, (offset, _) in enumerate(spans) if o and spans[o - 1][0] + spans[o - 1][1] < offset]
    if not gaps:
        return kind, raw
    offset = spans[draw(st.sampled_from(gaps))][0]
    data[offset - 1] = draw(st.integers(1, 255))
    return kind, _fix_crc(bytes(data[:-4]))


def _same(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def test_fuzz_checkpoint_python_and_c_readers_agree(subject, tmp_path):
    module, cm, _ = subject
    outcomes = Outcomes("checkpoint (Python and C readers)")
    before = {name: cm.get_param(name).copy() for name in module.params}

    @fuzz_settings(examples=150)
    @given(mutation(subject))
    def case(m):
        kind, raw = m
        path = tmp_path / "fuzz.ckpt"
        path.write_bytes(raw)
        python = c = None
        with outcomes.case():
            try:
                python = decode_checkpoint(module, raw, str(path))
            except BoldcError as exc:
                python = exc
            try:
                c = cm.load_checkpoint(path)
            except BoldcError as exc:
                c = exc
            for side in (python, c):
                if isinstance(side, BoldcError):
                    assert "\n" not in str(side) and str(side).startswith(str(path))
            assert isinstance(python, BoldcError) == isinstance(c, BoldcError), \
                f"{kind}: the readers disagree: Python {python!r}, C {c!r}"
            if isinstance(c, BoldcError):
                for name, arr in before.items():
                    assert _same(cm.get_param(name), arr), f"{kind}: the refused file changed @{name}"
                raise c
            arrays, meta = python
            assert json.dumps(meta, sort_keys=True) == json.dumps(c, sort_keys=True), kind  # NaN as NaN
            for name, arr in arrays.items():
                assert _same(cm.get_param(name), arr), f"{kind}: @{name} differs between the readers"
            for name, arr in before.items():  # back to the state the next case starts from
                cm.set_param(name, arr)

    case()
    outcomes.report(minimum_run=150)
    assert outcomes.counts["accepted"] >= 5 and outcomes.counts["refused"] >= 50
