"""lower-boolean: a float network becomes a Boolean one (docs/method.md §5).

- Arithmetic layers (trait ``Layer``) become their ``BooleanCounterpart``
  (conv2d -> bconv2d, linear -> blinear) except those kept float (``float-layers``,
  default the first and the last). Weights become b1 params of the same name:
  ``init=sign`` takes W >= 0 -> T (negated for logic xor, so that every product
  e(L(x, w)) keeps the sign of the float product x·w), ``init=random`` draws bits with
  ``seed``. A float bias becomes a b1 bias, b >= 0 -> T (the bias enters as e(w0),
  not through the logic).
- A layer's input must be b1: a ``threshold`` (the op with the trait ``Binarize``) is
  inserted where it is not.
- Normalizations (trait ``Normalization``) are removed, or kept with ``keep-bn``; one
  that is ``boolean_only`` (LRN) is removed only between a Boolean layer and the
  activation that becomes its threshold (looking through ops that are neither layers nor
  activations), and stays float elsewhere.
- Activations (trait ``Activation``) become ``threshold`` on their input (T iff x >= 0)
  when they touch a Boolean layer: their input comes from one, or their output goes
  to one, looking through non-arithmetic ops (not through a ``FloatOnlyLayer``, the
  transposed convolution, which is never Boolean and is not among the layers counted by
  ``float-layers``). Activations wholly inside a float part (for example after the last
  float layer) stay.
- Transformers (ops with the trait ``RealFeatures``: LayerNorm, the attention products,
  embeddings): a converted layer whose input comes from such an op (looking back through
  ops that are neither layers nor activations) reads real features; it becomes its
  ``MixedCounterpart`` (linear -> mlinear: real input, b1 weights), or with
  ``binarize-activations`` reads a threshold of them and becomes Boolean. ``first`` in
  ``float-layers`` does not keep such a layer float (it reads its real input as it is). A
  converted layer whose output reaches such an op (looking forward the same way: Q, K, V, the
  attention output and the second feed-forward layer) gets a per-output scale
  α_j = mean_i |W[j, i]| (``layer-scale``), so that its values keep the float layer's scale.
- Other ops with a ``BooleanCounterpart`` (maxpool2d -> bmaxpool2d, the OR-pool) take
  it when their input has become b1. An op that refuses its new b1 or integer
  operands gets them cast to f32 (b1 as e(b) = ±1).

The pass decides every op's fate on the float graph first, then rewrites @forward in
place with a ``Rewriter`` (every op is re-typed on its new operands). It asks the
registry for traits and counterparts; it never tests op names.
"""

from __future__ import annotations

import numpy as np

from boldc.errors import BoldcError
from boldc.ir.core import Module, Op, Param, Value
from boldc.ir.rewriter import Rewriter
from boldc.ir.types import DType, TensorType
from boldc.ops.registry import TypeCheck, lookup, the_op_with
from boldc.ops.traits import (
    Activation,
    Binarize,
    BooleanCounterpart,
    Cast,
    FloatOnlyLayer,
    Layer,
    MixedCounterpart,
    Normalization,
    RealFeatures,
)
from boldc.passes.dce import DeadCodeElimination
from boldc.passes.manager import NeedsFunction, Option, Pass, register_pass

LOGICS = ("xnor", "xor")
INITS = ("sign", "random")


def is_layer(op: Op) -> bool:
    return lookup(op.name).has(Layer)


def arithmetic_layers(module: Module, func: str = "forward") -> list[Op]:
    return [op for op in module.ops(func) if is_layer(op)]


def layer_name(op: Op) -> str:
    """How options and reports name a layer: its weight param, else its result."""
    if len(op.operands) > 1 and isinstance(op.operands[1], Param):
        return op.operands[1].name
    return op.results[0].name


