"""Chains of ONNX nodes that older exporters write for one operation, recognised before the
import and replaced by that operation's node:

- LayerNormalization (before opset 17): ReduceMean(x) -> Sub(x, mean) = d -> Pow(d, 2) ->
  ReduceMean -> Add(var, eps) -> Sqrt -> Div(d, std) [-> Mul(scale) -> Add(bias)];
- Gelu (before opset 20): x · 0.5 · (1 + Erf(x / √2)) (Div by √2 or Mul by 1/√2; the two
  Muls in any order), and the tanh form x · 0.5 · (1 + Tanh(√(2/π) · (x + 0.044715 · x³))).

A chain is replaced only when every piece is there, its constants have the expected values,
and its intermediate results are used nowhere else; otherwise its nodes import one by one
(Pow by 2 and 3 as products, Erf as erf; Sqrt has no op and is listed as unsupported).
"""

from __future__ import annotations

import math

import numpy as np

from boldc.frontend.graph import Graph, Node

SQRT2 = math.sqrt(2.0)
TANH_C = math.sqrt(2.0 / math.pi)
CUBIC = 0.044715
RTOL = 1e-5


class _View:
    """The live nodes with their producers, readers and constant values."""

    def __init__(self, graph: Graph, nodes: list[Node]):
        self.nodes = nodes
        self.producer = {o: n for n in nodes for o in n.outputs if o}
        self.readers: dict[str, list[Node]] = {}
        for n in nodes:
            for i in n.inputs:
                if i:
                    self.readers.setdefault(i, []).append(n)
        self.outputs = set(graph.outputs)
        self.consts = dict(graph.initializers)
        for n in nodes:  # Constant nodes with a plain value
            value = n.attrs.get("value")
            if n.op_type == "Constant" and n.outputs and isinstance(value, np.ndarray):
                self.consts[n.outputs[0]] = n.attrs["value"]

    def made_by(self, name: str, op_type: str) -> Node | None:
        n = self.producer.get(name)
        return n if n is not None and n.op_type == op_type else None

    def private(self, name: str, users: int = 1) -> bool:
        """``name`` is read by exactly ``users`` nodes and is not a graph output."""
        return name not in self.outputs and len(self.readers.get(name, [])) == users

    def scalar(self, name: str, value: float) -> bool:
        arr = self.consts.get(name)
        if arr is None or arr.dtype == object or arr.size != 1:
            return False
        return math.isclose(float(arr.reshape(-1)[0]), value, rel_tol=RTOL, abs_tol=1e-7)

    def const(self, name: str) -> bool:
        return name in self.consts

    def other(self, node: Node, name: str) -> str | None:
        """The other input of a binary node one of whose inputs is ``name``."""
        ins = node.inputs[:2]
        if len(ins) != 2 or name not in ins:
            return None
        return ins[1] if ins[0] == name else ins[0]


def _reduce_axes(v: _View, node: Node, opset: int) -> list[int] | None:
    if node.op_type != "ReduceMean" or not node.attr("keepdims", 1):
        return None
    if opset >= 18:
        arr = v.consts.get(node.input(1)) if node.input(1) else None
        return None if arr is None else [int(a) for a in arr.reshape(-1)]
    axes = node.attr("axes")
    return None if axes is None else [int(a) for a in axes]


def _layernorm(v: _View, div: Node, opset: int) -> tuple[Node, list[Node]] | None:
    """The LayerNormalization ending at Div(d, std) (and its Mul/Add after), or None."""
    if div.op_type != "Div":
        return None
    d, std = div.input(0), div.input(1)
    sqrt = v.made_by(std, "Sqrt")
    sub = v.made_by(d, "Sub")
    if sqrt is None or sub is None or not v.private(std) or not v.private(d, 2):
        return None
    x, mean = sub.input(0), sub.input(1)
    m1 = v.producer.get(mean)
    if m1 is None or m1.input(0) != x or not v.private(mean):
        return None
    axes = _reduce_axes(v, m1, opset)
    add = v.made_by(sqrt.input(0), "Add")
    if axes is None or add is None or not v.private(sqrt.input(0)):
        return None
    var = next((i for i in add.inputs if v.made_by(i, "ReduceMean")), None)
    eps_name = v.other(add, var) if var else None
    if var is None or eps_name is None or not v.const(eps_name) or not v.private(var):
        return None
    m2 = v.producer[var]
    pw = v.made_by(m2.input(0), "Pow")
    if _reduce_axes(v, m2, opset) != axes or pw is None or pw.input(0) != d or not v.scalar(pw.input(1), 2.0) \
            or not v.private(m2.input(0)):
        return None
    eps = v.consts[eps_name]
    if eps.size != 1:
        return None
    chain = [m1, sub, pw, m2, add, sqrt, div]
    ins, out = [x, "", ""], div.outputs[0]
    mul = _single_reader(v, out, "Mul")
    if mul is not None and _row_const(v, v.other(mul, out), len(axes)):
        ins[1], out = v.other(mul, out), mul.outputs[0]
        chain.append(mul)
        bias = _single_reader(v, out, "Add")
        if bias is not None and _row_const(v, v.other(bias, out), len(axes)):
            ins[2], out = v.other(bias, out), bias.outputs[0]
            chain.append(bias)
    node = Node("LayerNormalization", div.name, ins, [out],
                {"axes": axes, "epsilon": float(eps.reshape(-1)[0])})
    return node, chain


