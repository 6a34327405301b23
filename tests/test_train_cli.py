"""``boldc train`` and ``boldc eval``: the happy path, resuming, Ctrl-C, and user errors
(exit 2, one line, no traceback, no half-written outputs)."""

from __future__ import annotations

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
    assert (whole / "m.ckpt").read_bytes()[40:] == (half / "m.ckpt").read_bytes()[40:]


def test_interrupt_before_the_first_epoch_writes_nothing(cli, files, tmp_path, monkeypatch):
    def interrupt(self, x, y):
        raise KeyboardInterrupt

    monkeypatch.setattr(CompiledModel, "train_step", interrupt)
    code, _, err = cli("train", files / "digits.bir", "--data", files / "train.npz", "-o", tmp_path / "m.bir")
    assert code == 130 and "nothing was written" in err
    assert _outputs(tmp_path) == []


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
    boldc.save(boldc.convert(EXAMPLES / "digits_mlp.onnx", keep_bn=True), other)
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
    assert code == 2 and "four different files" in err
    integer_out = tmp_path / "int.bir"
    boldc.save(boldc.convert(EXAMPLES / "digits_mlp.onnx", float_layers="first"), integer_out)
    code, _, err = cli("train", integer_out, "--data", files / "train.npz", "-o", tmp_path / "i.bir")
    assert code == 2 and "prediction must be f32, got i16" in err and err.count("\n") == 1
