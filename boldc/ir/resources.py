"""Encoding of parameter tensors in the text format's ``resources`` section.

A tensor is stored as the base64 of its raw little-endian bytes in row-major order;
b1 tensors are bit-packed first (``np.packbits(bitorder="little")``: element k is
bit k%8 of byte k//8), so they cost one bit per element and round-trip bit for bit.
The CRC-32 of the raw bytes guards against corruption.
"""

from __future__ import annotations

import base64
import binascii
import zlib

import numpy as np

from boldc.ir.types import TensorType


def raw_bytes(arr: np.ndarray, type: TensorType) -> bytes:
    if type.dtype.is_bool:
        return np.packbits(arr.reshape(-1), bitorder="little").tobytes()
    return np.ascontiguousarray(arr, dtype=type.dtype.numpy.newbyteorder("<")).tobytes()


def encode(arr: np.ndarray, type: TensorType) -> tuple[int, str]:
    """(crc32 of the raw bytes, base64 text)."""
    raw = raw_bytes(arr, type)
    return zlib.crc32(raw), base64.b64encode(raw).decode("ascii")


def decode(text: str, crc: int, type: TensorType) -> np.ndarray:
    """Inverse of ``encode``; raises ValueError with a reason on any mismatch."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("data is not valid base64") from None
    n = type.numel()
    want = (n + 7) // 8 if type.dtype.is_bool else n * type.dtype.numpy.itemsize
    if len(raw) != want:
        raise ValueError(f"data has {len(raw)} bytes, {type} needs {want}")
    if zlib.crc32(raw) != crc:
        raise ValueError(f"checksum mismatch (crc32 {zlib.crc32(raw):#010x}, recorded {crc:#010x})")
    return from_raw_bytes(raw, type)


def from_raw_bytes(raw: bytes, type: TensorType) -> np.ndarray:
    """Inverse of ``raw_bytes`` (``raw`` has the right length)."""
    if type.dtype.is_bool:
        bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=type.numel(), bitorder="little")
        return bits.astype(np.bool_).reshape(type.shape)
    arr = np.frombuffer(raw, dtype=type.dtype.numpy.newbyteorder("<"))
    return arr.astype(type.dtype.numpy).reshape(type.shape)
