"""The metrics of boldc.metrics (docs/training.md, "Metrics") on cases small enough to count by
hand, and their use by both engines' evaluate."""

from __future__ import annotations

import math

import numpy as np
import pytest

import boldc
from boldc import metrics
from boldc.epochs import evaluate_predictions
from boldc.errors import BoldcError
from boldc.ops.registry import lookup
from boldc.torch.engine import compile as torch_compile

from trainutil import segmentation_data, tiny_fcn


def _logits(predicted: np.ndarray, classes: int) -> np.ndarray:
    """Logits [N, C, *spatial] whose argmax over axis 1 is ``predicted`` [N, *spatial]."""
    onehot = np.eye(classes, dtype=np.float32)[predicted]  # [N, *spatial, C]
    return np.moveaxis(onehot, -1, 1)


# Two images of 2x3 pixels, 3 classes; 9 = ignored.
LABELS = np.array([[[0, 0, 1], [1, 2, 9]],
                   [[2, 2, 0], [9, 1, 1]]], np.int32)
PREDICTED = np.array([[[0, 1, 1], [1, 2, 0]],
                      [[2, 0, 0], [2, 1, 2]]])


def test_confusion_matrix_and_miou_by_hand():
    # the 10 pixels that count, (label, predicted): (0,0) (0,1) (1,1) (1,1) (2,2) | (2,2) (2,0) (0,0) (1,1) (1,2)
    counts = metrics.confusion_matrix(PREDICTED, LABELS, 3, ignore_index=9)
    assert counts.tolist() == [[2, 1, 0],
                               [0, 3, 1],
                               [1, 0, 2]]
    # IoU_0 = 2 / (3 + 3 - 2), IoU_1 = 3 / (4 + 4 - 3), IoU_2 = 2 / (3 + 3 - 2)
    want = (2 / 4 + 3 / 5 + 2 / 4) / 3
    assert metrics.miou(_logits(PREDICTED, 3), LABELS, ignore_index=9) == pytest.approx(want, abs=1e-15)
    assert metrics.mean_iou(PREDICTED, LABELS, 3, ignore_index=9) == metrics.mean_iou_of(counts)
    assert metrics.accuracy(_logits(PREDICTED, 3), LABELS, ignore_index=9) == pytest.approx(7 / 10, abs=1e-15)


def test_miou_counts_the_classes_that_occur_and_the_whole_set():
    """A class in neither labels nor predictions is left out; a class only predicted counts
    with IoU 0; two halves of a set give the IoU of the whole, not the mean of the halves."""
    labels = np.array([[0, 0, 1, 1]], np.int32)
    predicted = np.array([[0, 0, 1, 3]])  # class 2: nowhere; class 3: predicted only
    # IoU_0 = 2/2, IoU_1 = 1/2, IoU_3 = 0/1
    assert metrics.miou(_logits(predicted, 4), labels) == pytest.approx((1 + 0.5 + 0) / 3, abs=1e-15)
    a, b = _logits(PREDICTED, 3), LABELS
    whole = metrics.miou(a, b, ignore_index=9)
    halves = [metrics.miou(a[i:i + 1], b[i:i + 1], ignore_index=9) for i in range(2)]
    assert whole != pytest.approx(np.mean(halves))


def test_accuracy_of_class_logits_is_the_classic_one():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], np.float32)
    assert metrics.accuracy(logits, np.array([1, 1, 1])) == pytest.approx(2 / 3, abs=1e-15)
    assert metrics.accuracy(logits, np.array([1, -100, 1]), ignore_index=-100) == 1.0


