"""The C backend implements every op of the registry, or says why not (docs/architecture.md: each
backend registers its own implementation of every op)."""

from __future__ import annotations

from boldc.backend.emitters import EMITTERS, NOT_EMITTED, MustLower
from boldc.ops.registry import all_ops


def test_every_op_has_an_emitter_or_a_reason():
    ops = set(all_ops())
    missing = sorted(ops - set(EMITTERS) - set(NOT_EMITTED))
    assert not missing, f"ops the C backend neither emits nor declares: {missing}"


def test_the_backend_declares_only_registered_ops():
    unknown = sorted((set(EMITTERS) | set(NOT_EMITTED)) - set(all_ops()))
    assert not unknown, f"the C backend declares ops the registry does not have: {unknown}"


def test_every_op_without_an_emitter_must_be_lowered_first_and_says_how():
    for name, why in NOT_EMITTED.items():
        assert isinstance(why, MustLower) and why.reason, name
