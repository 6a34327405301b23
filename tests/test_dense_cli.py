"""``boldc train`` and ``boldc eval`` on dense predictions (docs/training.md): per-pixel labels
[N, H, W] with an ignore index and the metrics accuracy | miou | psnr, and their errors (exit 2,
one line, nothing written)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import boldc
from boldc import metrics

from trainutil import segmentation_data, tiny_fcn


def _image_model() -> boldc.Module:
    """An image-to-image model: a 3x3 float conv [N, 2, 6, 6] -> [N, 1, 6, 6]."""
    rng = np.random.default_rng(5)
    m = boldc.Module()
    fb = boldc.FunctionBuilder(m, "forward", [("x", boldc.tensor("f32", "N", 2, 6, 6))])
    w = m.add_param("w", boldc.tensor("f32", 1, 2, 3, 3), (rng.standard_normal((1, 2, 3, 3)) / 4).astype("f4"))
    fb.ret(fb.op("conv2d", [fb.args[0], w], {"pad": [1, 1, 1, 1]}))
    return m


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("dense")
    boldc.save(tiny_fcn(0), d / "fcn.bir")
    boldc.save(_image_model(), d / "image.bir")
    x, y = segmentation_data(40, seed=0)
    np.savez(d / "seg.npz", x=x, y=y)
    np.savez(d / "seg255.npz", x=x, y=np.where(y == -100, 255, y).astype(np.uint8))
    images = np.clip(0.5 + 0.25 * x[:, :1], 0, 1).astype(np.float32)  # the target: an affine map of channel 0
    np.savez(d / "images.npz", x=x, y=images)
    return d


def _epochs(path):
    return json.loads(path.read_text())["epochs"]


def _train(cli, model, data, out, *options) -> tuple[str, list[dict]]:
    """``boldc train`` in batches of 8 that must succeed: (its stdout, the epochs of its metrics file)."""
    code, stdout, err = cli("train", model, "--data", data, "-o", out, "--batch", "8", *options)
    assert code == 0, err
    return stdout + err, _epochs(out.with_suffix(".metrics.json"))


def test_segmentation_trains_and_evaluates_with_miou(cli, files, tmp_path):
    out = tmp_path / "seg.bir"
    printed, history = _train(cli, files / "fcn.bir", files / "seg.npz", out, "--epochs", "4", "--val-split", "0.25",
                              "--metric", "miou", "--eta", "30")
    first, last = history[0], history[-1]
    assert last["train_loss"] < first["train_loss"]
    assert all(0 < e["train_miou"] <= 1 and 0 < e["val_miou"] <= 1 for e in history)
    assert "train_accuracy" not in last and "mIoU" in printed and "val mIoU" in printed
    code, stdout, err = cli("eval", out, "--data", files / "seg.npz", "--metric", "miou")
    assert code == 0, err
    shown = float(re.search(r"mIoU ([0-9.]+)%", stdout).group(1))
    x, y = np.load(files / "seg.npz")["x"], np.load(files / "seg.npz")["y"]
    cm = boldc.compile(boldc.load(out), max_batch=40)
    want = metrics.miou(cm.infer(x), y, ignore_index=-100)
    assert abs(shown - 100 * want) < 0.006
    code, stdout, _ = cli("eval", out, "--data", files / "seg.npz")  # the default: per-pixel accuracy
    assert code == 0 and "accuracy" in stdout and "/40)" not in stdout
    shown = float(re.search(r"accuracy ([0-9.]+)%", stdout).group(1))
    assert abs(shown - 100 * metrics.accuracy(cm.infer(x), y, ignore_index=-100)) < 0.006


def test_an_ignore_index_of_its_own(cli, files, tmp_path):
    """Labels 255 for unlabelled pixels: refused with the default -100, trained with --ignore-index 255
    (on the torch engine), which the trained model's eval needs too."""
    out = tmp_path / "o.bir"
    code, _, err = cli("train", files / "fcn.bir", "--data", files / "seg255.npz", "-o", out, "--epochs", "1")
    assert code == 2 and "label 255 in 'y' is out of range: the model has 3 classes (0 to 2; ignore index -100)" \
        in err and err.count("\n") == 1
    _train(cli, files / "fcn.bir", files / "seg255.npz", out, "--epochs", "2", "--ignore-index", "255",
           "--engine", "torch")
    run = json.loads(out.with_suffix(".metrics.json").read_text())["run"]
    assert run["ignore_index"] == 255 and run["metric"] == "accuracy"
    code, stdout, err = cli("eval", out, "--data", files / "seg255.npz", "--ignore-index", "255")
    assert code == 0 and "accuracy" in stdout, err


