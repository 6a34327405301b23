"""Regression tests of the failures issue 16 lists (found by fuzzing and bad input), one
group per failure, each failing before its fix: a bad input is refused with one line
``boldc: error: WHERE: WHAT`` and exit 2, never a traceback, a wrong success or a
file replaced."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

import boldc
from boldc.backend.model import CompiledModel
from boldc.backend.training import TrainOptions, training_module
from boldc.checkpoint import decode_checkpoint, encode_checkpoint

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MAKE_AVAILABLE = subprocess.run(["which", "make"], capture_output=True).returncode == 0


def refused(result, *needles: str) -> str:
    """The CLI's answer to a user error: exit 2, one line on stderr in the documented
    form, nothing on stdout; returns that line."""
    code, out, err = result
    assert code == 2, (code, out, err)
    lines = [ln for ln in err.splitlines() if not re.match(r"epoch \d+/\d+: ", ln)]  # train's progress
    assert len(lines) == 1 and lines[0].startswith("boldc: error: ") and "Traceback" not in err, err
    assert err.endswith(lines[0] + "\n")
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The converted digits models and a small training set."""
    d = tmp_path_factory.mktemp("reliability")
    boldc.save(boldc.convert(EXAMPLES / "digits_mlp.onnx"), d / "mlp.bir")
    boldc.save(boldc.convert(EXAMPLES / "digits_cnn.onnx"), d / "cnn.bir")
    train = np.load(EXAMPLES / "digits_train.npz")
    np.savez(d / "train.npz", x=train["x"][:128], y=train["y"][:128])
    return d


# --- 1. invalid UTF-8 in an ONNX string ----------------------------------------------------------


def test_invalid_utf8_in_an_onnx_attribute_name_is_one_line(cli, tmp_path):
    """One bit flip in the attribute name 'beta' of a Gemm node (0x62 -> 0xe2): the checker
    raised UnicodeDecodeError (a traceback, exit 1)."""
    raw = bytearray((EXAMPLES / "digits_mlp.onnx").read_bytes())
    at = raw.index(b"\x04beta") + 1
    raw[at] = 0xE2
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(bytes(raw))
    refused(cli("convert", bad, "-o", tmp_path / "o.bir"), "bad.onnx: node", "not UTF-8 text")
    assert not (tmp_path / "o.bir").exists()
    with pytest.raises(boldc.BoldcError, match="not UTF-8 text"):
        boldc.import_onnx(bad)


# --- 2. a .bir that lost a resource line, an empty file ---------------------------------------


def test_a_bir_missing_one_resource_is_refused_naming_it(cli, work, tmp_path):
    text = (work / "cnn.bir").read_text()
    lines = [ln for ln in text.splitlines(keepends=True) if not ln.lstrip().startswith("@features.7.weight =")]
    assert len(lines) == len(text.splitlines()) - 1
    cut = tmp_path / "cut.bir"
    cut.write_text("".join(lines))
    line = refused(cli("show", cut), "cut.bir:", "no data for 1 of the 5 params (@features.7.weight)")
    assert re.match(r"boldc: error: \S+cut\.bir:\d+:\d+: ", line), line
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    for args in (["run", cut, "-i", tmp_path / "x.npy"], ["compile", cut, "-o", tmp_path / "c"],
                 ["train", cut, "--data", work / "train.npz", "-o", tmp_path / "t.bir"],
                 ["eval", cut, "--data", work / "train.npz"]):
        line = refused(cli(*args), "@features.7.weight")
        assert "structure-only" not in line
    structure = tmp_path / "structure.bir"  # no resources section at all: still structure only
    structure.write_text(boldc.dumps(boldc.load(work / "cnn.bir"), weights=False))
    assert cli("show", structure)[0] == 0


@pytest.mark.parametrize("content", ["", "\n\n", "// only a comment\n"])
def test_an_empty_ir_file_is_not_a_module(cli, tmp_path, content):
    empty = tmp_path / "empty.bir"
    empty.write_text(content)
    refused(cli("show", empty), "empty.bir:1:1: no IR in it (an empty file?)")


def test_dev_null_is_not_a_module(cli):
    if not Path("/dev/null").exists():
        pytest.skip("no /dev/null on this system")
    refused(cli("show", "/dev/null"), "/dev/null:1:1: no IR in it")


# --- 3. checkpoint meta, trailing bytes, an epoch that contradicts the state ----------------------


def _train(cli, work, out: Path, *extra: str):
    code, _, err = cli("train", work / "mlp.bir", "--data", work / "train.npz", "-o", out, "--batch", "32", *extra)
    assert code == 0, err


