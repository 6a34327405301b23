"""save/load: one artefact with structure and weights, atomic writes."""

from __future__ import annotations

import os

import numpy as np
import pytest

import boldc
from boldc.errors import ArtefactError
from boldc.fileio import atomic_write

from conftest import GOLDEN


def test_save_load_roundtrip_bit_for_bit(tmp_path):
    m = boldc.load(GOLDEN / "boolean_cnn.bir")
    path = tmp_path / "m.bir"
    boldc.save(m, path)
    back = boldc.load(path)
    assert boldc.dumps(back) == boldc.dumps(m)
    for name, p in m.params.items():
        q = back.params[name]
        assert q.type == p.type and q.data.dtype == p.data.dtype
        assert q.data.tobytes() == p.data.tobytes()
    # b1 weights are stored packed: the file holds ~1 bit per b1 element
    assert path.read_text() == (GOLDEN / "boolean_cnn.bir").read_text()


def test_save_leaves_no_temp_files_and_replaces(tmp_path):
    m = boldc.load(GOLDEN / "boolean_mlp.bir")
    path = tmp_path / "m.bir"
    path.write_text("old")
    boldc.save(m, path)
    assert sorted(os.listdir(tmp_path)) == ["m.bir"]
    assert boldc.load(path).params.keys() == m.params.keys()


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.bir"
    path.write_text("old contents")

    class DiskFull(OSError):
        pass

    def fail(fd):
        raise DiskFull("disk full")

    # the data is written to the temp file, then syncing it fails: the old file stays
    monkeypatch.setattr("boldc.fileio.os.fsync", fail)
    with pytest.raises(ArtefactError, match=r"m.bir: cannot write: disk full"):
        boldc.save(boldc.load(GOLDEN / "boolean_mlp.bir"), path)
    assert path.read_text() == "old contents"
    assert sorted(os.listdir(tmp_path)) == ["m.bir"]


def test_atomic_write_errors(tmp_path):
    with pytest.raises(ArtefactError, match=r"/proc/m.bir: cannot write: "):
        atomic_write("/proc/m.bir", "x")  # a directory nobody may create files in
    with pytest.raises(ArtefactError, match="is a directory"):
        atomic_write(tmp_path, "x")
    with pytest.raises(ArtefactError, match="does not exist"):
        atomic_write(tmp_path / "nope" / "m.bir", "x")


def test_load_errors(tmp_path):
    with pytest.raises(ArtefactError, match=r"no such IR file"):
        boldc.load(tmp_path / "missing.bir")
    (tmp_path / "bin.bir").write_bytes(b"\x80\x81\xff\x00garbage")
    with pytest.raises(ArtefactError, match=r"bin.bir: not a boldc IR file \(not UTF-8 text\)"):
        boldc.load(tmp_path / "bin.bir")
    (tmp_path / "text.bir").write_text("hello world\n")
    with pytest.raises(boldc.BoldcError, match=r"text.bir:1:1: error: unexpected 'hello'"):
        boldc.load(tmp_path / "text.bir")


def test_parse_then_save_of_large_b1_tensor(tmp_path):
    rng = np.random.default_rng(0)
    m = boldc.Module()
    data = rng.random((512, 512, 3, 3)) < 0.5
    m.add_param("w", boldc.tensor("b1", 512, 512, 3, 3), data)
    boldc.save(m, tmp_path / "w.bir")
    size = (tmp_path / "w.bir").stat().st_size
    assert size < data.size / 8 * 1.4  # base64 of packed bits
    assert np.array_equal(boldc.load(tmp_path / "w.bir").params["w"].data, data)


def test_saved_file_has_the_default_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        boldc.save(boldc.load(GOLDEN / "boolean_mlp.bir"), tmp_path / "m.bir")
    finally:
        os.umask(mask)
    assert (tmp_path / "m.bir").stat().st_mode & 0o777 == 0o644
