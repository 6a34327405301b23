"""Sequence classification with a Boolean BERT-style encoder, from PyTorch to trained C.

    python examples/text_encoder.py [--seeds 0 1 2 3 4] [--train 4000] [--test 1000] [--length 32]
                                    [--float-epochs 5] [--epochs 5] [--engine c|torch]
                                    [--binarize-activations] [--quick]

Data: ``text_data.ordered_pair`` (seeded, generated here): [CLS] then 16 to 31 random tokens
and padding; the label says whether a marker token A comes before a marker token B somewhere
in the sequence, which no single position decides (it needs attention between two positions).
Model: ``torch_models.TextEncoder`` — token and position embeddings, 2 post-LayerNorm encoder
blocks (d_model 64, 4 heads, FFN 128 with GELU, padding masked out of attention), a linear
classifier on the [CLS] token.

Steps, per seed: train the float model in PyTorch (Adam, cosine), report its test accuracy;
export it to ONNX (dynamic batch) and convert it (``boldc.convert``: the Q, K, V, output and
feed-forward projections get Boolean weights — mixed neurons ``mlinear`` on their real inputs,
or fully Boolean ``blinear`` behind thresholds with ``--binarize-activations``; embeddings,
attention scores, softmax, LayerNorm and the classifier stay float); fine-tune the Boolean
model with cross-entropy through the generated C (or the torch engine) and report its test
accuracy after every epoch. ``--quick`` runs a tiny version (the tests use it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from dense_train import fine_tune, joined, parser, predict_float, run_seeds, train_float  # noqa: E402
from text_data import ordered_pair  # noqa: E402
from torch_models import TextEncoder  # noqa: E402

import boldc  # noqa: E402

VOCAB = 16


def run(seed: int, args) -> tuple[float, float]:
    """(float accuracy, Boolean accuracy) of one seed."""
    rng = np.random.default_rng(seed)
    x_tr, y_tr = ordered_pair(args.train, rng, args.length, VOCAB)
    x_te, y_te = ordered_pair(args.test, rng, args.length, VOCAB)
    torch.manual_seed(seed)
    model = train_float(TextEncoder(VOCAB, args.length, width=args.width, ff=2 * args.width), x_tr, y_tr,
                        torch.nn.functional.cross_entropy, args.float_epochs, args.batch, 2e-3, seed, args.threads)
    float_acc = float((predict_float(model, x_te).argmax(1) == y_te).mean())
    print(f"  float model: test accuracy {float_acc:.4f}")
    module = boldc.convert(model, example_input=torch.from_numpy(x_tr[:2]),
                           binarize_activations=args.binarize_activations)
    data = (x_tr.astype(np.int32), y_tr, x_te.astype(np.int32), y_te)
    converted = float((boldc.interpret(module, [data[2]]).argmax(1) == y_te).mean())
    print(f"  converted, before fine-tuning: test accuracy {converted:.4f}")
    curve, _ = fine_tune(module, data, args.engine, args.epochs, args.batch, seed, args.threads, "accuracy",
                         eta=args.eta, lr=args.lr, loss="softmax_xent")
    return float_acc, curve[-1]


def main() -> None:
    ap = parser(__doc__, lr=1e-3)
    ap.set_defaults(train=4000, test=1000, width=64, float_epochs=5, epochs=5, eta=3.0)
    ap.add_argument("--length", type=int, default=32, help="tokens per sequence ([CLS] included)")
    ap.add_argument("--binarize-activations", action="store_true",
                    help="thresholds before every projection, so that they become fully Boolean (blinear)")
    args = ap.parse_args()
    if args.quick:
        args.train, args.test, args.length, args.width, args.float_epochs, args.epochs = 64, 32, 8, 16, 1, 1
    run_seeds(args, run, lambda f, b: f"float accuracy {f:.4f}, Boolean accuracy {b:.4f}",
              lambda f, b: f"text encoder, {args.engine} engine, seeds {args.seeds}: float accuracy {joined(f)} "
                           f"(mean {f.mean():.3f}); Boolean accuracy {joined(b)} (mean {b.mean():.3f})")


if __name__ == "__main__":
    main()
