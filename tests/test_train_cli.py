"""``boldc train`` and ``boldc eval``: the happy path, resuming, Ctrl-C, and user errors
(exit 2, one line, no traceback, no half-written outputs)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

import boldc
from boldc.backend.model import CompiledModel

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The digits MLP converted from its ONNX file, and small data files of the shipped digits."""
    d = tmp_path_factory.mktemp("train")
    boldc.save(boldc.convert(EXAMPLES / "digits_mlp.onnx"), d / "digits.bir")
    train = np.load(EXAMPLES / "digits_train.npz")
    np.savez(d / "train.npz", x=train["x"][:256], y=train["y"][:256])
    np.savez(d / "test.npz", **np.load(EXAMPLES / "digits_test.npz"))
    return d


def _outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_shipped_data_files():
    for name, count in (("digits_train.npz", 1347), ("digits_test.npz", 450)):
        with np.load(EXAMPLES / name) as f:
            x, y = f["x"], f["y"]
        assert x.shape == (count, 64) and x.dtype == np.float32 and x.min() == 0 and x.max() == 16
        assert y.shape == (count,) and set(np.unique(y)) == set(range(10))


def test_train_then_eval(cli, files, tmp_path):
    out = tmp_path / "t.bir"
    code, stdout, stderr = cli("train", files / "digits.bir", "--data", files / "train.npz", "-o", out,
                               "--epochs", "3", "--batch", "32", "--val-split", "0.25")
    assert code == 0, stderr
    assert "trained 3 epochs" in stdout and "val accuracy" in stdout
    assert stderr.count("epoch ") == 3  # one line per epoch when stderr is not a terminal
    assert _outputs(tmp_path) == ["t.bir", "t.ckpt", "t.metrics.json"]
    metrics = json.loads((tmp_path / "t.metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    assert metrics["run"]["train_samples"] == 192 and metrics["run"]["val_samples"] == 64
    first, last = metrics["epochs"][0], metrics["epochs"][-1]
    assert last["train_loss"] < first["train_loss"] and 0.5 < last["train_accuracy"] <= 1.0
    trained = boldc.load(out)
    assert set(trained.functions) == {"forward"}  # the optimizer state is in the checkpoint
    code, stdout, stderr = cli("eval", out, "--data", files / "test.npz")
    assert code == 0, stderr
    accuracy = float(stdout.split("accuracy ")[1].split("%")[0])
    cm = boldc.compile(trained)
    test = np.load(files / "test.npz")
    assert abs(cm.evaluate(test["x"], test["y"])[1] * 100 - accuracy) < 0.01
    code, before, _ = cli("eval", files / "digits.bir", "--data", files / "test.npz", "--batch", "7")
    assert code == 0 and before != stdout


@pytest.mark.parametrize("args,run", [
    (["--signal-bits", "8"], {"signal_bits": "8", "rounding": "nearest", "accumulator": "f32"}),
    (["--signal-bits", "4", "--rounding", "log"], {"signal_bits": "4", "rounding": "log"}),
    (["--signal-bits", "f32"], {"signal_bits": "f32"}),
    (["--accumulator", "i16", "--eta", "3000"], {"signal_bits": "16", "accumulator": "i16"}),
])
def test_signal_and_accumulator_options(cli, files, tmp_path, args, run):
    """The options reach the step (the run records them); an i16 accumulator's saturations
    are in the metrics."""
    out = tmp_path / "t.bir"
    code, _, stderr = cli("train", files / "digits.bir", "--data", files / "train.npz", "-o", out, "--epochs", "1",
                          *args)
    assert code == 0, stderr
    metrics = json.loads((tmp_path / "t.metrics.json").read_text())
    assert run.items() <= metrics["run"].items()
    saturations = metrics["epochs"][0].get("accumulator_saturations")
    assert (saturations is not None and saturations > 0) == (run.get("accumulator") == "i16")


def test_signal_options_are_checked(cli, files, tmp_path):
    code, _, stderr = cli("train", files / "digits.bir", "--data", files / "train.npz", "-o", tmp_path / "t.bir",
                          "--rounding", "log")
    assert code == 2 and "rounding=log is for 4-bit signals" in stderr and stderr.count("\n") == 1
    code, _, stderr = cli("train", files / "digits.bir", "--data", files / "train.npz", "--signal-bits", "12")
    assert code == 2 and "--signal-bits: '12' is not one of '16', '8', '4', 'f32'" in stderr


def test_resume_continues_exactly(cli, files, tmp_path):
    whole, half = tmp_path / "whole", tmp_path / "half"
    whole.mkdir()
    half.mkdir()
    args = ("--data", files / "train.npz", "--batch", "64", "--seed", "3")
    assert cli("train", files / "digits.bir", *args, "--epochs", "2", "-o", whole / "m.bir")[0] == 0
    assert cli("train", files / "digits.bir", *args, "--epochs", "2", "-o", half / "m.bir",
               "--metrics", half / "first.json")[0] == 0
    # rerun the same schedule but stop after epoch 1: resume from that checkpoint
    state = {"calls": 0}
    original = CompiledModel.train_step

    def stop_in_second_epoch(self, x, y):
        state["calls"] += 1
        if state["calls"] == 6:  # 4 steps per epoch: in epoch 2
            raise KeyboardInterrupt
        return original(self, x, y)

    mp = pytest.MonkeyPatch()
    mp.setattr(CompiledModel, "train_step", stop_in_second_epoch)
    try:
        code, _, err = cli("train", files / "digits.bir", *args, "--epochs", "2", "-o", half / "m.bir")
    finally:
        mp.undo()
    assert code == 130 and "interrupted" in err and "epoch 1" in err and "--resume" in err
    assert err.count("\n") >= 1 and "Traceback" not in err
    resumed = boldc.load(half / "m.bir")  # a usable model of epoch 1
    assert boldc.compile(resumed).infer(np.zeros((1, 64), np.float32)).shape == (1, 10)
    code, stdout, err = cli("train", files / "digits.bir", *args, "--epochs", "2", "-o", half / "m.bir",
                            "--resume", half / "m.ckpt")
    assert code == 0, err
    a, b = boldc.load(whole / "m.bir"), boldc.load(half / "m.bir")
    for name in a.params:
        assert np.array_equal(a.params[name].data, b.params[name].data), name
    metrics = json.loads((half / "m.metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert (whole / "m.ckpt").read_bytes() == (half / "m.ckpt").read_bytes()  # state and meta


def test_interrupt_before_the_first_epoch_writes_nothing(cli, files, tmp_path, monkeypatch):
    def interrupt(self, x, y):
        raise KeyboardInterrupt

    monkeypatch.setattr(CompiledModel, "train_step", interrupt)
    code, _, err = cli("train", files / "digits.bir", "--data", files / "train.npz", "-o", tmp_path / "m.bir")
    assert code == 130 and "nothing was written" in err
    assert _outputs(tmp_path) == []


def np_bytes(x, y) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y)
    return buf.getvalue()


def _data(tmp_path: Path, name="d.npz", **arrays) -> Path:
    np.savez(tmp_path / name, **arrays)
    return tmp_path / name


def _x(n=10, d=64):
    return np.ones((n, d), np.float32)


def _y(n=10):
    return np.arange(n, dtype=np.int64) % 10


@pytest.mark.parametrize("make, extra, message", [
    (lambda t: _data(t, x=_x()), [], "no array 'y' (the file has: x)"),
    (lambda t: _data(t, x=_x(d=65), y=_y()), [], "'x' has shape [10, 65]; the model takes samples of [64]"),
    (lambda t: _data(t, x=_x() > 0, y=_y()), [], "'x' must hold numbers"),
    (lambda t: _data(t, x=_x(), y=_y(9)), [], "'y' has 9 entries but 'x' has 10 samples"),
    (lambda t: _data(t, x=_x(), y=_y() + 1), [], "label 10 in 'y' is out of range: the model has 10 classes"),
    (lambda t: _data(t, x=_x(), y=_y().astype(np.float32)), [], "'y' must hold integer class labels"),
    (lambda t: _data(t, x=_x(0), y=_y(0)), [], "'x' holds no samples"),
    (lambda t: _data(t, x=_x() * np.nan, y=_y()), [], "NaN or infinite"),
    (lambda t: _data(t, x=_x(2), y=_y(2)), ["--val-split", "0.1"], "2 samples are too few for --val-split 0.1"),
    (lambda t: _data(t, x=_x(), y=_y()), ["--val-split", "1.5"], "--val-split must be in [0, 1)"),
    (lambda t: _data(t, x=_x(), y=_y()), ["--resume", "nope.ckpt"], "no such checkpoint"),
    (lambda t: t / "missing.npz", [], "missing.npz: no such file"),
    (lambda t: (np.save(t / "d.npy", _x()), t / "d.npy")[1], [], "a data file is an .npz"),
    (lambda t: _data(t, x=_x(), y=_y()), ["--epochs", "0"], "--epochs"),
    (lambda t: _data(t, x=_x(), y=_y()), ["--loss", "mse"], "'y' must hold numbers of shape [N, 10]"),
    (lambda t: _data(t, x=_x(), y=_y() - 1), [], "label -1 in 'y' is out of range"),
    (lambda t: _data(t, x=_x(), y=_y().reshape(10, 1)), [], "'y' must be one label per sample (shape [N])"),
    (lambda t: _data(t, x=_x().astype(np.float64) * 1e300, y=_y()), [], "'x' holds values beyond the float32 range"),
    (lambda t: _data(t, x=_x(), y=np.full((10, 10), np.inf)), ["--loss", "mse"], "'y' holds NaN or infinite"),
    (lambda t: _data(t, x=_x(), y=_y()), ["--val-split", "1.0"], "--val-split must be in [0, 1)"),
    (lambda t: _data(t, x=_x(), y=_y()), ["--val-split", "-0.1"], "--val-split must be in [0, 1)"),
    (lambda t: _data(t, x=_x(), y=_y()), ["--epochs", "-1"], "--epochs"),
    (lambda t: _data(t, x=_x(), y=_y()), ["--batch", "0"], "--batch"),
    (lambda t: _data(t, x=_x(), y=_y()), ["--lr", "-1"], "--lr"),
    (lambda t: _data(t, x=_x(), y=_y()), ["--lr", "nan"], "--lr: nan is not a finite number"),
    (lambda t: _data(t, x=_x(), y=_y()), ["--eta", "inf"], "--eta: inf is not a finite number"),
    (lambda t: _data(t, x=_x(), y=_y()), ["--schedule", "linear"], "--schedule"),
    (lambda t: _data(t, x=_x(), y=_y()), ["--seed", "-1"], "--seed"),
    (lambda t: (t / "bad.npz").write_bytes(np_bytes(_x(), _y())[:100]) and t / "bad.npz", [],
     "bad.npz: not a readable .npy/.npz file"),
    (lambda t: _data(t, x=_x(), y=_y()), ["-o", "missing/o.bir"], "missing/o.bir: directory missing does not exist"),
    (lambda t: _data(t, x=_x(), y=_y()), ["--metrics", "missing/m.json"], "directory missing does not exist"),
    (lambda t: _data(t, x=_x(), y=_y()), ["--checkpoint", "missing/c.ckpt"], "directory missing does not exist"),
])
def test_train_errors(cli, files, tmp_path, monkeypatch, make, extra, message):
    monkeypatch.chdir(tmp_path)
    data = make(tmp_path)
    before = _outputs(tmp_path)
    code, out, err = cli("train", files / "digits.bir", "--data", data, "-o", tmp_path / "o.bir", *extra)
    assert code == 2, out + err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert _outputs(tmp_path) == before  # nothing written


def test_resume_refuses_another_run(cli, files, tmp_path):
    args = ("--data", files / "train.npz", "-o", tmp_path / "m.bir")
    assert cli("train", files / "digits.bir", *args, "--epochs", "1")[0] == 0
    code, _, err = cli("train", files / "digits.bir", *args, "--epochs", "2", "--resume", tmp_path / "m.ckpt")
    assert code == 2 and "that run had epochs=1, this one 2" in err  # another schedule
    code, _, err = cli("train", files / "digits.bir", *args, "--epochs", "1", "--batch", "32",
                       "--resume", tmp_path / "m.ckpt")
    assert code == 2 and "that run had batch=64, this one 32" in err
    code, _, err = cli("train", files / "digits.bir", *args, "--epochs", "1", "--resume", tmp_path / "m.ckpt")
    assert code == 2 and "already finished its 1 epochs" in err
    other = tmp_path / "other.bir"
    boldc.save(boldc.convert(EXAMPLES / "digits_mlp.onnx", float_layers="all"), other)  # f32 where it has b1
    code, _, err = cli("train", other, "--data", files / "train.npz", "-o", tmp_path / "x.bir",
                       "--resume", tmp_path / "m.ckpt")
    assert code == 2 and "written for another model" in err and err.count("\n") == 1


def test_eval_and_option_errors(cli, files, tmp_path):
    data = _data(tmp_path, x=_x(), y=_y() + 1)
    code, _, err = cli("eval", files / "digits.bir", "--data", data)
    assert code == 2 and "out of range" in err and err.count("\n") == 1
    code, _, err = cli("eval", files / "digits.bir")
    assert code == 2 and "--data" in err
    stepped = tmp_path / "stepped.bir"
    m = boldc.load(files / "digits.bir")
    from boldc.passes import PassManager

    PassManager("autodiff,insert-optimizer").run(m)
    boldc.save(m, stepped)
    code, _, err = cli("train", stepped, "--data", files / "train.npz", "-o", tmp_path / "o.bir", "--eta", "2")
    assert code == 2 and "already has @train_step" in err and "--eta" in err
    code, out, err = cli("train", stepped, "--data", files / "train.npz", "-o", tmp_path / "o.bir", "--epochs", "1")
    assert code == 0, err
    assert "train_step" in boldc.load(tmp_path / "o.bir").functions
    code, _, err = cli("train", files / "digits.bir", "--data", files / "train.npz", "-o", files / "digits.bir")
    assert code == 2 and "digits.bir: -o names the MODEL input: an output must not replace an input" in err
    integer_out = tmp_path / "int.bir"
    boldc.save(boldc.convert(EXAMPLES / "digits_mlp.onnx", float_layers="first"), integer_out)
    code, _, err = cli("train", integer_out, "--data", files / "train.npz", "-o", tmp_path / "i.bir")
    assert code == 2 and "prediction must be f32, got i16" in err and err.count("\n") == 1


def test_resume_from_a_damaged_checkpoint_keeps_the_last_good_files(cli, files, tmp_path):
    """--resume of a truncated, corrupt, foreign or non-checkpoint file: one line naming it,
    exit 2, and the outputs of the earlier run are left exactly as they were."""
    args = ("--data", files / "train.npz", "-o", tmp_path / "m.bir", "--epochs", "2")
    assert cli("train", files / "digits.bir", *args)[0] == 0
    outputs = {name: (tmp_path / name).read_bytes() for name in ("m.bir", "m.ckpt", "m.metrics.json")}
    raw = outputs["m.ckpt"]
    other = tmp_path / "python.ckpt"  # a valid checkpoint of this model, not written by boldc train
    boldc.save_checkpoint(boldc.load(tmp_path / "m.bir"), other)
    damaged = {"short.ckpt": raw[:len(raw) // 3], "flip.ckpt": raw[:500] + bytes([raw[500] ^ 1]) + raw[501:],
               "text.ckpt": b"not a checkpoint at all, just some text"}
    for name, data in damaged.items():
        (tmp_path / name).write_bytes(data)
    messages = {"short.ckpt": "checksum mismatch", "flip.ckpt": "checksum mismatch", "text.ckpt": "bad magic",
                "python.ckpt": "written for another model"}
    for name, message in messages.items():
        code, _, err = cli("train", files / "digits.bir", *args, "--resume", tmp_path / name)
        assert code == 2 and f"{name}: " in err and message in err and err.count("\n") == 1, (name, err)
        for out, content in outputs.items():
            assert (tmp_path / out).read_bytes() == content, f"--resume {name} changed {out}"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    assert not leftovers


def _tiny(tmp_path: Path, name: str, build) -> Path:
    m = boldc.Module()
    fb = boldc.FunctionBuilder(m, "forward", [("x", boldc.tensor("f32", "N", 64))])
    fb.ret(build(m, fb, fb.args[0]))
    boldc.save(m, tmp_path / name)
    return tmp_path / name


def test_models_that_cannot_be_trained(cli, files, tmp_path):
    """Nothing to train (no f32/b1 param reaches the loss, or all frozen), and predictions
    that are not class logits: one line, exit 2, nothing written, for train and compile --train."""
    rng = np.random.default_rng(0)

    def tau_only(m, fb, x):  # the only param is a threshold's tau, which is not trained
        h = fb.op("threshold", [x, m.add_param("tau", boldc.tensor("f32", 64), np.zeros(64, np.float32))])
        return fb.op("cast", [h], {"to": "f32"})

    def float_only(m, fb, x):
        return fb.op("linear", [x, m.add_param("w", boldc.tensor("f32", 10, 64),
                                               rng.standard_normal((10, 64)).astype(np.float32))])

    def image_out(m, fb, x):  # rank 5: neither class logits nor the per-pixel logits [N, C, H, W]
        return fb.op("reshape", [float_only(m, fb, x)], {"shape": [-1, 1, 1, 2, 5]})

    cases = [(_tiny(tmp_path, "tau.bir", tau_only), [], "nothing to train"),
             (_tiny(tmp_path, "float.bir", float_only), ["--freeze-float"], "nothing to train"),
             (_tiny(tmp_path, "image.bir", image_out), [], "softmax_xent does not apply to the model's prediction")]
    before = _outputs(tmp_path)
    for bir, extra, message in cases:
        code, _, err = cli("train", bir, "--data", files / "train.npz", "-o", tmp_path / "o.bir", *extra)
        assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err, (bir, err)
    code, _, err = cli("compile", cases[0][0], "--train", "-o", tmp_path / "c")
    assert code == 2 and "nothing to train" in err and err.count("\n") == 1
    code, _, err = cli("compile", files / "digits.bir", "--train", "--eta", "nan", "-o", tmp_path / "c")
    assert code == 2 and "--eta: nan is not a finite number" in err and err.count("\n") == 1
    assert _outputs(tmp_path) == before


def test_real_ctrl_c_leaves_consistent_files(files, tmp_path):
    """SIGINT to a running `boldc train` (a child process): exit 130, one message naming the
    epoch of the files, and the checkpoint, the trained model and the metrics all hold that
    epoch (the end-of-epoch writes are not cut in the middle); no temp file is left."""
    import re
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "m.bir"
    # -P: run the installed boldc (with its templates), not the checkout in the working directory
    proc = subprocess.Popen([sys.executable, "-P", "-m", "boldc", "train", str(files / "digits.bir"), "--data",
                             str(files / "train.npz"), "-o", str(out), "--epochs", "100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "m.metrics.json").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(0.3)  # some epochs later, at an arbitrary point of one
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    epoch = int(re.search(r"m\.ckpt \(epoch (\d+);", err).group(1))
    assert f"m.bir (epoch {epoch})" in err and epoch >= 1
    metrics = json.loads((tmp_path / "m.metrics.json").read_text())
    assert metrics["epochs"][-1]["epoch"] == epoch
    trained = boldc.load(out)
    from boldc.backend.training import TrainOptions, training_module

    state = training_module(boldc.load(files / "digits.bir"), TrainOptions.from_kwargs({"total_steps": 4 * 100000}))
    assert boldc.load_checkpoint(state, tmp_path / "m.ckpt")["epoch"] == epoch
    for name, p in trained.params.items():
        assert np.array_equal(p.data, state.params[name].data), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bir", "m.ckpt", "m.metrics.json"]


def test_batch_larger_than_the_data_is_one_batch_per_epoch(cli, files, tmp_path):
    code, _, err = cli("train", files / "digits.bir", "--data", files / "train.npz", "-o", tmp_path / "m.bir",
                       "--epochs", "2", "--batch", str(10**12))
    assert code == 0, err
    run = json.loads((tmp_path / "m.metrics.json").read_text())["run"]
    assert run["batch"] == 256 and run["steps_per_epoch"] == 1
