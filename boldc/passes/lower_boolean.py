"""lower-boolean: a float network becomes a Boolean one (SPEC §5).

- Arithmetic layers (trait "arithmetic") become their ``boolean_counterpart``
  (conv2d -> bconv2d, linear -> blinear) except those kept float (``float-layers``,
  default the first and the last). Weights become b1 params of the same name:
  ``init=sign`` takes W >= 0 -> T (negated for logic xor, so that every product
  e(L(x, w)) keeps the sign of the float product x·w), ``init=random`` draws bits with
  ``seed``. A float bias becomes a b1 bias, b >= 0 -> T (the bias enters as e(w0),
  not through the logic).
- A layer's input must be b1: a ``threshold`` (the op with trait "binarize") is
  inserted where it is not.
- Normalizations (trait "normalization") are removed, or kept with ``keep-bn``.
- Activations (trait "activation") become ``threshold`` on their input (T iff x >= 0)
  when they touch a Boolean layer: their input comes from one, or their output goes
  to one, looking through non-arithmetic ops. Activations wholly inside a float part
  (for example after the last float layer) stay.
- Other ops with a ``boolean_counterpart`` (maxpool2d -> bmaxpool2d, the OR-pool) take
  it when their input has become b1. An op that refuses its new b1 or integer
  operands gets them cast to f32 (b1 as e(b) = ±1).

The pass asks the registry for traits and counterparts; it never tests op names.
"""

from __future__ import annotations

import numpy as np

from boldc.errors import BoldcError
from boldc.ir.builder import FunctionBuilder
from boldc.ir.core import Module, Op, Param, Value
from boldc.ir.types import DType, TensorType
from boldc.ops.registry import TypeCheck, lookup, with_trait
from boldc.passes.dce import DeadCodeElimination
from boldc.passes.manager import Option, Pass, register_pass

LOGICS = ("xnor", "xor")
INITS = ("sign", "random")


def has_trait(op: Op, trait: str) -> bool:
    d = lookup(op.name)
    return d is not None and trait in d.traits


def _op_with_trait(trait: str) -> str:
    ops = with_trait(trait)
    if len(ops) != 1:
        raise AssertionError(f"expected one op with trait '{trait}', found {[d.name for d in ops]}")
    return ops[0].name


def arithmetic_layers(module: Module, func: str = "forward") -> list[Op]:
    return [op for op in module.ops(func) if has_trait(op, "arithmetic")]


def layer_name(op: Op) -> str:
    """How options and reports name a layer: its weight param, else its result."""
    if len(op.operands) > 1 and isinstance(op.operands[1], Param):
        return op.operands[1].name
    return op.results[0].name


def select_float_layers(layers: list[Op], selectors: list) -> set[int]:
    """Indices of the layers kept float. Selectors: ``first``, ``last``, ``none``, ``all``,
    an index into the arithmetic layers (negative from the end) or a layer name."""
    keep: set[int] = set()
    names = [layer_name(op) for op in layers]
    for raw in selectors:
        s = str(raw).strip()
        if s in ("", "none"):
            continue
        if s == "all":
            keep.update(range(len(layers)))
        elif s in ("first", "last"):
            if layers:
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