def _rewrite(path: Path, module_state, meta) -> None:
    """``path`` re-encoded (valid CRC) with another meta."""
    arrays, _ = decode_checkpoint(module_state, path.read_bytes(), str(path))
    for name, arr in arrays.items():
        module_state.params[name].data = arr
    path.write_bytes(encode_checkpoint(module_state, meta))


def _state_module(work, epochs: int):
    # the step boldc train builds: its defaults, 4 steps per epoch (128 samples, batch 32)
    return training_module(boldc.load(work / "mlp.bir"), TrainOptions.from_kwargs({"total_steps": 4 * epochs}))


# a meta that is not an object is refused by the checkpoint reader itself (any caller);
# an object without what boldc train writes, by boldc train
NOT_AN_OBJECT = "m.ckpt: meta section is not a JSON object"
NOT_OURS = "m.ckpt: not a checkpoint of boldc train"


@pytest.mark.parametrize("meta, needles", [
    ([1, 2, 3], [NOT_AN_OBJECT]),
    ({"epoch": "1", "run": {}}, [NOT_OURS, "'epoch' it ends (a whole number >= 1)"]),
    ({"epoch": True, "run": {}}, [NOT_OURS, "'epoch' it ends"]),
    ({"epoch": 1, "run": [1]}, [NOT_OURS, "the 'run' it belongs to"]),
    ("text", [NOT_AN_OBJECT]),
])
def test_a_checkpoint_meta_of_the_wrong_shape_is_refused(cli, work, tmp_path, meta, needles):
    """Meta [1, 2, 3] with a valid CRC: AttributeError in _resume before."""
    out = tmp_path / "m.bir"
    _train(cli, work, out, "--epochs", "1")
    ck = tmp_path / "m.ckpt"
    _rewrite(ck, _state_module(work, 2), meta)
    before = out.read_bytes()
    refused(cli("train", work / "mlp.bir", "--data", work / "train.npz", "-o", out, "--batch", "32",
                "--epochs", "2", "--resume", ck), *needles)
    assert out.read_bytes() == before


def test_an_epoch_that_contradicts_the_state_is_refused(cli, work, tmp_path):
    """A checkpoint of epoch 2 whose meta says epoch 1 would repeat an epoch of the schedule."""
    out = tmp_path / "m.bir"
    _train(cli, work, out, "--epochs", "3", "--metrics", tmp_path / "first.json")
    ck = tmp_path / "m.ckpt"
    meta = decode_checkpoint(_state_module(work, 3), ck.read_bytes())[1]
    assert meta["epoch"] == 3
    _rewrite(ck, _state_module(work, 3), {**meta, "epoch": 1})
    refused(cli("train", work / "mlp.bir", "--data", work / "train.npz", "-o", out, "--batch", "32",
                "--epochs", "3", "--resume", ck), "m.ckpt: its meta says epoch 1 (4 steps of @opt.step)",
            "taken 12 steps")


def _with_trailing_bytes(raw: bytes, extra: int = 8) -> bytes:
    body = raw[:-4] + bytes(extra)
    return body + struct.pack("<I", zlib.crc32(body))


def test_trailing_bytes_are_refused_by_both_readers(tmp_path):
    """8 zero bytes before the CRC (CRC recomputed) were accepted by both readers."""
    state = training_module(boldc.convert(EXAMPLES / "digits_mlp.onnx"), TrainOptions.from_kwargs({}))
    raw = encode_checkpoint(state, {"epoch": 1})
    path = tmp_path / "long.ckpt"
    path.write_bytes(_with_trailing_bytes(raw))
    with pytest.raises(boldc.BoldcError, match="long.ckpt: its size .* is not the .* truncated or has bytes after"):
        boldc.load_checkpoint(state.copy(), path)
    cm = boldc.compile(boldc.convert(EXAMPLES / "digits_mlp.onnx"), train=True, max_batch=4)
    with pytest.raises(boldc.BoldcError, match="long.ckpt: its size is not the one its header and table give"):
        cm.load_checkpoint(path)
    (tmp_path / "ok.ckpt").write_bytes(raw)  # the untouched file still loads in both
    assert boldc.load_checkpoint(state.copy(), tmp_path / "ok.ckpt") == {"epoch": 1}
    assert cm.load_checkpoint(tmp_path / "ok.ckpt") == {"epoch": 1}


# --- 4. rates in float32, a loss that becomes non-finite -------------------------------------------


