"""Checkpoints written and read by the C runtime (runtime/bd_ckpt.c) through
CompiledModel: the same bytes as boldc.checkpoint in both directions, and refusal of
bad files with the model's state unchanged (docs/training.md, "Checkpoint format").

The model has every kind of param the layouts convert: b1 filters (rank 4,
channels-last and bit-packed in C), a b1 bias, f32 filters and matrices, the i32 step
counter and f32 scalars.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

import boldc
from boldc.backend.training import TrainOptions, training_module
from boldc.checkpoint import encode_checkpoint, fnv1a64
from boldc.errors import ArtefactError

from trainutil import digits_split, small_cnn

OPTS = {"total_steps": 10, "eta": 20.0}


@pytest.fixture(scope="module")
def trained():
    """A compiled CNN after three steps (non-trivial optimizer state) and its module twin."""
    xtr, _, ytr, _ = digits_split()
    cm = boldc.compile(small_cnn("xnor", "false"), train=True, max_batch=16, **OPTS)
    for s in range(3):
        cm.train_step(xtr[16 * s:16 * s + 16].reshape(-1, 1, 8, 8), ytr[16 * s:16 * s + 16])
    return cm


def _fresh():
    return boldc.compile(small_cnn("xnor", "false"), train=True, max_batch=16, **OPTS)


def _module_with(cm) -> boldc.Module:
    m = training_module(small_cnn("xnor", "false"), TrainOptions.from_kwargs(OPTS))
    for name, p in m.params.items():
        p.data = cm.get_param(name)
    return m


def test_c_writes_the_python_bytes_and_python_reads_them(trained, tmp_path):
    path = tmp_path / "c.ckpt"
    trained.save_checkpoint(path, {"epoch": 3, "note": "é"})
    module = _module_with(trained)
    assert path.read_bytes() == encode_checkpoint(module, {"epoch": 3, "note": "é"})
    other = training_module(small_cnn("xnor", "false"), TrainOptions.from_kwargs(OPTS))
    assert boldc.load_checkpoint(other, path) == {"epoch": 3, "note": "é"}
    for name, p in other.params.items():
        assert np.array_equal(p.data, trained.get_param(name)), name
    kinds = {(p.type.dtype.value, p.type.rank) for p in other.params.values()}
    assert {("b1", 4), ("b1", 1), ("f32", 4), ("f32", 2), ("i32", 0), ("f32", 0)} <= kinds
    assert not [p.name for p in tmp_path.iterdir() if p.name != "c.ckpt"]  # no temp file left


def test_python_writes_and_c_reads(trained, tmp_path):
    path = tmp_path / "py.ckpt"
    boldc.save_checkpoint(_module_with(trained), path, meta={"epoch": 7})
    cm = _fresh()
    assert cm.params_image() != trained.params_image()
    assert cm.load_checkpoint(path) == {"epoch": 7}
    assert cm.params_image() == trained.params_image()
    empty = tmp_path / "empty-meta.ckpt"
    boldc.save_checkpoint(_module_with(trained), empty)
    assert cm.load_checkpoint(empty) == {}


def test_long_meta_is_read(trained, tmp_path):
    meta = {"history": list(range(30000))}  # more than the first meta buffer
    trained.save_checkpoint(tmp_path / "m.ckpt", meta)
    assert _fresh().load_checkpoint(tmp_path / "m.ckpt") == meta


def _fix_crc(raw: bytes) -> bytes:
    return raw[:-4] + struct.pack("<I", zlib.crc32(raw[:-4]))


def _bad_table_hash(raw: bytes) -> bytes:
    return _fix_crc(raw[:24] + struct.pack("<Q", fnv1a64(b"x")) + raw[32:])


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:-9], "checksum mismatch"),
    (lambda raw: raw[:30], "truncated"),
    (lambda raw: raw[:300] + bytes([raw[300] ^ 0x10]) + raw[301:], "checksum mismatch"),
    (lambda raw: b"NOTACKPT" + raw[8:], "bad magic"),
    (lambda raw: _fix_crc(raw[:8] + struct.pack("<I", 2) + raw[12:]), "version is not 1"),
    (_bad_table_hash, "param table hash mismatch"),
    (lambda raw: b"", "bad magic"),
])
def test_bad_files_are_refused_and_change_nothing(trained, tmp_path, damage, message):
    path = tmp_path / "ck.bin"
    trained.save_checkpoint(path)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(damage(path.read_bytes()))
    cm = _fresh()
    before = cm.params_image()
    with pytest.raises(ArtefactError, match=message) as info:
        cm.load_checkpoint(bad)
    assert str(info.value).startswith(str(bad)) and "\n" not in str(info.value)
    assert cm.params_image() == before


def test_other_models_are_refused(trained, tmp_path):
    path = tmp_path / "ck.bin"
    trained.save_checkpoint(path)
    xor = boldc.compile(small_cnn("xor", "false"), train=True, max_batch=16, **OPTS)  # same params: accepted
    xor.load_checkpoint(path)
    assert xor.params_image() == trained.params_image()
    frozen = boldc.compile(small_cnn("xnor", "false"), train=True, max_batch=16, freeze_float=True, **OPTS)
    before = frozen.params_image()
    with pytest.raises(ArtefactError, match="written for another model: it has a param @c0.w.adam_m the model"):
        frozen.load_checkpoint(path)
    assert frozen.params_image() == before


def test_missing_files_and_failed_writes(trained, tmp_path):
    cm = _fresh()
    with pytest.raises(ArtefactError, match="no such checkpoint"):
        cm.load_checkpoint(tmp_path / "nope.ckpt")
    with pytest.raises(ArtefactError, match="not a file"):
        cm.load_checkpoint(tmp_path)
    with pytest.raises(ArtefactError, match="does not exist"):
        cm.save_checkpoint(tmp_path / "missing" / "ck.bin")
    with pytest.raises(ArtefactError, match="is a directory"):
        cm.save_checkpoint(tmp_path)
    # the C writer cannot create its temp file: the old checkpoint stays as it was
    path = tmp_path / "ck.bin"
    trained.save_checkpoint(path)
    good = path.read_bytes()
    (tmp_path / "ck.bin.tmp").mkdir()
    with pytest.raises(ArtefactError, match="cannot write the checkpoint: cannot open the file"):
        cm.save_checkpoint(path)
    assert path.read_bytes() == good


def _refusal(load) -> str:
    """The reason (the message after the file name) a reader gives, or "accepted"."""
    try:
        load()
    except ArtefactError as exc:
        text = str(exc)
        assert "\n" not in text
        return text.split(": ", 1)[1]
    return "accepted"


def test_fuzzed_files_are_refused_alike_by_both_readers(trained, tmp_path):
    """Truncations, bit flips, and header/table bytes changed with the CRC fixed up (so
    that the structural checks must catch them): the C reader and the Python reader
    refuse each file for the same reason and the C model's params stay as they were.
    Only changes the format cannot see (the reserved field) may be accepted."""
    path = tmp_path / "ck.bin"
    trained.save_checkpoint(path, {"epoch": 3})
    raw = path.read_bytes()
    table_len, = struct.unpack_from("<Q", raw, 16)
    meta_len, = struct.unpack_from("<I", raw, 32)
    rng = np.random.default_rng(11)
    cases = {f"first {n} bytes": raw[:n] for n in [*range(0, 60), *rng.integers(60, len(raw), 40)]}
    for pos in rng.integers(0, len(raw), 60):
        cases[f"bit flip at {pos}"] = raw[:pos] + bytes([raw[pos] ^ (1 << int(pos % 8))]) + raw[pos + 1:]
    for pos in [*range(0, 36), *rng.integers(40, 40 + table_len + meta_len, 60)]:
        cases[f"byte {pos} changed, CRC fixed"] = _fix_crc(raw[:pos] + bytes([raw[pos] ^ 0x81]) + raw[pos + 1:])
    for field, fmt, value in [(12, "<I", 2**32 - 1), (16, "<Q", 2**64 - 1), (16, "<Q", 2**64 - 40), (16, "<Q", 0),
                              (32, "<I", 0), (32, "<I", 2**32 - 1), (32, "<I", meta_len + 1)]:
        changed = bytearray(raw)
        struct.pack_into(fmt, changed, field, value)
        cases[f"field at {field} = {value}, CRC fixed"] = _fix_crc(bytes(changed))
    module = _module_with(_fresh())
    cm = _fresh()
    before = cm.params_image()
    bad = tmp_path / "bad.bin"
    reasons = set()
    for name, data in cases.items():
        bad.write_bytes(data)
        in_c = _refusal(lambda: cm.load_checkpoint(bad))
        in_python = _refusal(lambda: boldc.load_checkpoint(module, bad))
        assert in_c != "accepted", name
        assert cm.params_image() == before, f"{name}: the params changed"
        # the same check (worded by each reader); Python calls any file shorter than a header and
        # its trailer "only N bytes", C tells a bad magic from a short file
        agree = _kind(in_c) == _kind(in_python) or _kind(in_python) == "only" and _kind(in_c) in ("magic", "short")
        assert agree, (name, in_c, in_python)
        reasons.add(_kind(in_c))
    assert reasons == {"magic", "short", "version", "checksum", "hash", "offsets", "meta", "malformed"}, reasons


def _kind(reason: str) -> str:
    keys = {"checksum": "checksum", "bad magic": "magic", "only": "only", "truncated": "short", "version": "version",
            "hash": "hash", "offsets": "offsets", "meta": "meta", "malformed": "malformed", "another model": "model"}
    return next((kind for key, kind in keys.items() if key in reason), reason)