def _reached(start: Value, forward: bool, producer: dict, users: dict) -> list[Op]:
    """Arithmetic ops reached from ``start`` through non-arithmetic ops."""
    found, seen, todo = [], set(), [start]
    while todo:
        v = todo.pop()
        ops = users.get(id(v), []) if forward else [producer[id(v)]] if id(v) in producer else []
        for op in ops:
            if id(op) in seen:
                continue
            seen.add(id(op))
            if has_trait(op, "arithmetic"):
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
    }

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
        self._binarize = _op_with_trait("binarize")
        self._cast = _op_with_trait("cast")
        fn = module.function("forward")
        layers = arithmetic_layers(module)
        kept = select_float_layers(layers, o["float-layers"])
        self._convert = {id(op) for i, op in enumerate(layers)
                         if i not in kept and getattr(lookup(op.name), "boolean_counterpart", None)}
        producer = {id(r): op for op in fn.ops for r in op.results}
        users: dict[int, list[Op]] = {}
        for op in fn.ops:
            for v in op.operands:
                users.setdefault(id(v), []).append(op)
        self._module = module
        self._bits: dict[str, Param] = {}
        # Params that stay in use by ops this pass does not turn Boolean keep their name.
        self._float_names = {v.name for op in fn.ops if id(op) not in self._convert
                             for v in op.operands if isinstance(v, Param)}

        try:
            self._rebuild(module, fn, producer, users)
        except TypeCheck as exc:
            raise BoldcError(f"lower-boolean: cannot lower this model: {exc}") from None
        DeadCodeElimination().run(module)
        return True

    def _rebuild(self, module: Module, fn, producer, users) -> None:
        o = self.opts
        fb = FunctionBuilder(module, "forward", [(a.name, a.type) for a in fn.args])
        vmap: dict[int, Value] = {id(a): b for a, b in zip(fn.args, fb.args)}
        for op in fn.ops:
            ins = [v if isinstance(v, Param) else vmap[id(v)] for v in op.operands]
            if has_trait(op, "normalization") and not o["keep-bn"]:
                outs = [ins[0]]
            elif id(op) in self._convert:
                outs = [self._boolean_layer(fb, op, ins)]
            elif self._becomes_threshold(op, producer, users):
                x = ins[0]
                outs = [x if x.type.dtype.is_bool else fb.op(self._binarize, [x], name=op.results[0].name)]
            else:
                outs = self._reemit(fb, op, ins)
            for r, new in zip(op.results, outs):
                vmap[id(r)] = new
        del module.functions["forward"]  # the module has no other function (checked in run)
        fb.ret(*[v if isinstance(v, Param) else vmap[id(v)] for v in fn.returns])

    # -- pieces ------------------------------------------------------------------------------
    def _becomes_threshold(self, op: Op, producer, users) -> bool:
        """An activation (not already a threshold) next to a Boolean layer."""
        if not has_trait(op, "activation") or has_trait(op, "binarize"):
            return False
        near = _reached(op.operands[0], False, producer, users) + _reached(op.results[0], True, producer, users)
        return any(id(a) in self._convert for a in near)

    def _boolean_layer(self, fb: FunctionBuilder, op: Op, ins: list[Value]) -> Value:
        counterpart = lookup(lookup(op.name).boolean_counterpart)
        x = ins[0]
        if not x.type.dtype.is_bool:
            x = fb.op(self._binarize, [x], name=f"{x.name}.bits")
        operands = [x, self._bits_of(op.operands[1], through_logic=True)]
        if len(op.operands) > 2:
            operands.append(self._bits_of(op.operands[2], through_logic=False))
        attrs = {k: v for k, v in op.attrs.items() if counterpart.attr_spec(k) is not None}
        attrs["logic"] = self.opts["logic"]
        return fb.op(counterpart.name, operands, attrs, name=op.results[0].name)

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

    def _reemit(self, fb: FunctionBuilder, op: Op, ins: list[Value]) -> list[Value]:
        opdef = lookup(op.name)
        name = op.results[0].name if len(op.results) == 1 else [r.name for r in op.results]
        # A layer kept float stays float; other ops (pools) take their Boolean form on b1 input.
        counterpart = None if "arithmetic" in opdef.traits else getattr(opdef, "boolean_counterpart", None)
        values = [v for v in ins if not isinstance(v, Param)]
        if counterpart and values and all(v.type.dtype.is_bool for v in values):
            cdef = lookup(counterpart)
            attrs = {k: v for k, v in op.attrs.items() if cdef.attr_spec(k) is not None}
            return [fb.op(counterpart, ins, attrs, name=name)]
        try:
            out = fb.op(op.name, ins, dict(op.attrs), name=name)
        except TypeCheck:
            if all(v.type.dtype.is_float for v in values):
                raise
            cast = [v if isinstance(v, Param) or v.type.dtype.is_float
                    else fb.op(self._cast, [v], {"to": "f32"}, name=f"{v.name}.f32") for v in ins]
            out = fb.op(op.name, cast, dict(op.attrs), name=name)
        return out if isinstance(out, list) else [out]
