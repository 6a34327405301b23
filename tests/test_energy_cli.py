"""Hardware descriptions (good and bad files) and the ``boldc energy`` command."""

from __future__ import annotations

import copy
import csv
import io
import json
from pathlib import Path

import pytest

from boldc.energymodel import Report
from boldc.energymodel.hardware import HardwareError, builtin_names, load_hardware, parse_hardware

GOLDEN = Path(__file__).parent / "golden"
EXAMPLES = Path(__file__).parent.parent / "examples"
ASCEND = json.loads((Path(__file__).parent.parent / "boldc/energymodel/hw/ascend.json").read_text())


def test_shipped_descriptions_load():
    assert {"ascend", "edge_example"} <= set(builtin_names())
    hw = load_hardware()
    assert hw.name == "ascend-core"
    assert [hw.levels[k].ee_gbps_per_mw for k in ("L3", "L2", "L1", "L0A", "L0B", "L0C")] == \
        [0.02, 0.2, 0.4, 4.9, 3.5, 5.4]
    assert [hw.levels[k].capacity_kib for k in ("L3", "L2", "L1", "L0A", "L0B", "L0C")] == \
        [None, 8192, 1024, 64, 64, 256]
    assert hw.arith_tops_per_w == 1.7 and hw.bits == {"b1": 1, "i8": 8, "i16": 16, "i32": 32, "f32": 32}
    assert load_hardware("edge_example").bits["f32"] == 16


def _mutate(change) -> str:
    data = copy.deepcopy(ASCEND)
    change(data)
    return json.dumps(data)


BAD = [
    ("{", "not valid JSON (line 1, column 2"),
    ("[1, 2]", "the top level must be a JSON object"),
    (_mutate(lambda d: d.pop("bits")), "missing key 'bits' in the top level"),
    (_mutate(lambda d: d.update(memroy={})), "unknown key 'memroy' in the top level"),
    (_mutate(lambda d: d.update(format="hw")), "'format' must be \"boldc-hardware\""),
    (_mutate(lambda d: d.update(version=2)), "'version' 2 is not supported"),
    (_mutate(lambda d: d["memory"].pop("L0C")), "missing key 'L0C' in 'memory'"),
    (_mutate(lambda d: d["memory"]["L2"].update(ee_gbps_per_mw=-1)),
     "'memory.L2.ee_gbps_per_mw' must be a positive number, got -1"),
    (_mutate(lambda d: d["memory"]["L1"].update(capacity_kib="big")),
     "'memory.L1.capacity_kib' must be a positive number, got \"big\""),
    (_mutate(lambda d: d["memory"]["L0A"].update(capacity_kib=None)),
     "'memory.L0A.capacity_kib' must be a positive number, got null"),
    (_mutate(lambda d: d["memory"]["L3"].update(capacity_kib=1e9)), "'memory.L3.capacity_kib' must be null"),
    (_mutate(lambda d: d["memory"]["L2"].update(size=3)), "unknown key 'size' in 'memory.L2'"),
    (_mutate(lambda d: d["compute"].update(logic_op_relative_energy=0)),
     "'compute.logic_op_relative_energy' must be a positive number, got 0"),
    (_mutate(lambda d: d["compute"].pop("arith_tops_per_w")), "missing key 'arith_tops_per_w' in 'compute'"),
    (_mutate(lambda d: d["bits"].update(b1=1.5)), "'bits.b1' must be a positive integer, got 1.5"),
    (_mutate(lambda d: d["bits"].pop("i16")), "missing key 'i16' in 'bits'"),
]