def select_float_layers(layers: list[Op], selectors: list, real_input: frozenset[int] = frozenset()) -> set[int]:
    """Indices of the layers kept float. Selectors: ``first``, ``last``, ``none``, ``all``,
    an index into the arithmetic layers (negative from the end) or a layer name. ``first``
    selects nothing when the first layer is in ``real_input`` (it reads real features and
    becomes mixed, reading them as they are)."""
    keep: set[int] = set()
    names = [layer_name(op) for op in layers]
    for raw in selectors:
        s = str(raw).strip()
        if s in ("", "none"):
            continue
        if s == "all":
            keep.update(range(len(layers)))
        elif s in ("first", "last"):
            if layers and not (s == "first" and 0 in real_input):
                keep.add(0 if s == "first" else len(layers) - 1)
        elif s.lstrip("-").isdigit():
            i = int(s)
            if not -len(layers) <= i < len(layers):
                raise BoldcError(f"float layer index {i} is out of range: the model has {len(layers)} "
                                 "arithmetic layers")
            keep.add(i % len(layers))
        elif s in names:
            keep.add(names.index(s))
        else:
            raise BoldcError(f"unknown float layer '{s}': use first, last, none, all, an index or a layer "
                             f"name ({', '.join(names)})")
    return keep


def reached_layers(rw: Rewriter, start: Value, forward: bool) -> list[Op]:
    """Arithmetic layers reached from ``start`` through non-layer ops (following readers
    when ``forward``, else producers). A ``FloatOnlyLayer`` ends the search without being
    found: the values beyond it are its float results, not the layers' outputs."""
    found = reached(rw, start, forward, lambda op: is_layer(op) or lookup(op.name).has(FloatOnlyLayer))
    return [op for op in found if is_layer(op)]


def is_layer_or_activation(op: Op) -> bool:
    """A layer (float-only ones too) or an activation: where a normalization's neighbourhood ends."""
    opdef = lookup(op.name)
    return opdef.has(Layer) or opdef.has(FloatOnlyLayer) or opdef.has(Activation)


def near_real_features(rw: Rewriter, start: Value, forward: bool) -> bool:
    """Whether an op with ``RealFeatures`` is reached from ``start`` through ops that are
    neither layers, activations nor such ops (readers when ``forward``, else producers)."""
    def real(op: Op) -> bool:
        return lookup(op.name).has(RealFeatures)

    return any(real(op) for op in reached(rw, start, forward, lambda op: is_layer_or_activation(op) or real(op)))


def reached(rw: Rewriter, start: Value, forward: bool, stops) -> list[Op]:
    """The ops for which ``stops(op)`` holds reached from ``start`` through ops for which it
    does not (following readers when ``forward``, else producers)."""
    found, seen, todo = [], set(), [start]
    while todo:
        v = todo.pop()
        producer = None if forward else rw.producer(v)
        for op in rw.users(v) if forward else ([producer] if producer else []):
            if op in seen:
                continue
            seen.add(op)
            if stops(op):
                found.append(op)
            else:
                todo.extend(op.results if forward else [o for o in op.operands if not isinstance(o, Param)])
    return found