@pytest.mark.parametrize("command", ["train", "compile"])
@pytest.mark.parametrize("flag, value, needle", [
    ("--lr", "1e39", "--lr: 1e+39 is beyond the float32 range"),
    ("--eta", "1e39", "--eta: 1e+39 is beyond the float32 range"),
    ("--lr", "1e-50", "--lr: 1e-50 is 0 in float32"),
])
def test_rates_are_checked_in_float32(cli, work, tmp_path, command, flag, value, needle):
    """--lr 1e39 (finite as a double, inf as f32) trained with loss nan and exit 0."""
    if command == "train":
        args = ["train", work / "mlp.bir", "--data", work / "train.npz", "-o", tmp_path / "o.bir"]
    else:
        args = ["compile", work / "mlp.bir", "-o", tmp_path / "c", "--train"]
    refused(cli(*args, flag, value), needle)
    assert list(tmp_path.iterdir()) == []


def _finite_files(folder: Path, stem: str = "m") -> None:
    model = boldc.load(folder / f"{stem}.bir")
    for name, p in model.params.items():
        assert np.all(np.isfinite(p.data)), name
    json.loads((folder / f"{stem}.metrics.json").read_text(), parse_constant=lambda c: pytest.fail(c))


def test_a_diverging_run_stops_and_writes_nothing_non_finite(cli, work, tmp_path):
    """--lr 3e38 is finite in float32, but Adam's first steps overflow the weights: the
    loss becomes nan. Before: exit 0 and NaN weights in the output."""
    line = refused(cli("train", work / "mlp.bir", "--data", work / "train.npz", "-o", tmp_path / "m.bir",
                       "--lr", "3e38", "--epochs", "3"), "training diverged: the loss of step")
    assert "nothing was written" in line
    assert list(tmp_path.iterdir()) == []


def test_divergence_keeps_the_last_good_epoch(cli, work, tmp_path, monkeypatch):
    """The loss becomes nan in epoch 2: the files of epoch 1 stay, exit 2 naming them."""
    original, calls = CompiledModel.train_step, []

    def nan_in_epoch_two(self, x, y):
        calls.append(1)
        loss = original(self, x, y)
        return float("nan") if len(calls) == 6 else loss  # 4 steps per epoch

    monkeypatch.setattr(CompiledModel, "train_step", nan_in_epoch_two)
    line = refused(cli("train", work / "mlp.bir", "--data", work / "train.npz", "-o", tmp_path / "m.bir",
                       "--batch", "32", "--epochs", "3"), "the loss of step 2 of epoch 2 is nan",
                   "m.ckpt (epoch 1;")
    assert "m.bir (epoch 1)" in line
    _finite_files(tmp_path)
    assert json.loads((tmp_path / "m.metrics.json").read_text())["epochs"][-1]["epoch"] == 1


def test_nan_weights_after_an_epoch_are_never_written(cli, work, tmp_path, monkeypatch):
    """A float param that becomes NaN in the last step of epoch 2 (its loss still finite):
    epoch 2 is not written."""
    original, calls = CompiledModel.train_step, []

    def poison(self, x, y):
        calls.append(1)
        loss = original(self, x, y)
        if len(calls) == 8:
            name = next(n for n in self.param_names() if self.get_param(n).dtype == np.float32
                        and self.get_param(n).ndim == 2)
            self.set_param(name, np.full_like(self.get_param(name), np.nan))
        return loss

    monkeypatch.setattr(CompiledModel, "train_step", poison)
    refused(cli("train", work / "mlp.bir", "--data", work / "train.npz", "-o", tmp_path / "m.bir",
                "--batch", "32", "--epochs", "3"), "after epoch 2 param @", "NaN or infinite", "(epoch 1;")
    _finite_files(tmp_path)


# --- 5. an output path that is an input path ------------------------------------------------------


def test_train_output_equal_to_the_data_is_refused(cli, work, tmp_path):
    """`boldc train m.bir --data d.npz -o d.npz` replaced the training data by the model."""
    data = tmp_path / "d.npz"
    data.write_bytes((work / "train.npz").read_bytes())
    before = data.read_bytes()
    refused(cli("train", work / "mlp.bir", "--data", data, "-o", data), "d.npz: -o names the --data input")
    for flag in ("--checkpoint", "--metrics"):
        refused(cli("train", work / "mlp.bir", "--data", data, "-o", tmp_path / "m.bir", flag, data),
                f"d.npz: {flag} names the --data input")
    ck = tmp_path / "old.ckpt"
    ck.write_bytes(b"x")
    refused(cli("train", work / "mlp.bir", "--data", data, "-o", tmp_path / "m.bir", "--metrics", ck,
                "--resume", ck), "old.ckpt: --metrics names the --resume input")
    os.link(data, tmp_path / "hard.npz")  # another name of the same file
    refused(cli("train", work / "mlp.bir", "--data", data, "-o", tmp_path / "hard.npz"), "names the --data input")
    assert data.read_bytes() == before


