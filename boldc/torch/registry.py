"""The torch engine's implementation of every op: one function per op name, or the reason
there is none (as the C backend's ``boldc.backend.emitters``).

An implementation is ``impl(call: OpCall, *tensors) -> tuple of tensors``: ``call`` holds the
op's attributes (symbols bound), the IR types of its operands and results and the engine's
settings (``call.rt``); tensors carry IR values as the engine represents them (see
``boldc.torch.values``). It is registered with ``@implements("op_name", ...)``. An op the
engine does not run as an op (the optimizer runs it, or a pass must rewrite it first) is
declared with ``not_implemented(name, reason)``. ``tests/test_torch_ops.py`` checks that every
op of the registry has one or the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

IMPLS: dict[str, Callable] = {}
NOT_IMPLEMENTED: dict[str, str] = {}


@dataclass
class Runtime:
    """The engine's settings an implementation reads.

    - ``exact``: compute as the interpreter does (float64 where it uses double, sums in
      k order where it sums in order) instead of float32 kernels;
    - ``amp``: float layers in bfloat16 autocast (CUDA, with ``exact`` off);
    - ``comm``: the distributed context (``boldc.torch.distributed.Comm``) or None;
    - ``loss_count``: the number of samples a mean mse or l1 divides by (the global batch under
      DistributedDataParallel), None for the local batch (a mean softmax_xent divides by its
      labels that are not ignored, all-reduced over ``comm``)."""

    exact: bool = True
    amp: bool = False
    comm: Any = None
    loss_count: int | None = None
    device: Any = None


@dataclass
class OpCall:
    """One op as an implementation sees it (see the module docstring)."""

    name: str
    attrs: dict
    in_types: list
    out_types: list
    rt: Runtime = field(default_factory=Runtime)


def implements(*names: str) -> Callable[[Callable], Callable]:
    """Decorator: ``fn`` runs the ops ``names`` on torch tensors."""

    def register(fn: Callable) -> Callable:
        for name in names:
            if name in IMPLS or name in NOT_IMPLEMENTED:
                raise TypeError(f"the torch engine declares op '{name}' twice")
            IMPLS[name] = fn
        return fn

    return register


def not_implemented(name: str, reason: str) -> None:
    if name in IMPLS or name in NOT_IMPLEMENTED:
        raise TypeError(f"the torch engine declares op '{name}' twice")
    NOT_IMPLEMENTED[name] = reason


def implementation(name: str) -> Callable | str:
    """The implementation of op ``name``, or the reason there is none."""
    _load()
    if name in IMPLS:
        return IMPLS[name]
    return NOT_IMPLEMENTED.get(name, "the torch engine does not implement it")


def _load() -> None:
    import boldc.torch.ops  # noqa: F401  (registers the implementations)