@register_pass
class LowerBoolean(Pass):
    name = "lower-boolean"
    options = {
        "keep-bn": Option(bool, False, "keep normalizations (float, trainable; fold-bn folds them for inference)"),
        "logic": Option(str, "xnor", "neuron logic of the Boolean layers: xnor | xor"),
        "float-layers": Option(list, ["first", "last"], "layers kept float: first, last, none, all, "
                                                         "indices or layer names"),
        "init": Option(str, "sign", "initial Boolean weights: sign (w >= 0 -> T) | random"),
        "seed": Option(int, 0, "seed of init=random"),
        "binarize-activations": Option(bool, False, "threshold the real input of layers that read real features "
                                                    "(LayerNorm, attention) so that they are Boolean, not mixed"),
        "layer-scale": Option(bool, True, "a per-output scale mean|W_j| after each converted layer whose output "
                                          "reaches real features (transformers)"),
    }
    requires = (NeedsFunction("forward"),)

    def run(self, module: Module) -> bool:
        o = self.opts
        if o["logic"] not in LOGICS:
            raise BoldcError(f"logic must be one of {', '.join(LOGICS)}, got '{o['logic']}'")
        if o["init"] not in INITS:
            raise BoldcError(f"init must be one of {', '.join(INITS)}, got '{o['init']}'")
        others = [f"@{name}" for name in module.functions if name != "forward"]
        if others:
            raise BoldcError(f"lower-boolean rewrites @forward of a float model; this module also has "
                             f"{', '.join(others)} (lower before adding training functions)")
        self._rng = np.random.default_rng(o["seed"])
        self._binarize = the_op_with(Binarize).name
        self._cast = the_op_with(Cast).name
        self._module = module
        self._bits: dict[str, Param] = {}
        fn = module.function("forward")
        rw = Rewriter(fn)
        layers = arithmetic_layers(module)
        real_in = frozenset(i for i, op in enumerate(layers) if near_real_features(rw, op.operands[0], False))
        kept = select_float_layers(layers, o["float-layers"], real_in)
        converted = {op for i, op in enumerate(layers) if i not in kept and lookup(op.name).has(BooleanCounterpart)}
        self._mixed = set() if o["binarize-activations"] else \
            {layers[i] for i in real_in if layers[i] in converted and lookup(layers[i].name).has(MixedCounterpart)}
        self._scaled = {op for op in converted if o["layer-scale"] and near_real_features(rw, op.results[0], True)}
        thresholds = {op for op in fn.ops if self._becomes_threshold(rw, op, converted)}
        self._removed = {op for op in fn.ops if self._removed_normalization(rw, op, converted, thresholds)}
        # Params that stay in use by ops this pass does not turn Boolean keep their name.
        self._float_names = {v.name for op in fn.ops if op not in converted
                             for v in op.operands if isinstance(v, Param)}
        try:
            for op in list(fn.ops):
                self._lower(rw, op, converted, thresholds)
        except TypeCheck as exc:
            raise BoldcError(f"lower-boolean: cannot lower this model: {exc}") from None
        fn.result_types = [v.type for v in fn.returns]  # a Boolean last layer returns integers
        DeadCodeElimination().run(module)
        return True

    def _lower(self, rw: Rewriter, op: Op, converted: set[Op], thresholds: set[Op]) -> None:
        """Rewrite one op of the float graph on its (already lowered) operands."""
        if op in self._removed:
            rw.replace_with(op, [op.operands[0]])
        elif op in converted:
            self._boolean_layer(rw, op)
        elif op in thresholds:
            x = op.operands[0]
            if x.type.dtype.is_bool:
                rw.replace_with(op, [x])
            else:
                rw.replace_op(op, self._binarize, [x])
        else:
            self._reemit(rw, op)

    # -- pieces ------------------------------------------------------------------------------
    def _becomes_threshold(self, rw: Rewriter, op: Op, converted: set[Op]) -> bool:
        """An activation (not already a threshold) next to a Boolean layer."""
        opdef = lookup(op.name)
        if not opdef.has(Activation) or opdef.has(Binarize):
            return False
        near = reached_layers(rw, op.operands[0], False) + reached_layers(rw, op.results[0], True)
        return any(a in converted for a in near)

    def _removed_normalization(self, rw: Rewriter, op: Op, converted: set[Op], thresholds: set[Op]) -> bool:
        """A normalization the lowering drops (unless keep-bn): any, or a ``boolean_only`` one
        between a Boolean layer and the activation that becomes its threshold."""
        norm = lookup(op.name).trait(Normalization)
        if norm is None or self.opts["keep-bn"]:
            return False
        if not norm.boolean_only:
            return True
        before = set(reached(rw, op.operands[0], False, is_layer_or_activation))
        after = set(reached(rw, op.results[0], True, is_layer_or_activation))
        return bool(before & converted) and bool(after & thresholds)

    def _boolean_layer(self, rw: Rewriter, op: Op) -> None:
        """The layer with b1 weights: Boolean on bits (a threshold inserted where its input is
        not b1), or mixed on its real input; then its per-output scale where it has one."""
        x = op.operands[0]
        mixed = op in self._mixed and not x.type.dtype.is_bool
        trait = MixedCounterpart if mixed else BooleanCounterpart
        counterpart = lookup(lookup(op.name).trait(trait).op)
        if not mixed and not x.type.dtype.is_bool:
            x = rw.op(self._binarize, [x], hint=f"{x.name}.bits", before=op)
        w = op.operands[1]
        scale = self._scale_of(op) if op in self._scaled else None
        operands = [x, self._bits_of(w, through_logic=True)]
        if len(op.operands) > 2:
            b = op.operands[2]
            if mixed:  # a real bias, inside the scale: alpha · (b / alpha + s) = b + alpha · s
                data = b.data if scale is None else (b.data / scale.data.reshape(-1)).astype(np.float32)
                operands.append(self._float_param(f"{b.name}.mixed" if scale is not None else b.name, data, b))
            else:
                operands.append(self._bits_of(b, through_logic=False))
        attrs = {k: v for k, v in op.attrs.items() if counterpart.attr_spec(k) is not None}
        attrs["logic"] = self.opts["logic"]
        at = rw.fn.ops.index(op) + 1
        after = rw.fn.ops[at] if at < len(rw.fn.ops) else None
        y = rw.replace_op(op, counterpart.name, operands, attrs)
        if scale is not None:
            scaled = rw.op("mul", [y, scale], hint=f"{y.name}.scaled", before=after)
            mul = rw.producer(scaled)
            rw.replace_all_uses(y, scaled, where=lambda user: user is not mul)
            rw.fn.returns = [scaled if v is y else v for v in rw.fn.returns]

    def _scale_of(self, op: Op) -> Param:
        """alpha_j = mean_i |W[j, i]| (0 -> 1): the ±1 weights' least-squares scale of the float
        weights, f32 [n] (linear) or [n, 1, 1] (conv, on the channel axis), trainable."""
        w = op.operands[1]
        if not isinstance(w, Param) or w.data is None:
            raise BoldcError(f"cannot scale {op.describe()}: its weights are not a param with data")
        alpha = np.abs(w.data.astype(np.float64)).reshape(w.data.shape[0], -1).mean(axis=1)
        alpha = np.where(alpha > 0, alpha, 1.0).astype(np.float32)
        if lookup(op.name).trait(Layer).kind == "conv":
            alpha = alpha.reshape(-1, 1, 1)
        return self._float_param(f"{w.name}.scale", alpha, w)

    def _float_param(self, name: str, data: np.ndarray, like: Param) -> Param:
        if name == like.name and data is like.data:
            return like
        p = Param(name, TensorType(DType.f32, data.shape), data)
        self._module.params[name] = p
        return p

    def _bits_of(self, w: Value, through_logic: bool) -> Param:
        """The b1 param replacing float weights (or bias) ``w``."""
        if not isinstance(w, Param) or w.data is None:
            raise BoldcError(f"cannot make Boolean weights from {w.ref}: layer weights must be params with data")
        if w.name in self._bits:
            return self._bits[w.name]
        if self.opts["init"] == "sign":
            bits = w.data >= 0
            if through_logic and self.opts["logic"] == "xor":
                bits = ~bits  # e(xor(x, ¬w)) = e(xnor(x, w)): same products as the sign of w
            attrs = {"init": "sign"}
        else:
            bits = self._rng.random(w.data.shape) < 0.5
            attrs = {"init": "random", "seed": self.opts["seed"]}
        name = w.name
        if name in self._float_names:  # still used by a float op: do not shadow it
            name = f"{w.name}.bits"
        p = Param(name, TensorType(DType.b1, w.type.shape), bits, attrs)
        self._module.params[name] = p  # replaces the float param of the same name
        self._bits[w.name] = p
        return p

    def _reemit(self, rw: Rewriter, op: Op) -> None:
        """The op again on its new operands: a layer kept float stays float; other ops
        (pools) take their Boolean form on b1 input; an op that refuses b1 or integer
        operands gets them cast to f32."""
        opdef = lookup(op.name)
        ins = list(op.operands)
        counterpart = None if opdef.has(Layer) else opdef.trait(BooleanCounterpart)
        values = [v for v in ins if not isinstance(v, Param)]
        if counterpart and values and all(v.type.dtype.is_bool for v in values):
            cdef = lookup(counterpart.op)
            attrs = {k: v for k, v in op.attrs.items() if cdef.attr_spec(k) is not None}
            rw.replace_op(op, counterpart.op, ins, attrs)
            return
        try:
            rw.replace_op(op, op.name, ins, dict(op.attrs))
        except TypeCheck:
            if all(v.type.dtype.is_float for v in values):
                raise
            cast = [v if isinstance(v, Param) or v.type.dtype.is_float
                    else rw.op(self._cast, [v], {"to": "f32"}, hint=f"{v.name}.f32", before=op) for v in ins]
            rw.replace_op(op, op.name, cast, dict(op.attrs))