def test_every_writing_command_refuses_to_replace_its_input(cli, work, tmp_path):
    onnx_copy = tmp_path / "m.onnx"
    onnx_copy.write_bytes((EXAMPLES / "digits_mlp.onnx").read_bytes())
    refused(cli("convert", onnx_copy, "-o", onnx_copy), "m.onnx: -o names the MODEL input")
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 64), np.float32))
    refused(cli("run", work / "mlp.bir", "-i", x, "-o", x), "x.npy: -o names the --input input")
    refused(cli("run", work / "mlp.bir", "-i", x, "-o", work / "mlp.bir"), "mlp.bir: -o names the FILE input")
    refused(cli("energy", work / "mlp.bir", "--format", "json", "-o", work / "mlp.bir"), "-o names the FILE input")
    refused(cli("energy", work / "mlp.bir", "--format", "json", "-o", tmp_path / "r", "--plot", tmp_path / "r"),
            "r: --plot names the -o output")
    assert onnx_copy.read_bytes() == (EXAMPLES / "digits_mlp.onnx").read_bytes()
    assert np.load(x).shape == (2, 64)
    # compile --force replaces the folder whole: refused when the model lies inside it
    folder = tmp_path / "export"
    assert cli("compile", work / "mlp.bir", "-o", folder)[0] == 0
    inside = folder / "model.bir"
    inside.write_bytes((work / "mlp.bir").read_bytes())
    refused(cli("compile", inside, "-o", folder, "--force"), "export: -o holds the FILE input")
    assert inside.exists()


# --- 6. the energy model's time and the batch bound ------------------------------------------------


def boldc_process(*args, timeout: float) -> tuple[int, str, str]:
    """``boldc ARGS`` in a child process, killed after ``timeout`` seconds (a failure)."""
    try:
        res = subprocess.run([sys.executable, "-P", "-m", "boldc", *map(str, args)], capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"boldc {' '.join(map(str, args))} ran past {timeout} s")
    return res.returncode, res.stdout, res.stderr


def test_a_huge_batch_is_refused_at_once():
    """--batch 10**12 took over a minute (the tiling search enumerated every sample)."""
    line = refused(boldc_process("energy", EXAMPLES / "digits_cnn.onnx", "--batch", 10**12, timeout=60),
                   "--batch: batch 1000000000000 is larger than 16,777,216 (2^24)")
    assert "divisor" in line
    with pytest.raises(boldc.BoldcError, match="larger than 16,777,216"):
        boldc.energy(boldc.convert(EXAMPLES / "digits_cnn.onnx"), batch=2**24 + 1)


def test_the_energy_search_works_on_divisors_not_samples():
    """At the bound (2^24, 25 divisors) a training report takes about as long as at 32:
    before, the search looped over every sample count up to the batch."""
    from boldc.energymodel.tiling import divisors

    assert divisors(2**24) == [2**k for k in range(25)]
    assert divisors(10**12, limit=1000) == [d for d in range(1, 1001) if 10**12 % d == 0]
    m = boldc.convert(EXAMPLES / "digits_cnn.onnx")
    start = time.perf_counter()
    small = boldc.energy(m, batch=32, phase="training")
    t_small = time.perf_counter() - start
    start = time.perf_counter()
    big = boldc.energy(m, batch=2**24, phase="training")
    t_big = time.perf_counter() - start
    assert t_big < max(10 * t_small, 20), (t_small, t_big)
    assert big.total_pj > 10**5 * small.total_pj  # it did cost the bigger step


# --- 7. one form for every error line -------------------------------------------------------------

FORM = re.compile(r"^boldc: error: (?P<where>\S+(?: \S+)?): \S")