def _row_const(v: _View, name: str | None, normalized: int) -> bool:
    """Whether ``name`` is a constant that varies only along the ``normalized`` trailing axes
    (leading 1s aside): a per-feature scale or bias, which a layernorm's operand can hold
    (the handler broadcasts it to the row). A Mul by anything else stays an op of its own."""
    if name is None or not v.const(name):
        return False
    shape = list(np.shape(v.consts[name]))
    while shape and shape[0] == 1:
        shape.pop(0)
    return len(shape) <= normalized


def _single_reader(v: _View, name: str, op_type: str) -> Node | None:
    readers = v.readers.get(name, [])
    if name in v.outputs or len(readers) != 1 or readers[0].op_type != op_type:
        return None
    return readers[0]


def _gelu_core(v: _View, t: Node) -> tuple[str, str, list[Node]] | None:
    """(x, approximate, nodes) of Erf(x/√2) or Tanh(√(2/π)·(x + 0.044715·x³)) at ``t``."""
    if t.op_type == "Erf":
        u = v.producer.get(t.input(0))
        if u is None or not v.private(t.input(0)):
            return None
        if u.op_type == "Div" and v.scalar(u.input(1), SQRT2):
            return u.input(0), "none", [u, t]
        if u.op_type == "Mul":
            for x, c in (u.inputs[:2], u.inputs[1::-1]):
                if v.scalar(c, 1 / SQRT2):
                    return x, "none", [u, t]
        return None
    if t.op_type != "Tanh":
        return None
    scaled = v.made_by(t.input(0), "Mul")
    if scaled is None or not v.private(t.input(0)):
        return None
    inner = next((i for i in scaled.inputs if v.scalar(v.other(scaled, i) or "?", TANH_C)), None)
    s = v.made_by(inner, "Add") if inner else None
    if s is None or not v.private(inner):
        return None
    for x, cubic in (s.inputs[:2], s.inputs[1::-1]):
        m = v.made_by(cubic, "Mul")
        if m is None or not v.private(cubic):
            continue
        cube = next((i for i in m.inputs if v.scalar(v.other(m, i) or "?", CUBIC)), None)
        nodes = _cube_of(v, cube, x) if cube else None
        if nodes is not None:
            return x, "tanh", nodes + [m, s, scaled, t]
    return None


def _cube_of(v: _View, name: str, x: str) -> list[Node] | None:
    """The nodes computing ``name`` = x³ (Pow(x, 3) or x·x·x), or None."""
    n = v.producer.get(name)
    if n is None or not v.private(name):
        return None
    if n.op_type == "Pow" and n.input(0) == x and v.scalar(n.input(1), 3.0):
        return [n]
    if n.op_type == "Mul" and x in n.inputs[:2]:
        sq = v.made_by(v.other(n, x) or "?", "Mul")
        if sq is not None and sq.inputs[:2] == [x, x] and v.private(sq.outputs[0]):
            return [sq, n]
    return None


def _gelu(v: _View, t: Node) -> tuple[Node, list[Node]] | None:
    """x·0.5·(1 + core): Add(core, 1), then two Muls whose leaves are x, the sum and 0.5."""
    core = _gelu_core(v, t)
    if core is None:
        return None
    x, approximate, nodes = core
    plus = _single_reader(v, t.outputs[0], "Add")
    if plus is None or not v.scalar(v.other(plus, t.outputs[0]) or "?", 1.0):
        return None
    m1 = _single_reader(v, plus.outputs[0], "Mul")
    if m1 is None:
        return None
    first = v.other(m1, plus.outputs[0])
    m2 = _single_reader(v, m1.outputs[0], "Mul")
    if m2 is None:
        # x·0.5 computed first: Mul(Mul(x, 0.5), 1 + core)
        half = v.made_by(first or "?", "Mul")
        if half is None or not v.private(first) or sorted([x, v.other(half, x) or "?"]) != sorted(half.inputs[:2]) \
                or not v.scalar(v.other(half, x) or "?", 0.5):
            return None
        chain, out = [half, m1], m1.outputs[0]
    else:
        last = v.other(m2, m1.outputs[0])
        if not ((first == x and v.scalar(last or "?", 0.5)) or (v.scalar(first or "?", 0.5) and last == x)):
            return None
        chain, out = [m1, m2], m2.outputs[0]
    return Node("Gelu", t.name, [x], [out], {"approximate": approximate}), nodes + [t, plus] + chain


def recognise(graph: Graph, nodes: list[Node]) -> list[Node]:
    """``nodes`` with each recognised chain replaced by one node, at the place of its last
    node (its inputs are computed before the chain starts)."""
    v = _View(graph, nodes)
    replaced: dict[int, Node] = {}  # id of a chain's last node -> the node replacing the chain
    dropped: set[int] = set()
    for n in nodes:
        if id(n) in dropped:
            continue
        found = _layernorm(v, n, graph.opset) if n.op_type == "Div" else \
            _gelu(v, n) if n.op_type in ("Erf", "Tanh") else None
        if found is None or any(id(c) in dropped for c in found[1]):
            continue
        new, chain = found
        last = max(chain, key=nodes.index)
        dropped.update(id(c) for c in chain)
        replaced[id(last)] = new
    return [replaced.get(id(n), n) for n in nodes if id(n) not in dropped or id(n) in replaced]
