"""The pass manager: textual pipelines, options, verification after each pass."""

from __future__ import annotations

import numpy as np
import pytest

import boldc
from boldc import FunctionBuilder, Module, tensor
from boldc.errors import BoldcError
from boldc.passes import PassManager, parse_pipeline


def _module_with_dead_code() -> Module:
    m = Module()
    w = m.add_param("w", tensor("f32", 4, 3), np.ones((4, 3), np.float32))
    unused = m.add_param("unused", tensor("f32", 4, 3), np.ones((4, 3), np.float32))
    fb = FunctionBuilder(m, "forward", [("x", tensor("f32", "N", 3))])
    y = fb.op("linear", [fb.args[0], w])
    fb.op("linear", [fb.args[0], unused])  # result never used
    fb.ret(fb.op("relu", [y]))
    return m


def _modified(results) -> list[tuple[str, bool]]:
    return [(r.name, r.modified) for r in results]


def test_dce_removes_dead_ops_and_params():
    m = _module_with_dead_code()
    changed = PassManager("dce").run(m)
    assert _modified(changed) == [("dce", True)]
    assert [op.name for op in m.ops()] == ["linear", "relu"]
    assert list(m.params) == ["w"]
    assert _modified(PassManager("dce").run(m)) == [("dce", False)]


def test_a_pass_run_twice_keeps_both_results():
    results = PassManager("dce{drop-params=false},dce").run(_module_with_dead_code())
    assert _modified(results) == [("dce", True), ("dce", True)]  # the first keeps the params, the second drops
    assert [r.options for r in results] == [{"drop-params": False}, {"drop-params": True}]


def test_preconditions_are_checked_before_a_pass_runs():
    m = _module_with_dead_code()
    with pytest.raises(BoldcError, match=r"pass insert-optimizer: module has no function @train_step \(run "
                                         r"autodiff first\)"):
        PassManager("insert-optimizer").run(m)
    PassManager("autodiff").run(m)
    with pytest.raises(BoldcError, match="pass autodiff: the module already has @train_step"):
        PassManager("autodiff").run(m)


def test_pipeline_options():
    (p,) = parse_pipeline("dce{drop-params=false}")
    assert p.opts == {"drop-params": False}
    m = _module_with_dead_code()
    PassManager([p]).run(m)
    assert set(m.params) == {"w", "unused"}


@pytest.mark.parametrize("text,message", [
    ("nosuchpass", "unknown pass 'nosuchpass'"),
    ("dce{bogus=1}", "pass dce: bad option 'bogus=1'"),
    ("dce{drop-params=maybe}", "pass dce: option drop-params='maybe' is not a bool"),
])
def test_pipeline_errors(text, message):
    with pytest.raises(BoldcError, match=message.replace("(", r"\(")):
        parse_pipeline(text)


def test_manager_prints_after_each_pass():
    seen = []
    PassManager("dce,dce", print_after=lambda p, m: seen.append((p.name, boldc.dumps(m, weights=False)))).run(
        _module_with_dead_code())
    assert [name for name, _ in seen] == ["dce", "dce"] and seen[0][1] == seen[1][1]
