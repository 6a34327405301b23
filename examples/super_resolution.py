"""x2 super-resolution with a Boolean EDSR-style network, from PyTorch to trained C.

    python examples/super_resolution.py [--seeds 0] [--train 2000] [--test 400] [--size 32]
                                        [--float-epochs 10] [--epochs 10] [--engine c|torch] [--quick]

Data: ``dense_data.textures`` (seeded, generated here): high-resolution colour images of
gratings, sharp-edged shapes and noise; the low-resolution input is the mean of each 2x2 block.
Model: ``torch_models.EDSRSmall`` — a 3x3 head conv, residual blocks (conv-BN-ReLU-conv-BN + the
block input), a 3x3 conv to 12 channels and a pixel shuffle (DepthToSpace), added to the
bilinear upsampling of the input.

Steps, per seed: train the float model in PyTorch (L1 loss, Adam, cosine) and report its test
PSNR next to bicubic upsampling's; export it to ONNX and convert it (``boldc.convert``: the
residual blocks' convs Boolean, the head and tail convs float, BatchNorm kept and trained on
batch statistics unless --no-keep-bn; the pixel shuffle and the upsampling stay float);
fine-tune the Boolean model
(L1) through the generated C (or the torch engine) and report its test PSNR after every epoch.
``--quick`` runs a tiny version (the tests use it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from dense_data import downsample, textures  # noqa: E402
from dense_train import fine_tune, joined, parse, parser, predict_float, run_seeds, to_boolean, train_float  # noqa: E402
from torch_models import EDSRSmall  # noqa: E402

from boldc.metrics import psnr  # noqa: E402


def bicubic(lr: np.ndarray, scale: int = 2) -> np.ndarray:
    """PyTorch's bicubic upsampling (half-pixel centres), the classical baseline."""
    with torch.no_grad():
        return torch.nn.functional.interpolate(torch.from_numpy(lr), scale_factor=scale, mode="bicubic",
                                               align_corners=False).numpy()


def run(seed: int, args) -> tuple[float, float, float]:
    """(bicubic PSNR, float PSNR, Boolean PSNR) of one seed, in dB."""
    rng = np.random.default_rng(seed)
    hr_tr, hr_te = textures(args.train, rng, args.size), textures(args.test, rng, args.size)
    lr_tr, lr_te = downsample(hr_tr), downsample(hr_te)
    base = psnr(bicubic(lr_te), hr_te)
    torch.manual_seed(seed)
    model = train_float(EDSRSmall(2, args.width, args.blocks), lr_tr, hr_tr, torch.nn.functional.l1_loss,
                        args.float_epochs, args.batch, 1e-3, seed, args.threads)
    float_psnr = psnr(predict_float(model, lr_te), hr_te)
    print(f"  bicubic: test PSNR {base:.2f} dB; float model: {float_psnr:.2f} dB")
    module = to_boolean(model, (1, 3, args.size // 2, args.size // 2), keep_bn=args.keep_bn)
    curve, _ = fine_tune(module, (lr_tr, hr_tr, lr_te, hr_te), args.engine, args.epochs, args.batch, seed,
                         args.threads, "psnr", eta=args.eta, lr=args.lr, rescale=args.rescale, loss="l1")
    return base, float_psnr, curve[-1]


def main() -> None:
    ap = parser(__doc__, lr=3e-3)
    ap.add_argument("--blocks", type=int, default=4, help="residual blocks")
    args = parse(ap, blocks=1)
    run_seeds(args, run, lambda b, f, q: f"bicubic {b:.2f} dB, float {f:.2f} dB, Boolean {q:.2f} dB",
              lambda b, f, q: f"super-resolution x2, {args.engine} engine, seeds {args.seeds}: PSNR bicubic "
                              f"{b.mean():.2f} dB, float {f.mean():.2f} dB ({joined(f, 2)}), "
                              f"Boolean {q.mean():.2f} dB ({joined(q, 2)})")


if __name__ == "__main__":
    main()
