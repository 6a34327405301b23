"""Checkpoints: every param of a module (weights and optimizer state) in one binary file.

The byte layout is specified in docs/training.md ("Checkpoint format") so that the C
runtime writes and reads the same files. In short, all fields little-endian:

    header   magic "BOLDCKPT", u32 version, u32 param count, u64 table bytes,
             u64 FNV-1a-64 of the table, u32 meta bytes, u32 reserved (0)
    table    per param: u16 name bytes, name (UTF-8), u8 dtype code, u8 rank,
             u32 dims[rank], u64 data offset, u64 data bytes
    meta     free bytes (JSON by convention; may be empty)
    data     each param's raw bytes (b1 packed as in the IR resources), 8-byte aligned
    trailer  u32 CRC-32 (zlib) of every byte before it

``save_checkpoint`` writes atomically; ``load_checkpoint`` checks everything (magic,
version, checksum, that the param table is the module's, and the size: exactly the
trailer's end, no byte more) before it changes a single param, so a refused file
leaves the module as it was.
"""

from __future__ import annotations

import json
import os
import struct
import zlib

from boldc.errors import ArtefactError
from boldc.fileio import atomic_write, read_bytes
from boldc.ir.core import Module
from boldc.ir.resources import from_raw_bytes, raw_bytes
from boldc.ir.types import DType, TensorType

MAGIC = b"BOLDCKPT"
VERSION = 1
HEADER = struct.Struct("<8sIIQQII")  # magic, version, count, table bytes, table hash, meta bytes, reserved
DTYPE_CODES = {DType.f32: 0, DType.i8: 1, DType.i16: 2, DType.i32: 3, DType.b1: 4}
CODE_DTYPES = {v: k for k, v in DTYPE_CODES.items()}
ALIGN = 8


def fnv1a64(data: bytes) -> int:
    """FNV-1a, 64 bit (offset basis 0xcbf29ce484222325, prime 0x100000001b3)."""
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def data_bytes(t: TensorType) -> int:
    n = t.numel()
    return (n + 7) // 8 if t.dtype.is_bool else n * t.dtype.bits // 8


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _table(module: Module, meta_len: int) -> tuple[bytes, list[tuple[int, int]]]:
    """The param table and each param's (offset, bytes) in the file."""
    entries = []
    for p in module.params.values():
        if not p.type.is_static:
            raise ArtefactError(f"param @{p.name} has a symbolic shape {p.type}; it cannot be checkpointed")
        name = p.name.encode("utf-8")
        entries.append((name, p.type))
    table_len = sum(2 + len(name) + 2 + 4 * len(t.shape) + 16 for name, t in entries)
    offset = _align(HEADER.size + table_len + meta_len)
    table, spans = bytearray(), []
    for name, t in entries:
        size = data_bytes(t)
        table += struct.pack("<H", len(name)) + name
        table += struct.pack("<BB", DTYPE_CODES[t.dtype], len(t.shape))
        table += struct.pack(f"<{len(t.shape)}I", *t.shape)
        table += struct.pack("<QQ", offset, size)
        spans.append((offset, size))
        offset = _align(offset + size)
    return bytes(table), spans


def encode_checkpoint(module: Module, meta: dict | None = None) -> bytes:
    """The checkpoint bytes of ``module``'s params (see the module docstring)."""
    missing = [p.name for p in module.params.values() if p.data is None]
    if missing:
        raise ArtefactError(f"param @{missing[0]} has no tensor; nothing to checkpoint")
    meta_raw = json.dumps(meta, sort_keys=True).encode("utf-8") if meta else b""
    table, spans = _table(module, len(meta_raw))
    out = bytearray(HEADER.pack(MAGIC, VERSION, len(module.params), len(table), fnv1a64(table), len(meta_raw), 0))
    out += table + meta_raw
    for p, (offset, size) in zip(module.params.values(), spans):
        out += bytes(offset - len(out))  # zero padding to the 8-byte aligned offset
        raw = raw_bytes(p.data, p.type)
        assert len(raw) == size
        out += raw
    out += bytes(_align(len(out)) - len(out))
    out += struct.pack("<I", zlib.crc32(out))
    return bytes(out)


def save_checkpoint(module: Module, path: str | os.PathLike, meta: dict | None = None) -> None:
    """Write every param of ``module`` (weights and optimizer state) to ``path`` atomically.
    ``meta`` (JSON-serialisable, e.g. the epoch) is stored alongside."""
    atomic_write(path, encode_checkpoint(module, meta))