@pytest.mark.parametrize("text, message", BAD, ids=[m for _, m in BAD])
def test_bad_hardware_files_get_clear_errors(tmp_path, text, message):
    path = tmp_path / "hw.json"
    path.write_text(text)
    with pytest.raises(HardwareError) as info:
        load_hardware(path)
    assert str(info.value).startswith(f"{path}: hardware description: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_hardware_files(tmp_path):
    with pytest.raises(HardwareError, match="no such file"):
        load_hardware(tmp_path / "nope.json")
    with pytest.raises(HardwareError, match="is a directory"):
        load_hardware(tmp_path)
    with pytest.raises(HardwareError, match=r"no such hardware description \(shipped: ascend"):
        load_hardware("tpu")


def test_a_user_description_changes_the_energy(tmp_path):
    from boldc import load
    from boldc.energymodel import energy

    data = copy.deepcopy(ASCEND)
    data["compute"]["logic_op_relative_energy"] *= 10
    path = tmp_path / "hw.json"
    path.write_text(json.dumps(data))
    m = load(GOLDEN / "boolean_cnn.bir")
    base, dearer = energy(m, batch=4), energy(m, batch=4, hw=path)
    assert dearer.total_pj > base.total_pj and dearer.baseline_pj == base.baseline_pj
    assert parse_hardware(json.dumps(data), "x").logic_pj == pytest.approx(10 * load_hardware().logic_pj)


# --- the command ------------------------------------------------------------------------------


def test_table(cli):
    code, out, err = cli("energy", GOLDEN / "boolean_cnn.bir", "--batch", "4")
    assert code == 0, err
    assert "Energy per op" in out and "Totals" in out and "L3 DRAM" in out and "ratio" in out
    assert "bconv2d" in out and "total" in out


def test_json_matches_the_api(cli):
    from boldc import load
    from boldc.energymodel import energy

    code, out, err = cli("energy", GOLDEN / "boolean_mlp.bir", "--phase", "training", "--batch", "16",
                         "--format", "json")
    assert code == 0, err
    r = Report.from_json(out)
    api = energy(load(GOLDEN / "boolean_mlp.bir"), batch=16, phase="training")
    assert r.total_pj == pytest.approx(api.total_pj, rel=1e-12) and r.ratio == pytest.approx(api.ratio, rel=1e-12)
    assert r.meta["batch"] == 16 and r.meta["phase"] == "training" and r.meta["source"] == "boolean_mlp.bir"


@pytest.mark.parametrize("args, kwargs", [(["--no-fuse"], {"fuse": False}),
                                          (["--signal-bits", "8"], {"signal_bits": 8}),
                                          (["--signal-bits", "32"], {"signal_bits": 32}),
                                          (["--signal-bits", "f32"], {"signal_bits": 32})])
def test_fusion_and_signal_options_match_the_api(cli, args, kwargs):
    from boldc import load
    from boldc.energymodel import energy

    code, out, err = cli("energy", GOLDEN / "boolean_cnn.bir", "--phase", "training", "--batch", "8",
                         "--format", "json", *args)
    assert code == 0, err
    r = Report.from_json(out)
    api = energy(load(GOLDEN / "boolean_cnn.bir"), batch=8, phase="training", **kwargs)
    default = energy(load(GOLDEN / "boolean_cnn.bir"), batch=8, phase="training")
    assert r.total_pj == pytest.approx(api.total_pj, rel=1e-12) and r.total_pj != default.total_pj
    assert r.meta["fused"] == kwargs.get("fuse", True)


def test_csv_to_file_and_plot(cli, tmp_path):
    out_csv, out_png = tmp_path / "r.csv", tmp_path / "r.png"
    code, out, err = cli("energy", GOLDEN / "boolean_cnn.bir", "--format", "csv", "-o", out_csv, "--plot", out_png,
                         "--hw", "edge_example")
    assert code == 0, err
    assert out == ""
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert {r["model"] for r in rows} == {"boolean", "float"}
    mine = sum(float(r["total_pj"]) for r in rows if r["model"] == "boolean")
    from boldc import load
    from boldc.energymodel import energy

    api = energy(load(GOLDEN / "boolean_cnn.bir"), hw="edge_example")
    assert mine == pytest.approx(api.total_pj, rel=1e-9)  # the csv rows add up to the API's total
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_onnx_input_is_converted_and_compared_with_its_float_import(cli):
    code, out, err = cli("energy", EXAMPLES / "digits_cnn.onnx", "--format", "json", "--batch", "8")
    assert code == 0, err
    r = Report.from_json(out)
    assert r.meta["baseline"] == "given float module"
    assert 0 < r.ratio < 1


@pytest.mark.parametrize("args, message", [
    (["missing.bir"], "missing.bir: no such"),
    ([GOLDEN / "make_golden.py"], "expected a .bir (Boolean IR) or an .onnx (float model) file"),
    ([GOLDEN / "boolean_mlp.bir", "--hw", "tpu"], "tpu: no such hardware description"),
    ([GOLDEN / "boolean_mlp.bir", "-o", "x.json"], "--output: writes a json or csv report only"),
    ([GOLDEN / "boolean_mlp.bir", "--batch", "0"], "--batch: 0 is not in the range x>=1"),
    ([GOLDEN / "boolean_mlp.bir", "--phase", "train"], "--phase: 'train' is not one of 'inference', 'training'"),
    ([GOLDEN / "boolean_mlp.bir", "--signal-bits", "12"],
     "--signal-bits: '12' is not one of '16', '8', '4', 'f32', '32'"),
    ([GOLDEN / "boolean_mlp.bir", "--batch", str(2**24 + 1)], "--batch: batch 16777217 is larger than 16,777,216"),
])
def test_errors(cli, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("energy", *args)
    assert code == 2
    assert message in err and err.startswith("boldc: error: ") and err.count("\n") == 1


def test_bad_hardware_file_fails_before_the_model_is_read(cli, tmp_path):
    bad = tmp_path / "hw.json"
    bad.write_text('{"format": "boldc-hardware"}')
    code, out, err = cli("energy", tmp_path / "missing.bir", "--hw", bad)
    assert code == 2 and "hardware description: missing key" in err


def test_plot_to_an_unwritable_place_leaves_nothing(cli, tmp_path):
    code, out, err = cli("energy", GOLDEN / "boolean_mlp.bir", "--plot", tmp_path / "no" / "dir" / "p.png")
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "no").exists()


def test_fixed_batch_module_is_costed_on_its_batch(cli, tmp_path):
    out = tmp_path / "s4.bir"
    assert cli("convert", EXAMPLES / "digits_cnn.onnx", "--input-shape", "x=4x1x8x8", "-o", out)[0] == 0
    code, text, err = cli("energy", out, "--format", "json")
    assert code == 0, err
    assert Report.from_json(text).meta["batch"] == 4
    code, text, err = cli("energy", out, "--batch", "32")
    assert code == 2 and text == "" and len(err.strip().splitlines()) == 1
    assert "fixed batch of 4" in err and "drop --batch 32" in err


def test_energy_of_onnx_takes_input_shapes(cli):
    model = EXAMPLES / "digits_cnn.onnx"
    code, text, err = cli("energy", model, "--input-shape", "x=Nx1x8x8", "--format", "json")
    assert code == 0, err
    assert Report.from_json(text).meta["batch"] == 32
    code, _, err = cli("energy", GOLDEN / "boolean_mlp.bir", "--input-shape", "x=Nx64")
    assert code == 2 and "--input-shape applies to .onnx files only" in err
