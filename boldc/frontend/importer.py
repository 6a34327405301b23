"""Plain graph -> float IR: the import driver shared by the op handlers.

Every ONNX tensor name is bound to either a ``Const`` (known at import time:
initializers, Constant outputs, folded shape arithmetic) or an IR ``Value``
(computed at run time). A node whose inputs are all constants is folded: shape
ops that may carry the symbolic batch dimension by ``symbolic_folds``, every other
standard op by the generic evaluator that ``onnx.py`` supplies. Other nodes go to
their handler in ``HANDLERS``, which emits registry ops.

Before anything is emitted, ``check_supported`` walks the live part of the graph and
reports every unsupported op type at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from boldc.frontend.graph import Const, Graph, Node, OnnxImportError, sanitize
from boldc.ir.builder import FunctionBuilder
from boldc.ir.core import Module, Op, Param, Value
from boldc.ir.types import DType, TensorType
from boldc.ops.registry import TypeCheck

Handler = Callable[["Importer", Node], list]
HANDLERS: dict[str, Handler] = {}  # op type -> handler for nodes with computed inputs
SYMBOLIC_FOLDS: dict[str, Callable[[Importer, Node, list], list]] = {}  # shape ops on constant shapes

# Never folded even with constant inputs: results differ per run, or subgraphs.
NOT_FOLDABLE = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                          "Multinomial", "Bernoulli", "If", "Loop", "Scan", "SequenceMap"})
# Ops whose output is a constant even when their input is computed (its shape is known).
SHAPE_OF = frozenset({"Shape"})
STANDARD_DOMAINS = ("", "ai.onnx")


def handles(*op_types: str):
    """Decorator registering a handler for ONNX op types."""

    def deco(fn: Handler) -> Handler:
        for t in op_types:
            HANDLERS[t] = fn
        return fn

    return deco


def folds(*op_types: str):
    """Decorator registering a constant fold that understands symbolic shape entries."""

    def deco(fn):
        for t in op_types:
            SYMBOLIC_FOLDS[t] = fn
        return fn

    return deco


# --- the pre-scan -----------------------------------------------------------------------


def live_nodes(graph: Graph) -> list[Node]:
    """Nodes that contribute to a graph output, in graph order."""
    needed = set(graph.outputs)
    live = []
    for node in reversed(graph.nodes):
        if any(o in needed for o in node.outputs if o):
            live.append(node)
            needed.update(i for i in node.inputs if i)
    return live[::-1]


def check_supported(graph: Graph, nodes: list[Node]) -> None:
    """Raise one error naming every unsupported op type (with counts and node names)."""
    const = set(graph.initializers)
    bad: dict[str, list[str]] = {}
    for node in nodes:
        standard = node.domain in STANDARD_DOMAINS
        all_const = all(i in const for i in node.inputs if i)
        foldable = standard and all_const and node.op_type not in NOT_FOLDABLE
        if foldable or (standard and node.op_type in SHAPE_OF):
            const.update(o for o in node.outputs if o)
        if foldable or (standard and node.op_type in HANDLERS):
            continue
        key = node.op_type if standard else f"{node.domain}.{node.op_type}"
        if standard and node.op_type in SYMBOLIC_FOLDS:
            key += " (supported on constants only)"
        bad.setdefault(key, []).append(node.name)
    if bad:
        parts = []
        for op_type, names in sorted(bad.items()):
            shown = ", ".join(f"'{n}'" for n in names[:5]) + (", ..." if len(names) > 5 else "")
            parts.append(f"{op_type} x{len(names)} (node{'s' if len(names) > 1 else ''} {shown})")
        raise OnnxImportError(f"{graph.filename}: unsupported ONNX op{'s' if len(bad) > 1 else ''}: "
                              f"{'; '.join(parts)}. Nothing was converted; docs/convert.md lists the "
                              "supported ops (replace these in the model or export it differently)")


# --- the importer -----------------------------------------------------------------------


class Importer:
    def __init__(self, graph: Graph, fold_node: Callable[[Node, list[np.ndarray]], list[np.ndarray]],
                 input_types: list[TensorType]):
        self.graph = graph
        self.opset = graph.opset
        self.fold_node = fold_node
        self.module = Module()
        self.env: dict[str, Value | Const] = {}
        self.uses: Counter[str] = Counter()
        self._producer: dict[int, Op] = {}
        self._params: dict[tuple, Param] = {}
        self.fb = FunctionBuilder(self.module, "forward",
                                  [(sanitize(i.name, "x"), t) for i, t in zip(graph.inputs, input_types)])
        for name, arr in graph.initializers.items():
            self.env[name] = Const(arr, name)
        for gi, arg in zip(graph.inputs, self.fb.args):
            self.env[gi.name] = arg

    # -- driver ---------------------------------------------------------------------
    def run(self, nodes: list[Node]) -> Module:
        """Convert ``nodes`` (the live nodes, already checked by ``check_supported``)."""
        for node in nodes:
            self.uses.update(i for i in node.inputs if i)
        self.uses.update(self.graph.outputs)
        for node in nodes:
            self.convert(node)
        returns = []
        for name in self.graph.outputs:
            v = self.env.get(name)
            if v is None:
                raise OnnxImportError(f"{self.graph.filename}: graph output '{name}' is not produced by any node, "
                                      "initializer or input of the graph")
            if not isinstance(v, Value) or isinstance(v, Param):
                raise OnnxImportError(f"{self.graph.filename}: graph output '{name}' is a constant; "
                                      "boldc imports models whose outputs depend on their inputs")
            returns.append(v)
        self.fb.ret(*returns)
        from boldc.passes.dce import DeadCodeElimination

        DeadCodeElimination().run(self.module)
        return self.module

    def convert(self, node: Node) -> None:
        inputs = [self.env.get(n) if n else None for n in node.inputs]
        for n, v in zip(node.inputs, inputs):
            if n and v is None:
                raise self.error(node, f"input '{n}' is not defined by any earlier node, initializer or input")
        present = [v for v in inputs if v is not None]
        if node.op_type not in NOT_FOLDABLE and all(isinstance(v, Const) for v in present):
            outs = self._fold(node, inputs)
        else:
            try:
                outs = HANDLERS[node.op_type](self, node)
            except (IndexError, KeyError, TypeError, ValueError) as exc:
                # An attribute or input of an unexpected form that the checks before let
                # through: still one line naming the node, never a traceback.
                raise self.error(node, f"cannot import this node ({type(exc).__name__}: {exc}); if the "
                                       "model is valid, please report it") from None
        for name, out in zip(node.outputs, outs):
            if name in self.env:
                raise self.error(node, f"output '{name}' is already defined (the graph is not in SSA form)")
            if name and out is not None:
                self.env[name] = Const(out, name) if isinstance(out, np.ndarray) else out

    def _fold(self, node: Node, inputs: list) -> list:
        arrays = [None if v is None else v.array for v in inputs]
        if node.op_type in SYMBOLIC_FOLDS:
            outs = SYMBOLIC_FOLDS[node.op_type](self, node, arrays)
            # numpy returns a bare element when indexing an object array down to a scalar
            return [o if o is None or isinstance(o, np.ndarray) else np.array(o, dtype=object) for o in outs]
        if any(v is not None and v.symbolic for v in inputs):
            # e.g. nn.MultiheadAttention's view(L, N * heads, d): a product of symbols has no type
            # (the IR's dimensions are integers or lone symbols)
            raise self.error(node, "computes with a symbolic size (a product or other arithmetic of N, L, ...), "
                                   "which the IR cannot type: fix the batch with " + self._fixed_batch_hint())
        # an object array without symbols (a static entry of a symbolic shape) is plain int64
        arrays = [a.astype(np.int64) if a is not None and a.dtype == object else a for a in arrays]
        try:
            return self.fold_node(node, arrays)
        except OnnxImportError:
            raise
        except Exception as exc:  # the generic evaluator's own error, made one line
            raise self.error(node, f"cannot evaluate this constant node: {exc}") from None

    def _fixed_batch_hint(self) -> str:
        """``--input-shape ids=32xL`` for each input with a symbolic batch (other symbols kept)."""
        hints = [f"--input-shape {gi.name}=" + "x".join("32" if k == 0 and isinstance(d, str) else str(d)
                                                      for k, d in enumerate(arg.type.shape))
                 for gi, arg in zip(self.graph.inputs, self.fb.args)
                 if arg.type.rank and isinstance(arg.type.shape[0], str)]
        return " ".join(hints) if hints else "--input-shape (static sizes)"

    # -- access to inputs ----------------------------------------------------------
    def error(self, node: Node, msg: str) -> OnnxImportError:
        return OnnxImportError(f"{self.graph.filename}: node '{node.name}' ({node.op_type}): {msg}")

    def get(self, node: Node, i: int) -> Value | Const | None:
        name = node.input(i)
        return self.env[name] if name else None

    def is_const(self, node: Node, i: int) -> bool:
        return isinstance(self.get(node, i), Const)

    def const(self, node: Node, i: int, what: str, default: Any = None) -> np.ndarray | None:
        """Input ``i`` as a numpy array; it must be known at import time."""
        v = self.get(node, i)
        if v is None:
            return default
        if not isinstance(v, Const):
            raise self.error(node, f"{what} (input {i}, '{node.input(i)}') must be a constant "
                                   "(an initializer or computable at import time)")
        return v.array

    def const_list(self, node: Node, i: int, what: str, default=None) -> list | None:
        arr = self.const(node, i, what)
        return default if arr is None else [v if isinstance(v, str) else int(v) for v in arr.reshape(-1)]

    def value(self, node: Node, i: int) -> Value:
        """Input ``i`` as an IR value: computed values as they are, constants as f32 params."""
        v = self.get(node, i)
        if v is None:
            raise self.error(node, f"input {i} is missing")
        if isinstance(v, Const):
            return self.param(self.float_array(node, v), v.name, key=(v.name, "as-is"))
        return v

    def weight_name(self, node: Node, i: int, role: str) -> str:
        """Name for the param made from input ``i``: the initializer's name, unless the
        exporter left it anonymous ("onnx::MatMul_72"); then the layer's path in the
        node name ("/classifier/classifier.0/MatMul" -> "classifier.0.weight")."""
        name = node.input(i)
        parts = [p for p in node.name.split("/") if p]
        if name.startswith("onnx::") and len(parts) >= 2:
            return f"{parts[-2]}.{role}"
        return name

    def float_array(self, node: Node, c: Const) -> np.ndarray:
        if c.symbolic or not (np.issubdtype(c.array.dtype, np.floating) or np.issubdtype(c.array.dtype, np.integer)):
            raise self.error(node, f"constant '{c.name}' ({c.array.dtype}) cannot be used as a float tensor")
        return c.array.astype(np.float32)

    # -- building ------------------------------------------------------------------
    def param(self, data: np.ndarray, hint: str, key: tuple | None = None, attrs=None,
              dtype: DType | None = None) -> Param:
        """A module param holding ``data`` named after ``hint`` (sanitized, unique): b1 for
        bool data, else f32 unless ``dtype`` says otherwise (i32 constants next to token ids).
        With ``key``, the same param is returned for the same key (shared weights)."""
        if key is not None and key in self._params:
            return self._params[key]
        base = sanitize(hint, "w")
        name, k = base, 0
        while name in self.module.params:
            k += 1
            name = f"{base}.{k}"
        data = np.ascontiguousarray(data)
        dtype = dtype or (DType.b1 if data.dtype == np.bool_ else DType.f32)
        p = self.module.add_param(name, TensorType(dtype, data.shape), data.astype(dtype.numpy), attrs)
        if key is not None:
            self._params[key] = p
        return p

    def emit(self, node: Node, op_name: str, operands: list[Value], attrs: dict | None = None,
             out: int = 0) -> Value:
        """Append an op for ``node``; type errors name the node."""
        try:
            v = self.fb.op(op_name, operands, attrs or {}, name=sanitize(node.outputs[out], "v"))
        except TypeCheck as exc:
            raise self.error(node, f"{exc}") from None
        self._producer[id(v)] = self.fb.fn.ops[-1]
        return v

    def producer(self, v: Value) -> Op | None:
        return self._producer.get(id(v))

    def remove_op(self, op: Op) -> None:
        """Drop an op emitted earlier (a peephole folded it into its user)."""
        self.fb.fn.ops.remove(op)

    def only_first_output(self, node: Node) -> None:
        for name in node.outputs[1:]:
            if name and self.uses[name]:
                raise self.error(node, f"output '{name}' is used, but boldc imports only the first "
                                       f"output of {node.op_type} (inference semantics)")
