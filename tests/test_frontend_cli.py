"""``boldc convert``: writes what ``boldc.convert`` returns, prints the summary, every option works."""

from __future__ import annotations

import subprocess
import sys

import pytest
from onnx import helper

import boldc

from onnxgraph import EXAMPLES, model, rand

MLP = EXAMPLES / "digits_mlp.onnx"
CNN = EXAMPLES / "digits_cnn.onnx"


def test_convert_prints_the_summary_and_writes_the_module(cli, tmp_path):
    out = tmp_path / "digits.bir"
    code, stdout, stderr = cli("convert", MLP, "-o", out)
    assert code == 0 and stderr == ""
    assert boldc.dumps(boldc.load(out)) == boldc.dumps(boldc.convert(MLP))
    for text in ("Layers", "body.3.weight", "blinear", "b1[128, 128]", "Parameters", "before", "after",
                 "Ops changed", "batchnorm", "2 of 4 arithmetic layers are Boolean", f"wrote {out}",
                 "fused 3 layers with the elementwise ops after them"):
        assert text in stdout, text
    # float vs Boolean parameter counts: 64·128+128 + 128·10+10 float, 2·(128·128+128) Boolean after
    assert "9,610" in stdout and "33,024" in stdout and "44,170" in stdout


@pytest.mark.parametrize("args,kwargs", [
    (["--keep-bn"], {"keep_bn": True}),
    (["--fold-bn"], {"fold_bn": True}),
    (["--logic", "xor"], {"logic": "xor"}),
    (["--float-layers", "none"], {"float_layers": "none"}),
    (["--float-layers", "first,-1,features.3.weight"], {"float_layers": ["first", "-1", "features.3.weight"]}),
    (["--init", "random", "--seed", "5"], {"init": "random", "seed": 5}),
    (["--no-fuse"], {"fuse": False}),
])
def test_options_match_the_python_api(cli, tmp_path, args, kwargs):
    out = tmp_path / "m.bir"
    code, _, stderr = cli("convert", CNN, "-o", out, *args)
    assert code == 0, stderr
    assert boldc.dumps(boldc.load(out)) == boldc.dumps(boldc.convert(CNN, **kwargs))


def test_no_lower_writes_the_float_import(cli, tmp_path):
    out = tmp_path / "f.bir"
    code, stdout, _ = cli("convert", CNN, "-o", out, "--no-lower")
    assert code == 0 and "0 of 4 arithmetic layers are Boolean" in stdout
    assert boldc.dumps(boldc.load(out)) == boldc.dumps(boldc.import_onnx(CNN))


def test_seed_without_random_init_is_refused(cli, tmp_path):
    """--seed has no effect with --init sign: refused, not silently ignored."""
    code, _, stderr = cli("convert", CNN, "-o", tmp_path / "m.bir", "--seed", "3")
    assert code == 2 and "--seed only seeds --init random" in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.bir").exists()


def test_default_output_name(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = cli("convert", MLP)
    assert code == 0 and (tmp_path / "digits_mlp.bir").is_file() and "wrote digits_mlp.bir" in stdout


def test_input_shape_option(cli, tmp_path):
    m = model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], {"x": ["N", 3, "H", "W"]}, ["y"],
              {"w": rand(4, 3, 3, 3)}, 13)
    path = tmp_path / "dyn.onnx"
    path.write_bytes(m.SerializeToString())
    code, _, stderr = cli("convert", path, "-o", tmp_path / "a.bir", "--input-shape", "x=Nx3x16x16")
    assert code == 0, stderr
    assert str(boldc.load(tmp_path / "a.bir").function().args[0].type) == "f32[N, 3, 16, 16]"


def test_help_documents_every_option(cli):
    code, out, _ = cli("convert", "--help")
    assert code == 0
    for opt in ("--output", "--keep-bn", "--fold-bn", "--logic", "--float-layers", "--init", "--seed", "--no-lower",
                "--input-shape"):
        assert opt in out


def test_console_script_end_to_end(tmp_path):
    """The README quickstart's command, as a separate process."""
    res = subprocess.run([sys.executable, "-P", "-m", "boldc", "convert", str(MLP), "-o", str(tmp_path / "digits.bir")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "arithmetic layers are Boolean" in res.stdout
    assert boldc.load(tmp_path / "digits.bir").has_weights