def load_checkpoint(module: Module, path: str | os.PathLike) -> dict:
    """Read ``path`` into the params of ``module``; returns the stored meta (``{}`` if none).

    Raises ArtefactError (the module unchanged) if the file is missing, truncated, corrupt,
    of another version, or written for a module with other params."""
    raw = read_bytes(path, "checkpoint")
    arrays, meta = decode_checkpoint(module, raw, str(path))
    for name, arr in arrays.items():
        module.params[name].data = arr
    return meta


def decode_meta(text: bytes, where: str) -> dict:
    """The meta section (UTF-8 JSON, an object; empty: {}); an ArtefactError naming ``where``
    otherwise. Both readers, this module's and the C runtime's caller, use it."""
    try:
        meta = json.loads(text.decode("utf-8")) if text else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ArtefactError(f"{where}: meta section is not JSON") from None
    if not isinstance(meta, dict):
        raise ArtefactError(f"{where}: meta section is not a JSON object")
    return meta


def decode_checkpoint(module: Module, raw: bytes, where: str = "<checkpoint>") -> tuple[dict, dict]:
    """Check ``raw`` against ``module``; returns ({param name: array}, meta). Changes nothing."""

    def fail(msg: str) -> ArtefactError:
        return ArtefactError(f"{where}: {msg}")

    if len(raw) < HEADER.size + 4:
        raise fail(f"not a boldc checkpoint (only {len(raw)} bytes)")
    magic, version, count, table_len, table_hash, meta_len, _ = HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise fail("not a boldc checkpoint (bad magic)")
    if version != VERSION:
        raise fail(f"checkpoint format version {version}; this boldc reads version {VERSION}")
    (crc,) = struct.unpack_from("<I", raw, len(raw) - 4)
    if zlib.crc32(raw[:-4]) != crc:
        raise fail("checksum mismatch: the file is truncated or corrupt")
    end = HEADER.size + table_len
    if end + meta_len > len(raw) - 4:
        raise fail("truncated header")
    table = raw[HEADER.size:end]
    if fnv1a64(table) != table_hash:
        raise fail("param table hash mismatch: the file is corrupt")
    stored = _parse_table(table, count, fail)
    expected = [(p.name, p.type) for p in module.params.values()]
    if [(n, t) for n, t, _, _ in stored] != expected:
        raise fail(f"written for another model: {_difference(stored, expected)}")
    if table != _table(module, meta_len)[0]:  # the format fixes every offset (the C reader compares the bytes)
        raise fail("the data offsets of its param table are not the format's: the file is corrupt")
    meta = decode_meta(raw[end:end + meta_len], where)
    arrays = {}
    for name, t, offset, size in stored:
        if size != data_bytes(t) or offset < end + meta_len or offset + size > len(raw) - 4:
            raise fail(f"data of @{name} lies outside the file")
        arrays[name] = from_raw_bytes(raw[offset:offset + size], t)
    data_end = _align(stored[-1][2] + stored[-1][3]) if stored else _align(end + meta_len)
    if data_end + 4 != len(raw):  # the format fixes the size: bytes after the data are corruption too
        raise fail(f"its size ({len(raw)} bytes) is not the {data_end + 4} its header and table give: the file "
                   "is truncated or has bytes after its data")
    return arrays, meta


def _parse_table(table: bytes, count: int, fail) -> list[tuple[str, TensorType, int, int]]:
    out, pos = [], 0
    try:
        for _ in range(count):
            (n,) = struct.unpack_from("<H", table, pos)
            name = table[pos + 2:pos + 2 + n].decode("utf-8")
            pos += 2 + n
            code, rank = struct.unpack_from("<BB", table, pos)
            dims = struct.unpack_from(f"<{rank}I", table, pos + 2)
            offset, size = struct.unpack_from("<QQ", table, pos + 2 + 4 * rank)
            pos += 2 + 4 * rank + 16
            if code not in CODE_DTYPES:
                raise fail(f"param @{name} has an unknown dtype code {code}")
            out.append((name, TensorType(CODE_DTYPES[code], tuple(dims)), offset, size))
    except (struct.error, UnicodeDecodeError):
        raise fail("malformed param table") from None
    if pos != len(table):
        raise fail("malformed param table")
    return out


def _difference(stored, expected) -> str:
    have = {n: t for n, t, _, _ in stored}
    want = dict(expected)
    missing = [n for n in want if n not in have]
    extra = [n for n in have if n not in want]
    if missing:
        return f"it has no param @{missing[0]} ({len(missing)} missing)"
    if extra:
        return f"it has a param @{extra[0]} the model does not have ({len(extra)} extra)"
    for n, t in want.items():
        if have[n] != t:
            return f"param @{n} is {have[n]} there, {t} here"
    return "the params are in another order"