@pytest.mark.parametrize("args, where", [
    (["convert", "missing.onnx"], "missing.onnx"),
    (["convert", EXAMPLES / "digits_mlp.onnx", "--logic", "nand"], "--logic"),
    (["convert", EXAMPLES / "digits_mlp.onnx", "--frobnicate"], "--frobnicate"),
    (["show", "bad.bir"], "bad.bir:2:1"),
    (["show"], "FILE"),
    (["run", "m.bir"], "--input"),
    (["run", "bad.bir", "-i", "x.npy"], "bad.bir:2:1"),
    (["compile", "m.bir"], "--output"),
    (["compile", "m.bir", "-o", "out", "--threads", "0"], "--threads"),
    (["train", "m.bir", "--data", "d.npz", "--batch", "0"], "--batch"),
    (["train", "bad.bir", "--data", "d.npz"], "bad.bir:2:1"),
    (["train", "m.bir", "--data", "missing.npz"], "missing.npz"),
    (["eval", "m.bir"], "--data"),
    (["eval", "m.bir", "--data", "missing.npz"], "missing.npz"),
    (["energy", "m.bir", "--phase", "train"], "--phase"),
    (["energy", "bad.bir"], "bad.bir:2:1"),
    (["frobnicate"], "frobnicate"),
])
def test_every_command_prints_errors_in_one_form(cli, work, tmp_path, monkeypatch, args, where):
    """Flag errors read `boldc train: error: Invalid value for '--batch'` (click's), IR errors
    `boldc: m.bir:25:3: error: ...`: now every one reads `boldc: error: WHERE: WHAT`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.bir").write_bytes((work / "mlp.bir").read_bytes())
    (tmp_path / "bad.bir").write_text("bir 1\n%%%\n")
    line = refused(cli(*args))
    match = FORM.match(line)
    assert match and match["where"] == where, line


def test_the_installed_script_prints_the_same_form(tmp_path):
    bad = tmp_path / "bad.bir"
    bad.write_text("bir 1\n%%%\n")
    res = subprocess.run([sys.executable, "-P", "-m", "boldc", "show", str(bad)], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.splitlines() == [f"boldc: error: {bad}:2:1: unexpected character '%'"]


# --- 8. a double Ctrl-C ---------------------------------------------------------------------------

DOUBLE_CTRL_C = """
import os, signal, sys, time
from boldc.backend.model import CompiledModel

original, calls = CompiledModel.train_step, []
def step(self, x, y):
    calls.append(1)
    if len(calls) == 6:  # the first Ctrl-C, in epoch 2
        os.kill(os.getpid(), signal.SIGINT)
    return original(self, x, y)
CompiledModel.train_step = step

real_exit = sys.exit
def exit_with_a_second_ctrl_c(code=0):
    os.kill(os.getpid(), signal.SIGINT)  # the second, while the process is ending
    time.sleep(0.2)
    real_exit(code)
sys.exit = exit_with_a_second_ctrl_c

