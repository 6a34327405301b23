"""Semantic segmentation with a Boolean DeepLab-style network (Boolean ASPP), from PyTorch to trained C.

    python examples/segmentation.py [--seeds 0] [--train 2000] [--test 400] [--size 32]
                                    [--float-epochs 10] [--epochs 10] [--engine c|torch] [--quick]

Data: ``dense_data.scenes`` (seeded, generated here): colour images with discs, squares,
triangles and rings on textured noise; 5 classes per pixel (background + 4 shapes).
Model: ``torch_models.DeepLabSmall`` — a 3x3 conv backbone to 1/4 resolution, an ASPP (a 1x1
branch, three dilated 3x3 branches, a global-average-pooling branch upsampled back
bilinearly, concatenated and projected), a 1x1 classifier, bilinear upsampling of the logits.

Steps, per seed: train the float model in PyTorch (Adam, cosine), report its test mIoU; export
it to ONNX and convert it (``boldc.convert``: every conv Boolean but the first and the
classifier, thresholds for the ReLUs, BatchNorm kept and trained on batch statistics unless
--no-keep-bn; the upsampling stays float); fine-tune
the Boolean model with per-pixel cross-entropy through the generated C (or the torch engine)
and report its test mIoU after every epoch. ``--quick`` runs a tiny version (the tests use it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from dense_data import CLASSES, scenes  # noqa: E402
from dense_train import fine_tune, joined, parse, parser, predict_float, run_seeds, to_boolean, train_float  # noqa: E402
from torch_models import DeepLabSmall  # noqa: E402

from boldc.metrics import mean_iou  # noqa: E402


def run(seed: int, args) -> tuple[float, float]:
    """(float mIoU, Boolean mIoU) of one seed."""
    rng = np.random.default_rng(seed)
    x_tr, y_tr = scenes(args.train, rng, args.size)
    x_te, y_te = scenes(args.test, rng, args.size)
    torch.manual_seed(seed)
    model = train_float(DeepLabSmall(len(CLASSES), args.width), x_tr, y_tr.astype(np.int64),
                        torch.nn.functional.cross_entropy, args.float_epochs, args.batch, 2e-3, seed, args.threads)
    float_miou = mean_iou(predict_float(model, x_te).argmax(1), y_te, len(CLASSES))
    print(f"  float model: test mIoU {float_miou:.4f}")
    module = to_boolean(model, (1, 3, args.size, args.size), keep_bn=args.keep_bn)
    curve, _ = fine_tune(module, (x_tr, y_tr, x_te, y_te), args.engine, args.epochs, args.batch, seed, args.threads,
                         "miou", eta=args.eta, lr=args.lr, rescale=args.rescale, loss="softmax_xent")
    return float_miou, curve[-1]


def main() -> None:
    ap = parser(__doc__, lr=1e-3)
    args = parse(ap)
    run_seeds(args, run, lambda f, b: f"float mIoU {f:.4f}, Boolean mIoU {b:.4f}",
              lambda f, b: f"segmentation, {args.engine} engine, seeds {args.seeds}: float mIoU {joined(f)} "
                           f"(mean {f.mean():.3f}); Boolean mIoU {joined(b)} (mean {b.mean():.3f})")


if __name__ == "__main__":
    main()
