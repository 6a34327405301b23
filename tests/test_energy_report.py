"""boldc.energy on whole modules: invariants of the report, the derived training step
against a real @train_step, the annotate-energy pass, and user errors."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest

import boldc
from boldc import FunctionBuilder, Module, tensor
from boldc.energymodel import Report, energy
from boldc.energymodel.costing import EnergyError
from boldc.ops.registry import lookup
from boldc.ops.traits import Boolean, Layer, Mixed
from boldc.passes.manager import PassManager


def convert_unfused(*args, **options):
    """boldc.convert without fusion: these tests look at the lowered ops themselves."""
    return boldc.convert(*args, fuse=False, **options)


GOLDEN = Path(__file__).parent / "golden"
EXAMPLES = Path(__file__).parent.parent / "examples"


def small_resnet(seed: int = 0, stem_channels: int = 8) -> Module:
    """A ResNet-like Boolean network: float stem, Boolean 3x3 blocks with identity and 1x1
    downsampling shortcuts (fan-out and residual adds), global pooling, float classifier."""
    rng = np.random.default_rng(seed)
    m = Module()
    fb = FunctionBuilder(m, "forward", [("x", tensor("f32", "N", 3, 16, 16))])

    def bits(name, *shape):
        return m.add_param(name, tensor("b1", *shape), rng.random(shape) < 0.5)

    w = m.add_param("stem.w", tensor("f32", stem_channels, 3, 3, 3),
                    rng.standard_normal((stem_channels, 3, 3, 3)).astype(np.float32))
    h = fb.op("conv2d", [fb.args[0], w], {"stride": [2, 2], "pad": [1, 1, 1, 1]})
    h = fb.op("threshold", [fb.op("maxpool2d", [h], {"kernel": [2, 2], "stride": [2, 2]})])
    c = stem_channels
    for stage, (cout, stride) in enumerate([(8, 1), (16, 2)]):
        a = fb.op("bconv2d", [h, bits(f"s{stage}.c1.w", cout, c, 3, 3)], {"stride": [stride] * 2, "pad": [1] * 4})
        a = fb.op("bconv2d", [fb.op("threshold", [a]), bits(f"s{stage}.c2.w", cout, cout, 3, 3)], {"pad": [1] * 4})
        short = fb.op("bconv2d", [h, bits(f"s{stage}.down.w", cout, c, 1, 1)], {"stride": [stride] * 2}) \
            if (stride != 1 or c != cout) else h
        h = fb.op("threshold", [fb.op("add", [a, short])])
        c = cout
    h = fb.op("flatten", [fb.op("global_avgpool", [h])])
    w = m.add_param("fc.w", tensor("f32", 10, c), rng.standard_normal((10, c)).astype(np.float32))
    b = m.add_param("fc.b", tensor("f32", 10), np.zeros(10, np.float32))
    fb.ret(fb.op("linear", [h, w, b]))
    return m


def onnx_model(name: str, **options) -> Module:
    return convert_unfused(EXAMPLES / name, **options)


MODELS = {
    "boolean_mlp": lambda: boldc.load(GOLDEN / "boolean_mlp.bir"),
    "boolean_cnn": lambda: boldc.load(GOLDEN / "boolean_cnn.bir"),
    "small_resnet": small_resnet,
    "digits_cnn_keep_bn": lambda: onnx_model("digits_cnn.onnx", keep_bn=True),
    "digits_mlp": lambda: onnx_model("digits_mlp.onnx"),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    return MODELS[request.param]()


@pytest.mark.parametrize("phase", ["inference", "training"])
def test_totals_are_the_sums_of_the_rows(model, phase):
    r = energy(model, batch=8, phase=phase)
    assert r.rows and r.baseline_rows
    assert r.total_pj == pytest.approx(sum(x.compute_pj + sum(x.memory_pj.values()) for x in r.rows), rel=1e-12)
    assert r.baseline_pj == pytest.approx(sum(x.total_pj for x in r.baseline_rows), rel=1e-12)
    assert r.ratio == pytest.approx(r.total_pj / r.baseline_pj, rel=1e-12)
    assert sum(v[0] for v in r.by_phase().values()) == pytest.approx(r.total_pj, rel=1e-12)
    assert sum(v[0] for v in r.by_level().values()) == pytest.approx(r.total_pj, rel=1e-12)
    assert sum(v[1] for v in r.by_level().values()) == pytest.approx(r.baseline_pj, rel=1e-12)
    phases = set(r.by_phase())
    assert phases == ({"forward"} if phase == "inference" else {"forward", "backward", "update"})
    assert 0 < r.ratio < 1


@pytest.mark.parametrize("phase", ["inference", "training"])
def test_json_report_round_trips(model, phase):
    r = energy(model, batch=4, phase=phase, source="m.bir")
    text = r.to_json()
    back = Report.from_json(text)
    assert back == r
    assert back.to_json() == text
    assert back.total_pj == r.total_pj and back.ratio == r.ratio


def test_every_tile_of_every_convolution_fits_its_level(model):
    from boldc.energymodel.hardware import load_hardware

    for hw_name in ("ascend", "edge_example"):
        hw = load_hardware(hw_name)
        convs = [row for row in energy(model, batch=32, phase="training", hw=hw_name).rows if "tiles" in row.detail]
        assert {row.detail["conv"] for row in convs} == {"forward", "input_signal", "weight_signal"}
        for row in convs:
            for level, kib in row.detail["tile_kib"].items():
                assert kib <= hw.levels[level].capacity_kib, (row.op, row.label, level, kib)


def test_energy_grows_with_batch(model):
    for phase in ("inference", "training"):
        totals = [energy(model, batch=b, phase=phase).total_pj for b in (1, 2, 4, 16, 64)]
        assert all(a < b for a, b in zip(totals, totals[1:])), (phase, totals)
        base = [energy(model, batch=b, phase=phase).baseline_pj for b in (1, 2, 4, 16, 64)]
        assert all(a < b for a, b in zip(base, base[1:])), (phase, base)


def test_boolean_layers_cost_less_than_their_float_baseline(model):
    """Every Boolean conv/linear item costs strictly less than the same item of the float
    baseline, and so do a mixed layer's forward pass and input signal (products with b1
    weights); a mixed layer's weight and bias signals (sums of its real signal, as in the
    float layer) and a float layer kept float cost at most as much."""
    checked = 0
    for phase in ("inference", "training"):
        r = energy(model, batch=16, phase=phase, fuse=False)  # each layer's items on their own
        for row in r.rows:
            opdef = lookup(row.opname)
            if not opdef.has(Layer):
                continue
            if row.label == "quantize":  # the integer signal of a Boolean layer: the float layer has none
                assert opdef.has(Boolean) and row.baseline_pj is None, row
                continue
            assert row.baseline_pj is not None, row
            if opdef.has(Boolean) or (opdef.has(Mixed) and row.label in ("forward", "input signal")):
                assert row.total_pj < row.baseline_pj, row
                checked += 1
            else:
                assert row.total_pj <= row.baseline_pj * (1 + 1e-12), row
    assert checked > 0


def _bag(rows):
    """Rows as a multiset of what they cost (the op that owns an item may differ)."""
    return collections.Counter((r.phase, r.label, r.opname if r.label in ("update", "loss") else "", r.arith_ops,
                                r.logic_ops, round(r.total_pj, 4)) for r in rows)


@pytest.mark.parametrize("signal_bits", [16, 32])
def test_derived_training_costs_equal_those_of_the_real_train_step(model, signal_bits):
    """What ``--phase training`` derives from @forward equals the costs of the @train_step
    that autodiff + insert-optimizer build, item for item."""
    derived = energy(model, batch=8, phase="training", signal_bits=signal_bits)
    trained = model.copy()
    bits = "f32" if signal_bits == 32 else signal_bits  # the same step: the knob is autodiff's option
    PassManager(f"autodiff{{signal-bits={bits}}},insert-optimizer").run(trained)
    real = energy(trained, batch=8, phase="training", signal_bits=signal_bits)
    assert real.meta["function"] == "train_step" and derived.meta["function"].startswith("forward")
    assert _bag(derived.rows) == _bag(real.rows)
    assert derived.total_pj == pytest.approx(real.total_pj, rel=1e-12)
    for phase, (mine, _) in derived.by_phase().items():
        assert real.by_phase()[phase][0] == pytest.approx(mine, rel=1e-12)
    # inference of the trained module still costs @forward
    assert energy(trained, batch=8).total_pj == pytest.approx(energy(model, batch=8).total_pj, rel=1e-12)


def test_training_items_follow_spec_section_6_5():
    """Each Boolean conv has a forward, an input-signal and a weight-signal convolution
    (the first layer, on the network input, no input signal) and the quantization of its
    integer signal, and each b1 param a flip update, each f32 param an Adam update."""
    m = small_resnet()
    r = energy(m, batch=4, phase="training")
    convs = collections.defaultdict(set)
    names = {}
    for row in r.rows:
        if row.opname in ("bconv2d", "conv2d", "linear"):
            convs[row.op].add(row.label)
            names[row.op] = row.opname
            if "conv" in row.detail:
                assert row.detail["conv"] == {"forward": "forward", "input signal": "input_signal",
                                              "weight signal": "weight_signal"}[row.label]
    first = m.ops("forward")[0].results[0].ref
    for op, labels in convs.items():
        want = {"forward", "weight signal"} | (set() if op == first else {"input signal"})
        if op == m.ops("forward")[-1].results[0].ref:
            want |= {"bias signal"}
        if names[op] == "bconv2d":
            want |= {"quantize"}
        assert labels == want, op
    updates = {row.op: row.opname for row in r.rows if row.label == "update"}
    assert updates == {p.ref: "flip_update" if p.type.dtype.is_bool else "adam_update" for p in m.params.values()}
    base_updates = {row.opname for row in r.baseline_rows if row.label == "update"}
    assert base_updates == {"adam_update"}


def test_signal_width_is_an_option():
    m = small_resnet()
    r16 = energy(m, batch=4, phase="training")
    r32 = energy(m, batch=4, phase="training", signal_bits=32)
    assert r16.meta["signal"] == {"bits": 16, "kind": "int"}
    assert r16.by_phase()["backward"][0] < r32.by_phase()["backward"][0]
    assert r16.by_phase()["forward"] == r32.by_phase()["forward"]
    assert r16.baseline_pj == r32.baseline_pj  # the float baseline trains in f32


def test_float_module_is_its_own_baseline():
    m = boldc.load(GOLDEN / "float_mlp.bir")
    for phase in ("inference", "training"):
        r = energy(m, batch=8, phase=phase)
        assert r.ratio == pytest.approx(1.0, rel=1e-12)
        assert all(row.ratio == pytest.approx(1.0) for row in r.rows if row.baseline_pj)


def test_given_float_baseline_is_used():
    float_module = boldc.import_onnx(EXAMPLES / "digits_cnn.onnx")
    boolean = convert_unfused(EXAMPLES / "digits_cnn.onnx")
    r = energy(boolean, batch=8, baseline=float_module)
    assert r.meta["baseline"] == "given float module"
    assert r.baseline_pj == pytest.approx(energy(float_module, batch=8).total_pj, rel=1e-12)


def test_annotate_energy_pass_round_trips_and_matches_the_report():
    m = small_resnet()
    PassManager("annotate-energy{phase=training, batch=8}").run(m)
    text = boldc.dumps(m, weights=False)
    back = boldc.parse(text)
    assert boldc.dumps(back, weights=False) == text
    r = energy(small_resnet(), batch=8, phase="training")
    assert back.attrs["energy.total_pj"] == pytest.approx(r.total_pj, rel=1e-12)
    assert back.attrs["energy.baseline_pj"] == pytest.approx(r.baseline_pj, rel=1e-12)
    owned = sum(op.attrs["energy.pj"]["total"] for op in back.ops("forward") if "energy.pj" in op.attrs)
    other = sum(item["pj"] for item in back.attrs["energy.other"])
    assert owned + other == pytest.approx(r.total_pj, rel=1e-9)
    conv = next(op for op in back.ops("forward") if op.name == "bconv2d")
    labels = [item["label"] for item in conv.attrs["energy.items"]]
    assert sorted(labels) == sorted(["forward", "quantize", "input signal", "weight signal"])
    item = conv.attrs["energy.items"][0]
    assert set(item["tiles"]) == {"L2", "L1", "L0"} and set(item["counts"]) == {"I", "F", "O"}
    # a second run (inference) replaces the annotations
    PassManager("annotate-energy{batch=8}").run(back)
    assert back.attrs["energy.phase"] == "inference" and "energy.other" not in back.attrs
    conv = next(op for op in back.ops("forward") if op.name == "bconv2d")
    assert [item["label"] for item in conv.attrs["energy.items"]] == ["forward"]


def test_user_errors_are_one_line_boldc_errors():
    m = small_resnet()
    with pytest.raises(EnergyError, match="phase must be one of inference | training"):
        energy(m, phase="train")
    with pytest.raises(EnergyError, match="batch must be a positive integer"):
        energy(m, batch=0)
    with pytest.raises(EnergyError, match="signal bits"):
        energy(m, phase="training", signal_bits=0)
    odd = Module()
    fb = FunctionBuilder(odd, "forward", [("x", tensor("b1", "N", "K"))])
    fb.ret(fb.op("threshold", [fb.op("cast", [fb.args[0]], {"to": "i8"})]))
    with pytest.raises(EnergyError, match="keeps the symbolic dimension K: .* --dim K=SIZE"):
        energy(odd)
    with pytest.raises(EnergyError, match="'relu' is not a loss op"):
        energy(m, phase="training", loss="relu")
