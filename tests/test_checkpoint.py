"""Checkpoints: round trip, the documented byte layout, and refusal of bad files."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest

import boldc
from boldc.checkpoint import HEADER, MAGIC, fnv1a64, load_checkpoint, save_checkpoint
from boldc.errors import ArtefactError

from trainutil import digits_mlp, make_train_step

RNG = np.random.default_rng(5)


@pytest.fixture
def trained():
    """A digits MLP with optimizer state, after two steps (non-trivial state everywhere)."""
    m = make_train_step(digits_mlp(hidden=(12, 20)), "", "eta=30")
    for _ in range(2):
        boldc.interpret(m, [RNG.random((8, 64)).astype(np.float32), RNG.integers(0, 10, 8).astype(np.int32)],
                        "train_step")
    return m


def _state(m):
    return {n: p.data.copy() for n, p in m.params.items()}


def _same(a, b):
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def test_round_trip_restores_every_param(trained, tmp_path):
    path = tmp_path / "ck.bin"
    save_checkpoint(trained, path, meta={"epoch": 3})
    want = _state(trained)
    other = make_train_step(digits_mlp(seed=7, hidden=(12, 20)), "", "eta=30")
    assert not _same(_state(other), want)
    assert load_checkpoint(other, path) == {"epoch": 3}
    assert _same(_state(other), want)
    assert {"fc1.w", "fc1.w.m", "fc1.w.beta", "fc0.w.adam_v", "opt.step"} <= set(want)


def test_training_resumes_identically(trained, tmp_path):
    path = tmp_path / "ck.bin"
    save_checkpoint(trained, path)
    resumed = trained.copy()
    x, y = RNG.random((8, 64)).astype(np.float32), RNG.integers(0, 10, 8).astype(np.int32)
    for m in (trained, resumed):
        boldc.interpret(m, [x, y], "train_step")
    load_checkpoint(resumed, path)
    boldc.interpret(resumed, [x, y], "train_step")
    assert _same(_state(resumed), _state(trained))


def test_byte_layout_is_the_documented_one(trained, tmp_path):
    path = tmp_path / "ck.bin"
    save_checkpoint(trained, path, meta={"a": 1})
    raw = path.read_bytes()
    magic, version, count, table_len, table_hash, meta_len, reserved = HEADER.unpack_from(raw)
    assert HEADER.size == 40 and (magic, version, reserved) == (b"BOLDCKPT", 1, 0)
    assert count == len(trained.params)
    table = raw[40:40 + table_len]
    assert fnv1a64(table) == table_hash
    assert json.loads(raw[40 + table_len:40 + table_len + meta_len]) == {"a": 1}
    assert struct.unpack("<I", raw[-4:])[0] == zlib.crc32(raw[:-4])
    pos = 0
    codes = {"f32": 0, "i8": 1, "i16": 2, "i32": 3, "b1": 4}
    for p in trained.params.values():
        (n,) = struct.unpack_from("<H", table, pos)
        assert table[pos + 2:pos + 2 + n].decode() == p.name
        pos += 2 + n
        code, rank = struct.unpack_from("<BB", table, pos)
        dims = struct.unpack_from(f"<{rank}I", table, pos + 2)
        offset, size = struct.unpack_from("<QQ", table, pos + 2 + 4 * rank)
        pos += 2 + 4 * rank + 16
        assert code == codes[p.type.dtype.value] and dims == tuple(p.type.shape) and offset % 8 == 0
        blob = raw[offset:offset + size]
        if p.type.dtype.is_bool:
            assert blob == np.packbits(p.data.reshape(-1), bitorder="little").tobytes()
        else:
            assert blob == p.data.astype(p.data.dtype.newbyteorder("<")).tobytes()
    assert pos == table_len
    assert len(raw) % 8 == 4  # data padded to 8 bytes, then the CRC


def test_magic_constant():
    assert MAGIC == b"BOLDCKPT"


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:-9], "checksum mismatch"),
    (lambda raw: raw[:30], "not a boldc checkpoint"),
    (lambda raw: raw[:200] + bytes([raw[200] ^ 0x10]) + raw[201:], "checksum mismatch"),
    (lambda raw: b"NOTACKPT" + raw[8:], "bad magic"),
    (lambda raw: raw[:8] + struct.pack("<I", 2) + raw[12:], "format version 2"),
    (lambda raw: b"", "only 0 bytes"),
])
def test_corrupt_files_are_refused_and_change_nothing(trained, tmp_path, damage, message):
    path = tmp_path / "ck.bin"
    save_checkpoint(trained, path)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(damage(path.read_bytes()))
    other = make_train_step(digits_mlp(seed=3, hidden=(12, 20)), "", "eta=30")
    before = _state(other)
    with pytest.raises(ArtefactError, match=message):
        load_checkpoint(other, bad)
    assert _same(_state(other), before)


def test_other_models_are_refused(trained, tmp_path):
    path = tmp_path / "ck.bin"
    save_checkpoint(trained, path)
    wider = make_train_step(digits_mlp(hidden=(12, 21)), "", "eta=30")
    before = _state(wider)
    with pytest.raises(ArtefactError, match=r"written for another model: param @fc1.w is b1\[20, 12\] there"):
        load_checkpoint(wider, path)
    assert _same(_state(wider), before)
    plain = digits_mlp(hidden=(12, 20))  # no optimizer state
    with pytest.raises(ArtefactError, match="has a param @opt.step the model does not have .11 extra."):
        load_checkpoint(plain, path)


def test_missing_file_and_directories(tmp_path, trained):
    with pytest.raises(ArtefactError, match="no such checkpoint"):
        load_checkpoint(trained, tmp_path / "nope.bin")
    with pytest.raises(ArtefactError, match="is a directory"):
        load_checkpoint(trained, tmp_path)
    with pytest.raises(ArtefactError, match="does not exist"):
        save_checkpoint(trained, tmp_path / "missing" / "ck.bin")


def test_save_is_atomic(trained, tmp_path, monkeypatch):
    """A failure while writing leaves the previous checkpoint intact and no temp file."""
    path = tmp_path / "ck.bin"
    save_checkpoint(trained, path)
    good = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(ArtefactError, match="cannot write: disk full"):
        save_checkpoint(trained, path, meta={"x": 1})
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["ck.bin"]