sys.argv = ["boldc"] + sys.argv[1:]
from boldc.cli import entry
entry()
"""


def test_a_second_ctrl_c_still_exits_with_130(work, tmp_path):
    """The second Ctrl-C arrived while boldc train was ending after the first: the process
    died by the signal (status -2) instead of exiting with 130. Deterministic: the first
    SIGINT in a training step, the second in sys.exit."""
    out = tmp_path / "m.bir"
    res = subprocess.run([sys.executable, "-P", "-c", DOUBLE_CTRL_C, "train", str(work / "mlp.bir"), "--data",
                          str(work / "train.npz"), "-o", str(out), "--batch", "32", "--epochs", "5"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 130, (res.returncode, res.stderr[-2000:])
    assert "boldc: interrupted; the last good checkpoint" in res.stderr and "Traceback" not in res.stderr
    assert boldc.load(out) is not None


@pytest.mark.parametrize("gap", [0.0, 0.002, 0.02])
def test_a_real_double_ctrl_c_exits_with_130(work, tmp_path, gap):
    """Two real SIGINTs `gap` seconds apart while `boldc train` runs."""
    import signal

    out = tmp_path / "m.bir"
    proc = subprocess.Popen([sys.executable, "-P", "-m", "boldc", "train", str(work / "mlp.bir"), "--data",
                             str(work / "train.npz"), "-o", str(out), "--epochs", "100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "m.metrics.json").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        time.sleep(gap)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    boldc.load(out)  # the files are intact


# --- also: the Makefile, misleading messages --------------------------------------------------------


def test_the_makefile_comment_lines_and_flag_hooks(cli, work, tmp_path):
    out = tmp_path / "c"
    assert cli("compile", work / "mlp.bir", "-o", out, "--train")[0] == 0
    makefile = (out / "Makefile").read_text()
    header = [ln for ln in makefile.splitlines() if ln.startswith("#   ./")]
    assert header == ["#   ./model x.bin",
                      "#   ./model_train EPOCHS out.ckpt x.bin target.bin    (the training example)"]
    # every ISA the comment names is one the runtime has kernels for (bd_isa.h selects them)
    isa_lines = [ln for ln in makefile.splitlines() if ln.startswith("#   make ARCH=")]
    assert any("-mavx2" in ln for ln in isa_lines) and any("-march=native" in ln for ln in isa_lines)
    assert "SSE" not in makefile and "AVX-512 VNNI" not in makefile  # no such kernels
    readme = (out / "README.txt").read_text()
    assert "    ./model x.bin\n\n    ./model_train EPOCHS out.ckpt x.bin target.bin\n\n" in readme
    assert "EXTRA_CFLAGS" in readme and "SANITIZE=1" in readme
    if not MAKE_AVAILABLE:
        pytest.skip("make is not installed: the flags of the Makefile cannot be checked")
    for args in (["CFLAGS+=-DBOLDC_TEST"], ["EXTRA_CFLAGS=-DBOLDC_TEST"]):
        dry = subprocess.run(["make", "-n", "-C", str(out), *args], capture_output=True, text=True)
        compile_line = next(ln for ln in dry.stdout.splitlines() if " -c " in ln)
        for flag in ("-std=c99", "-O2", "-Wall", "-Wextra", "-ffp-contract=off", "-DBOLDC_TEST"):
            assert flag in compile_line.split(), (args, compile_line)
    dry = subprocess.run(["make", "-n", "-C", str(out), "SANITIZE=1"], capture_output=True, text=True).stdout
    link = next(ln for ln in dry.splitlines() if " -o model_train " in ln)
    assert "-fsanitize=address,undefined" in link.split()


def test_a_regular_file_used_as_a_directory_is_named(cli, work, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    refused(cli("convert", EXAMPLES / "digits_mlp.onnx", "-o", afile / "m.bir"), f"{afile} is a file, not a directory")
    refused(cli("compile", work / "mlp.bir", "-o", afile / "sub" / "dir"), f"{afile} is a file, not a directory")
    refused(cli("train", work / "mlp.bir", "--data", work / "train.npz", "-o", afile / "m.bir"),
            f"{afile} is a file, not a directory")


def test_a_graph_output_no_node_produces_is_named(tmp_path):
    from onnx import helper

    from onnxgraph import model

    m = model([helper.make_node("Relu", ["x"], ["y"])], {"x": ["N", 3]}, ["nowhere"], opset=13)
    with pytest.raises(boldc.BoldcError, match="graph output 'nowhere' is not produced by any node"):
        boldc.import_onnx(m)


# --- found by the fuzz tests (tests/test_fuzz_*.py) -------------------------------------------------


def _onnx_model(name: str = "digits_mlp.onnx"):
    import onnx

    return onnx.load(EXAMPLES / name)


def test_an_unknown_onnx_element_type_of_the_input_is_named():
    """elem_type 99 of the graph input: ValueError from onnx's enum (a traceback)."""
    m = _onnx_model()
    m.graph.input[0].type.tensor_type.elem_type = 99
    with pytest.raises(boldc.BoldcError, match="input 'x' has element type type code 99"):
        boldc.import_onnx(m)


@pytest.mark.parametrize("text, where", [
    ('bir 1\nparam @w : f32[] {role = "\x00tep counter"}\n', "m.bir:2:26"),
    ('bir 1\nparam @"w\x01" : f32[]\n', "m.bir:2:7"),
])
def test_a_raw_control_character_in_an_ir_string_is_a_parse_error(text, where):
    """A NUL inside a string attribute: json's JSONDecodeError escaped the parser."""
    with pytest.raises(boldc.BoldcError, match=f"^{where}: error: bad string .*invalid control character"):
        boldc.parse(text, filename="m.bir")


def test_ir_errors_print_one_error_word(cli, tmp_path):
    """`file: error: unexpected end of file` (no line) printed `boldc: error: file: error: ...`,
    and a path with a space kept its second `error:` too."""
    from boldc.cli import error_line
    from boldc.errors import ParseError

    assert error_line(ParseError("m.bir: error: unexpected end of file")) == \
        "boldc: error: m.bir: unexpected end of file"
    cut = tmp_path / "my dir" / "cut.bir"
    cut.parent.mkdir()
    cut.write_text("bir 1\n%%")
    line = refused(cli("show", cut))
    assert line == f"boldc: error: {cut}:2:1: unexpected character '%'", line
