"""A plain-Python view of an ONNX graph, so that only ``boldc/frontend/onnx.py`` imports onnx.

``onnx.py`` reads the protobuf into these structures (attributes as Python values,
tensors as numpy arrays); ``importer.py`` and the op handlers work on them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from boldc.errors import BoldcError


class OnnxImportError(BoldcError):
    """The ONNX model cannot be read or converted (file, node and reason in the message)."""


# A symbolic entry of a constant shape vector (the batch size "N" read by a Shape node).
Symbol = str


@dataclass
class Const:
    """A tensor known at import time: an initializer, a Constant, or a folded result.

    ``array`` is numeric, or an object array of ints and symbols when it holds
    (part of) a shape with the symbolic batch dimension."""

    array: np.ndarray
    name: str

    @property
    def symbolic(self) -> bool:
        return self.array.dtype == object and any(isinstance(v, str) for v in self.array.flat)


@dataclass
class Node:
    op_type: str
    name: str  # the node's name, or a description ("#12 -> out") when it has none
    inputs: list[str]  # "" marks an omitted optional input
    outputs: list[str]
    attrs: dict[str, Any]
    domain: str = ""
    proto: Any = None  # the onnx NodeProto (opaque here), for generic constant folding

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def input(self, i: int) -> str:
        """Name of input ``i``, or "" when it is absent or omitted."""
        return self.inputs[i] if i < len(self.inputs) else ""


@dataclass
class GraphInput:
    name: str
    elem_type: str  # numpy dtype name ("float32") or the ONNX type name when it has none
    dims: list[int | str | None]  # int, a symbolic name, or None (unknown)


@dataclass
class Graph:
    filename: str
    opset: int
    inputs: list[GraphInput]
    outputs: list[str]
    initializers: dict[str, np.ndarray]
    nodes: list[Node] = field(default_factory=list)


_NOT_PLAIN = re.compile(r"[^A-Za-z0-9_.$/-]")


def f32_attr(value) -> float:
    """A float attribute read from ONNX (stored as float32) as the shortest decimal
    that rounds to the same float32: 1e-05 rather than 9.999999747378752e-06."""
    return float(str(np.float32(value)))


def sanitize(name: str, fallback: str = "t") -> str:
    """A readable IR name from an ONNX name: characters outside the IR's plain-name
    alphabet become '_', exporter decorations ('/', '_output_0') are dropped."""
    name = name.strip("/")
    if name.endswith("_output_0"):
        name = name[: -len("_output_0")]
    name = _NOT_PLAIN.sub("_", name)
    return name or fallback
