"""Fusion in the energy model (docs/energy.md, "Fusion"), worked by hand: a Boolean 3x3
convolution with its threshold fused in, against the same convolution alone."""

from __future__ import annotations

import numpy as np
import pytest

import boldc
from boldc import FunctionBuilder, Module, tensor
from boldc.energymodel.costing import View, cost_function
from boldc.energymodel.hardware import load_hardware
from boldc.passes import PassManager

from onnxgraph import example_model


def convert_unfused(*args, **options):
    """boldc.convert without fusion: these tests look at the lowered ops themselves."""
    return boldc.convert(*args, fuse=False, **options)


HW = load_hardware("ascend")
E3 = 50.0  # pJ per byte at DRAM: 1 / 0.02 GB/s per mW
LOGIC_PJ = 0.00069 / 1.7


def _conv_threshold(per_channel: bool) -> Module:
    """x b1[1, 64, 4, 4] -> bconv2d 3x3 pad 1, 64 filters (fan-in 576: i16[1, 64, 4, 4]) -> threshold."""
    rng = np.random.default_rng(0)
    m = Module()
    w = m.add_param("w", tensor("b1", 64, 64, 3, 3), rng.random((64, 64, 3, 3)) < 0.5)
    fb = FunctionBuilder(m, "forward", [("x", tensor("b1", 1, 64, 4, 4))])
    s = fb.op("bconv2d", [fb.args[0], w], {"pad": [1, 1, 1, 1]}, name="s")
    extra = [m.add_param("tau", tensor("i32", 64), rng.integers(-5, 5, 64).astype(np.int32))] if per_channel else []
    fb.ret(fb.op("threshold", [s, *extra], name="h"))
    return m


def _items(m: Module):
    return cost_function(m, "forward", View(HW, 1))


@pytest.mark.parametrize("per_channel", [False, True])
def test_a_fused_threshold_changes_the_final_write_and_adds_its_operations(per_channel):
    """Unfused: the convolution writes its i16 outputs, S_O = 64·16·2 B = 2048 B, once to DRAM
    (the reduction fits L0: n_3 = 1, E^O_L3 = S_O·ε3 = 102400 pJ), and the threshold streams
    s in and h out at the level that holds them. Fused: the convolution's tiling and every
    count are the same; its one final write is the thresholded bits, S_R = 64·16/8 B = 128 B
    (E^O_L3 = 128·50 = 6400 pJ); the threshold's 1024 comparisons of 16-bit integers
    (2·16 - 1 = 31 logic operations each) join the convolution, and its per-channel τ
    (64 · 4 B = 256 B) is read once from DRAM."""
    m = _conv_threshold(per_channel)
    conv, thr = _items(m)
    f = m.copy()
    PassManager("fuse-epilogues").run(f)
    (fused,) = _items(f)
    assert conv.cost.detail["tiles"] == fused.cost.detail["tiles"]
    assert conv.cost.detail["counts"] == fused.cost.detail["counts"] == {"I": [1, 1, 1, 9], "F": [1, 1, 1, 1],
                                                                       "O": [1, 1, 1, 1]}
    assert conv.cost.detail["stream_bytes"]["O"] == 2048
    assert fused.cost.detail["stream_bytes"]["results"] == 128
    assert conv.cost.detail["stream_pj"]["O"]["L3"] == pytest.approx(2048 * E3, rel=1e-12)
    assert fused.cost.detail["stream_pj"]["O"]["L3"] == pytest.approx(128 * E3, rel=1e-12)
    for stream in "IF":
        assert fused.cost.detail["stream_pj"][stream] == pytest.approx(conv.cost.detail["stream_pj"][stream])
    tau_bytes = 256 if per_channel else 0
    want_l3 = conv.cost.memory_pj["L3"] + (128 - 2048) * E3 + tau_bytes * E3
    assert fused.cost.memory_pj["L3"] == pytest.approx(want_l3, rel=1e-12)
    for level in ("L2", "L1", "L0A", "L0B", "L0C"):
        assert fused.cost.memory_pj[level] == pytest.approx(conv.cost.memory_pj[level], rel=1e-12)
    assert thr.cost.ops.logic == 1024 * 31 and thr.cost.ops.arith == 0
    assert fused.cost.ops.logic == conv.cost.ops.logic + 1024 * 31
    assert fused.cost.compute_pj == pytest.approx(conv.cost.compute_pj + 1024 * 31 * LOGIC_PJ, rel=1e-9)
    assert fused.cost.detail["epilogues"] == ["threshold"]
    # what the threshold cost on its own (streams of s and h, at L1) is gone
    assert fused.cost.total_pj < conv.cost.total_pj + thr.cost.total_pj


def test_the_report_marks_fused_ops_and_the_baseline_is_fused_alike():
    m = convert_unfused(example_model("digits_cnn"))
    r = boldc.energy(m, batch=8)
    # a fused item is reported under its head (the layer), with its epilogues listed
    fused_rows = [row for row in r.rows if row.detail.get("epilogues")]
    assert {(row.opname, tuple(row.detail["epilogues"])) for row in fused_rows} == {
        ("conv2d", ("threshold",)), ("bconv2d", ("threshold",))}
    assert {tuple(row.detail["epilogues"]) for row in r.baseline_rows if row.detail.get("epilogues")} == {("relu",)}
    assert all(row.baseline_pj is not None for row in fused_rows)  # paired with the fused float layer
    unfused = boldc.energy(m, batch=8, fuse=False)
    assert not [row for row in unfused.rows if row.detail.get("epilogues")] and unfused.meta["fused"] is False
    assert r.total_pj < unfused.total_pj and r.baseline_pj < unfused.baseline_pj