def test_psnr_of_a_known_mse():
    pred = np.zeros((2, 1, 2, 2), np.float32)
    target = pred.copy()
    target[0] += 0.1       # image 0: MSE 0.01 -> 20 dB at peak 1
    target[1, 0, 0] = 0.5  # image 1: MSE (0.25 + 0.25) / 4 = 0.125 -> 10·log10(8) dB
    want = (10 * math.log10(1 / 0.01) + 10 * math.log10(1 / 0.125)) / 2
    assert metrics.psnr(pred, target) == pytest.approx(want, rel=1e-6)
    # peak 255 adds 20·log10(255) to every image
    assert metrics.psnr(pred * 255, target * 255, peak=255.0) == pytest.approx(want, rel=1e-5)
    assert metrics.psnr(pred, pred) == math.inf
    with pytest.raises(BoldcError, match="PSNR peak must be a finite number > 0"):
        metrics.psnr(pred, target, peak=0.0)


def test_metric_errors():
    with pytest.raises(BoldcError, match=r"unknown metric 'f1' \(metrics: accuracy, miou, psnr\)"):
        metrics.check_metric("f1", True)
    with pytest.raises(BoldcError, match="metric psnr compares predictions with float targets"):
        metrics.check_metric("psnr", True)
    with pytest.raises(BoldcError, match="metric miou compares class labels"):
        metrics.check_metric("miou", False)
    with pytest.raises(BoldcError, match="every label is the ignore index -100"):
        metrics.accuracy(np.zeros((1, 2, 2), np.float32), np.full((1, 2), -100), ignore_index=-100)
    with pytest.raises(BoldcError, match=r"labels of shape \[1, 3\] do not fit predictions \[1, 2, 2\]"):
        metrics.miou(np.zeros((1, 2, 2), np.float32), np.zeros((1, 3), np.int32))
    with pytest.raises(BoldcError, match=r"predicted class 5 is out of range: there are 3 classes"):
        metrics.mean_iou(np.array([[0, 5]]), np.array([[0, 1]]), 3)


def test_evaluate_predictions_default_metric_and_ignore_index():
    xent, mse = lookup("softmax_xent"), lookup("mse")
    labels_t = xent.target_type(boldc.tensor("f32", "N", 3, 2, 3))
    pred = _logits(PREDICTED, 3)
    loss, value = evaluate_predictions(xent, xent.normalize_attrs({}), labels_t, pred, LABELS, ignore_index=9)
    assert value == pytest.approx(0.7) and loss == pytest.approx(float(xent.evaluate(
        [pred, LABELS], xent.normalize_attrs({"ignore_index": 9}))[0]))
    image = boldc.tensor("f32", "N", 1, 2, 2)
    pred = np.zeros((2, 1, 2, 2), np.float32)
    assert evaluate_predictions(mse, mse.normalize_attrs({}), image, pred, pred + 0.1)[1] is None
    psnr = evaluate_predictions(mse, mse.normalize_attrs({}), image, pred, pred + 0.1, metric="psnr")[1]
    assert psnr == pytest.approx(20.0, rel=1e-6)
    with pytest.raises(BoldcError, match="ignore_index is for a loss of class labels; mse has none"):
        evaluate_predictions(mse, mse.normalize_attrs({}), image, pred, pred, ignore_index=3)


def test_both_engines_evaluate_the_same_metrics():
    x, y = segmentation_data(20, seed=4)
    module = tiny_fcn(3)
    cm = boldc.compile(module, max_batch=8)
    tm = torch_compile(module, max_batch=8)
    for engine in (cm, tm):  # each engine's metric of its own predictions (the C's floats may round apart)
        pred = engine.infer(x)
        for metric, fn in (("accuracy", metrics.accuracy), ("miou", metrics.miou)):
            loss, value = engine.evaluate(x, y, metric=metric)
            assert value == fn(pred, y, ignore_index=-100), (engine, metric)
            assert loss == pytest.approx(float(lookup("softmax_xent").evaluate(
                [pred, y], {"reduction": "mean", "ignore_index": -100})[0]), rel=1e-6)
    y[0, 0, 0] = 255
    with pytest.raises(BoldcError, match="label 255 is out of range"):
        cm.evaluate(x, y)
    y = np.where(y == -100, 255, y)
    for engine in (cm, tm):
        assert engine.evaluate(x, y, ignore_index=255)[1] == metrics.accuracy(engine.infer(x), y, ignore_index=255)
