"""Traits: what an op promises to the passes, as objects with a contract.

An op declares ``traits = (Layer(), BooleanCounterpart("bconv2d"), ...)``; passes ask
``opdef.trait(Layer)`` (the instance, or None) or ``opdef.has(Activation)``, never op
names or attribute probes. Each trait's docstring is its contract; ``check`` enforces
what can be checked when the op is registered (operand names, methods it needs), so a
trait cannot be claimed by an op that does not keep it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Trait:
    """Base class of traits. ``check(opdef_class)`` raises TypeError naming what is missing."""

    def check(self, cls: Any) -> None:
        return None


# --- what lowering and folding ask --------------------------------------------------------------


@dataclass(frozen=True)
class Layer(Trait):
    """An arithmetic layer ``y = layer(x, w, bias?)``: operands ``x`` (input), ``w``
    (weights: [out, in] for ``kind`` "linear", [M, C/g, kh, kw] for "conv") and an
    optional ``bias``. Lowering turns it Boolean (its ``BooleanCounterpart``) unless it is
    kept float; reports name it by its weights."""

    kind: str = "linear"

    def check(self, cls) -> None:
        if tuple(o.rstrip("?") for o in cls.operands[:3]) != ("x", "w", "bias"):
            raise TypeError(f"{cls.name}: a Layer has the operands (x, w, bias?), not {cls.operands}")
        if self.kind not in ("linear", "conv"):
            raise TypeError(f"{cls.name}: Layer kind must be 'linear' or 'conv', got {self.kind!r}")


@dataclass(frozen=True)
class FloatOnlyLayer(Trait):
    """An arithmetic op with weights that has no Boolean form (the transposed convolution):
    it always stays float and is not one of the ``Layer``s that lowering counts and
    selects (``float-layers``). Lowering does not look through it when it asks whether an
    activation touches a Boolean layer: what lies beyond it reads float values."""

    def check(self, cls) -> None:
        if tuple(o.rstrip("?") for o in cls.operands[:2]) != ("x", "w"):
            raise TypeError(f"{cls.name}: a FloatOnlyLayer has the operands (x, w, ...), not {cls.operands}")


@dataclass(frozen=True)
class BooleanCounterpart(Trait):
    """The op ``op`` computes the same thing in the Boolean domain (b1 inputs and weights);
    lowering replaces this op by it, keeping the attributes ``op`` declares."""

    op: str


@dataclass(frozen=True)
class MixedCounterpart(Trait):
    """The op ``op`` computes the same thing with b1 weights and a real input."""

    op: str


@dataclass(frozen=True)
class Boolean(Trait):
    """Computes in the Boolean domain (b1 operands, logic operations)."""



@dataclass(frozen=True)
class Mixed(Trait):
    """A mixed neuron: b1 weights and a real input (computes with conditional negations)."""


@dataclass(frozen=True)
class Activation(Trait):
    """An elementwise activation y = f(x) of its operand ``x``. Next to a Boolean layer,
    lowering replaces it by the threshold (the ``Binarize`` op) on ``x``."""

    def check(self, cls) -> None:
        if not cls.operands or cls.operands[0] != "x":
            raise TypeError(f"{cls.name}: an Activation's first operand is x")


@dataclass(frozen=True)
class RealFeatures(Trait):
    """Computes real-valued features with no Boolean form (LayerNorm, a product of two computed
    tensors, an embedding lookup): it always stays float. A converted layer whose input comes
    from one (looking back through ops that are neither layers nor activations) becomes a
    mixed neuron (its ``MixedCounterpart``: real input, b1 weights), unless lowering binarizes
    activations; a converted layer whose output reaches one gets a per-output scale."""


@dataclass(frozen=True)
class Binarize(Trait):
    """The threshold activation: x (integer or f32) -> b1, T iff x >= τ. Exactly one op
    declares it; lowering inserts it before every Boolean layer whose input is not b1.
    ``float_form`` is the float activation it stands for in the float network (the energy
    model's baseline)."""

    float_form: str


@dataclass(frozen=True)
class Cast(Trait):
    """Converts its operand ``x`` to the element type of the attribute ``to``. Exactly one
    op declares it; lowering casts operands an op refuses."""


@dataclass(frozen=True)
class Normalization(Trait):
    """A float normalization (BatchNorm, LRN): operand ``x`` and parameters. Unless
    normalizations are kept, lowering removes it (its input passes through): wherever it
    is, or, with ``boolean_only``, only where it sits between a Boolean layer and the
    activation that becomes that layer's threshold (it stays float elsewhere)."""

    boolean_only: bool = False

    def check(self, cls) -> None:
        if not cls.operands or cls.operands[0] != "x":
            raise TypeError(f"{cls.name}: a Normalization's first operand is x")


@dataclass(frozen=True)
class TrainingForm(Trait):
    """In @train_step, autodiff uses the op ``op`` instead, with the same operands and
    attributes: this op's form for training (BatchNorm with batch statistics)."""

    op: str


@dataclass(frozen=True)
class PerChannelAffine(Trait):
    """y = f_c(x) elementwise, a monotone-or-antitone function per channel (axis ``axis``)
    whose only other operands are the per-channel params ``params``: fold-bn may fold it
    into a per-channel threshold when a threshold follows it."""

    params: tuple[str, ...]
    axis: int = 1

    def check(self, cls) -> None:
        names = [o.rstrip("?*") for o in cls.operands]
        if names[:1] != ["x"] or tuple(names[1:]) != self.params:
            raise TypeError(f"{cls.name}: a PerChannelAffine has the operands (x, {', '.join(self.params)}), "
                            f"not {cls.operands}")



# --- fusion --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FusionHead(Trait):
    """A contraction (a layer, or a layer's gradient) whose outputs accumulate in the output
    buffer of a matrix unit (L0-C): elementwise ``Epilogue`` ops that follow it may be fused
    into it (the fuse-epilogues pass)."""


@dataclass(frozen=True)
class Epilogue(Trait):
    """An elementwise op that may run on the output tile of the op before it, in place: one
    of the operands ``chain`` receives that output (``add`` takes it on either side); the
    others are read as they are (per-channel vectors, params, or tensors of the result's
    shape). It has one result, of the chained operand's shape."""

    chain: tuple[str, ...] = ("x",)

    def check(self, cls) -> None:
        names = {o.rstrip("?*") for o in cls.operands}
        if not set(self.chain) <= names:
            raise TypeError(f"{cls.name}: Epilogue chains {self.chain}, which are not all operands {cls.operands}")


@dataclass(frozen=True)
class Composite(Trait):
    """Made of other ops (``parts(op)`` lists them, ``part_names(op)`` names their results):
    passes that need the parts, autodiff first, expand it."""

    def check(self, cls) -> None:
        if not (callable(getattr(cls, "parts", None)) and callable(getattr(cls, "part_names", None))):
            raise TypeError(f"{cls.name}: a Composite implements parts(op) and part_names(op)")


# --- what autodiff, the optimizer passes and the energy model ask --------------------------------


@dataclass(frozen=True)
class Loss(Trait):
    """A loss ``loss(pred, target) -> f32[]``: the root of @train_step. The op implements
    ``target_type(pred_type)`` (the type of @train_step's target argument); ``grad_op`` is
    the op its backward rule emits."""

    grad_op: str

    def check(self, cls) -> None:
        if not callable(getattr(cls, "target_type", None)):
            raise TypeError(f"{cls.name}: a Loss implements target_type(pred_type)")
        if tuple(o.rstrip("?") for o in cls.operands) != ("pred", "target"):
            raise TypeError(f"{cls.name}: a Loss has the operands (pred, target)")


@dataclass(frozen=True)
class Gradient(Trait):
    """Computes a backward signal (its results are signals, costed in the signal format)."""


@dataclass(frozen=True)
class GradientSink(Trait):
    """Hands the gradient ``g`` of the param ``p`` over to the optimizer (insert-optimizer
    replaces it by an update); computes nothing."""

    def check(self, cls) -> None:
        if tuple(cls.operands) != ("p", "g"):
            raise TypeError(f"{cls.name}: a GradientSink has the operands (p, g)")


@dataclass(frozen=True)
class Optimizer(Trait):
    """Part of the optimizer (schedules, updates, the step counter): schedule-updates may
    move it as early as its operands and the readers of the params it writes allow."""


@dataclass(frozen=True)
class SideEffect(Trait):
    """Has an effect beyond its results (updates a param, or declares a gradient): dead
    code elimination keeps it."""

