"""Export VGG-Small (3x32x32) or ResNet-18 (3x224x224) to ONNX, untrained (no dataset ships).

    python examples/export_large.py vgg_small vgg_small.onnx
    python examples/export_large.py resnet18 resnet18.onnx
    boldc convert resnet18.onnx -o resnet18.bir

The weights are PyTorch's initialization (seed 0) and the BatchNorm statistics are
drawn at random, so the float model computes something non-trivial to compare
against. Needs torch (the test extra).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_export import export_onnx  # noqa: E402
from torch_models import ResNet18, VGGSmall  # noqa: E402

MODELS = {"vgg_small": (VGGSmall, (1, 3, 32, 32)), "resnet18": (ResNet18, (1, 3, 224, 224))}


def build(name: str, seed: int = 0) -> tuple[torch.nn.Module, tuple[int, ...]]:
    """The model with seeded weights and random BatchNorm statistics, and its input shape."""
    cls, shape = MODELS[name]
    torch.manual_seed(seed)
    model = cls()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1.0, 0.2)
                m.bias.normal_(0.0, 0.1)
    return model.eval(), shape


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=sorted(MODELS))
    ap.add_argument("output", type=Path)
    args = ap.parse_args()
    model, shape = build(args.model)
    export_onnx(model, shape, args.output)
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
