"""The evaluation metrics of ``boldc eval --metric`` and ``boldc train --metric``, one
definition for both engines (docs/training.md, "Metrics").

Each takes the predictions of a whole evaluation set and its targets (numpy arrays), so a
metric over several batches is the metric of their union, never a mean of per-batch values:

- ``accuracy``: the fraction of labels equal to the argmax of the prediction over axis 1
  (per sample of logits [N, C], per position of dense logits [N, C, *spatial]);
- ``miou``: the mean over the classes that occur (in the labels or the predictions) of
  IoU_c = TP_c / (TP_c + FP_c + FN_c), from one confusion matrix of the whole set;
- ``psnr``: 10·log10(peak² / MSE_i) of each sample i (MSE over its elements), averaged over
  the samples; a sample equal to its target has an infinite PSNR.

Labels equal to ``ignore_index`` are left out of accuracy and mIoU. accuracy and miou need
integer labels (a classification loss), psnr float targets (mse, l1). ``accuracy`` and
``miou`` take logits; ``confusion_matrix`` and ``mean_iou`` take predicted classes (maps of
class indices, e.g. a float model's argmax) and the number of classes.
"""

from __future__ import annotations

import numpy as np

from boldc.errors import BoldcError

METRICS = ("accuracy", "miou", "psnr")
LABEL_METRICS = ("accuracy", "miou")  # those that compare class labels
DEFAULT_PSNR_PEAK = 1.0  # the largest value of images stored in [0, 1]


def default_metric(labels: bool) -> str | None:
    """accuracy for integer labels; none for float targets (their range, hence a PSNR's
    peak, is the data's, so psnr is asked for by name)."""
    return "accuracy" if labels else None


def check_metric(metric: str, labels: bool) -> None:
    """Refuse an unknown metric, or one that does not fit the targets (``labels``: integer
    class labels, else float targets)."""
    if metric not in METRICS:
        raise BoldcError(f"unknown metric {metric!r} (metrics: {', '.join(METRICS)})")
    if labels and metric not in LABEL_METRICS:
        raise BoldcError(f"metric {metric} compares predictions with float targets (loss mse or l1); these targets "
                         f"are integer class labels: use {' or '.join(LABEL_METRICS)}")
    if not labels and metric in LABEL_METRICS:
        raise BoldcError(f"metric {metric} compares class labels (loss softmax_xent); these targets are floats: "
                         "use psnr")


def check_peak(peak: float) -> None:
    if not (np.isfinite(peak) and peak > 0):
        raise BoldcError(f"the PSNR peak must be a finite number > 0, got {peak!r}")


def _classes_of(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The predicted class (argmax over axis 1) of logits [N, C, *spatial] for labels [N, *spatial]."""
    if pred.ndim < 2 or labels.shape != (pred.shape[0],) + pred.shape[2:]:
        raise BoldcError(f"labels of shape {list(labels.shape)} do not fit predictions {list(pred.shape)} (one "
                         "label per sample and position, the classes on axis 1)")
    return pred.argmax(axis=1)


def _kept(predicted: np.ndarray, labels: np.ndarray, ignore_index: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, label) of every position whose label is not ``ignore_index``."""
    if predicted.shape != labels.shape:
        raise BoldcError(f"labels of shape {list(labels.shape)} do not fit predicted classes of shape "
                         f"{list(predicted.shape)}")
    predicted, labels = predicted.reshape(-1).astype(np.int64), labels.reshape(-1).astype(np.int64)
    keep = labels != ignore_index if ignore_index is not None else np.ones(labels.shape, bool)
    if not keep.any():
        raise BoldcError(f"every label is the ignore index {ignore_index}: there is nothing to measure")
    return predicted[keep], labels[keep]


def accuracy(pred: np.ndarray, labels: np.ndarray, ignore_index: int | None = None) -> float:
    """The fraction of the labels (not ignored) that equal the argmax of the logits over axis 1."""
    predicted, labels = _kept(_classes_of(pred, labels), labels, ignore_index)
    return float((predicted == labels).mean())


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, classes: int,
                     ignore_index: int | None = None) -> np.ndarray:
    """counts[t, p]: the positions of label t (not ignored) whose predicted class is p, for
    predicted classes and labels of one shape and ``classes`` classes."""
    predicted, labels = _kept(predicted, labels, ignore_index)
    for what, values in (("label", labels), ("predicted class", predicted)):
        bad = values[(values < 0) | (values >= classes)]
        if bad.size:
            raise BoldcError(f"{what} {int(bad[0])} is out of range: there are {classes} classes (0 to {classes - 1})")
    return np.bincount(labels * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def mean_iou_of(counts: np.ndarray) -> float:
    """The mean IoU of a confusion matrix over the classes whose union is not empty."""
    tp = np.diag(counts).astype(np.float64)
    union = counts.sum(axis=0) + counts.sum(axis=1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean())


def mean_iou(predicted: np.ndarray, labels: np.ndarray, classes: int, ignore_index: int | None = None) -> float:
    """The mean IoU of predicted classes against labels (one confusion matrix of them all)."""
    return mean_iou_of(confusion_matrix(predicted, labels, classes, ignore_index))


def miou(pred: np.ndarray, labels: np.ndarray, ignore_index: int | None = None) -> float:
    """The mean IoU of logits [N, C, *spatial] (their argmax over axis 1) against labels."""
    return mean_iou(_classes_of(pred, labels), labels, pred.shape[1], ignore_index)


def psnr(pred: np.ndarray, target: np.ndarray, peak: float = DEFAULT_PSNR_PEAK) -> float:
    """The mean over the samples of 10·log10(peak² / MSE), the MSE over each sample's
    elements in float64 (inf for a sample equal to its target)."""
    check_peak(peak)
    if pred.shape != target.shape or pred.ndim == 0 or pred.shape[0] == 0:
        raise BoldcError(f"targets of shape {list(target.shape)} do not fit predictions {list(pred.shape)}")
    d = pred.astype(np.float64) - target.astype(np.float64)
    mse = (d * d).reshape(len(d), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return float((10.0 * np.log10(float(peak) ** 2 / mse)).mean())


def measure(metric: str, pred: np.ndarray, target: np.ndarray, *, ignore_index: int | None = None,
            peak: float = DEFAULT_PSNR_PEAK) -> float:
    """The value of ``metric`` on a whole evaluation set."""
    check_metric(metric, target.dtype.kind in "iu")
    if metric == "psnr":
        return psnr(pred, target, peak)
    return {"accuracy": accuracy, "miou": miou}[metric](pred, target, ignore_index)