def test_image_targets_with_psnr(cli, files, tmp_path):
    out = tmp_path / "sr.bir"
    printed, history = _train(cli, files / "image.bir", files / "images.npz", out, "--epochs", "3", "--loss", "mse",
                              "--metric", "psnr", "--lr", "0.01")
    assert history[-1]["train_psnr"] > history[0]["train_psnr"] and "PSNR" in printed
    data = np.load(files / "images.npz")
    cm = boldc.compile(boldc.load(out), max_batch=40)
    want = metrics.psnr(cm.infer(data["x"]), data["y"], peak=1.0)
    for peak, shift in (("1", 0.0), ("255", 20 * np.log10(255))):
        code, stdout, err = cli("eval", out, "--data", files / "images.npz", "--loss", "mse", "--metric", "psnr",
                                "--psnr-peak", peak)
        assert code == 0, err
        assert abs(float(re.search(r"PSNR ([0-9.]+) dB", stdout).group(1)) - (want + shift)) < 0.006
    code, stdout, _ = cli("eval", out, "--data", files / "images.npz", "--loss", "mse")  # no metric by default
    assert code == 0 and "PSNR" not in stdout and "accuracy" not in stdout
    _, history = _train(cli, files / "image.bir", files / "images.npz", tmp_path / "d.bir", "--epochs", "1",
                        "--loss", "mse")
    assert history[0]["train_accuracy"] is None


def test_metric_and_data_errors(cli, files, tmp_path):
    x, y = segmentation_data(8)
    np.savez(tmp_path / "flat.npz", x=x, y=y[:, 0, 0])
    np.savez(tmp_path / "float.npz", x=x, y=y.astype(np.float32))
    np.savez(tmp_path / "short.npz", x=x, y=y[:, :5])
    fcn, image, seg, images = files / "fcn.bir", files / "image.bir", files / "seg.npz", files / "images.npz"
    cases = [
        (["train", fcn, "--data", seg, "--metric", "f1"], "--metric: 'f1' is not one of 'accuracy', 'miou', 'psnr'"),
        (["eval", fcn, "--data", seg, "--metric", "f1"], "--metric: 'f1' is not one of 'accuracy', 'miou', 'psnr'"),
        (["train", fcn, "--data", seg, "--metric", "psnr"],
         "--metric psnr: metric psnr compares predictions with float targets (loss mse or l1); these targets are "
         "integer class labels: use accuracy or miou"),
        (["eval", fcn, "--data", seg, "--metric", "psnr"], "--metric psnr: metric psnr compares predictions"),
        (["train", image, "--data", images, "--loss", "mse", "--metric", "miou"],
         "--metric miou: metric miou compares class labels (loss softmax_xent); these targets are floats: use psnr"),
        (["eval", image, "--data", images, "--loss", "mse", "--metric", "accuracy"],
         "--metric accuracy: metric accuracy compares class labels"),
        (["train", image, "--data", images, "--loss", "mse", "--metric", "psnr", "--psnr-peak", "0"],
         "--psnr-peak: the PSNR peak must be a finite number > 0, got 0.0"),
        (["train", image, "--data", images, "--loss", "mse", "--ignore-index", "3"],
         "--ignore-index: the loss mse takes no class labels"),
        (["train", fcn, "--data", tmp_path / "flat.npz"],
         "'y' must be one label per sample and position of the prediction (shape [N, 6, 6]), got shape [8]"),
        (["eval", fcn, "--data", tmp_path / "short.npz"], "(shape [N, 6, 6]), got shape [8, 5, 6]"),
        (["train", fcn, "--data", tmp_path / "float.npz"], "'y' must hold integer class labels, got float32"),
        (["train", image, "--data", seg, "--loss", "mse"],
         "'y' must hold numbers of shape [N, 1, 6, 6] (the prediction's), got int32 [40, 6, 6]"),
    ]
    for args, message in cases:
        if args[0] == "train":
            args = [*args, "-o", tmp_path / "o.bir"]
        code, _, err = cli(*args)
        assert code == 2 and message in err and "Traceback" not in err, (args, err)
        assert err.count("\n") == 1, (args, err)
        assert not (tmp_path / "o.bir").exists() and not (tmp_path / "o.ckpt").exists()
