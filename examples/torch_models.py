"""Float model definitions (PyTorch) for the examples: digits MLP and CNN, VGG-Small, ResNet-18,
the dense-prediction models and a BERT-style text encoder.

Written here rather than taken from torchvision (not a dependency of boldc). Every
model is ordinary float PyTorch; ``boldc convert`` turns its ONNX export Boolean.
"""

from __future__ import annotations

import torch
from torch import nn


class DigitsMLP(nn.Module):
    """64-128-128-128-10 for scikit-learn's 8x8 digits (input: the 64 pixel values, 0..16)."""

    def __init__(self, hidden: int = 128):
        super().__init__()
        layers, width = [], 64
        for _ in range(3):
            layers += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU()]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        return self.head(self.body(x))


class DigitsCNN(nn.Module):
    """A small CNN for 1x8x8 digits: 3 conv layers (32-64-64) with BN, ReLU, max-pool, then a linear layer."""

    def __init__(self):
        super().__init__()

        def block(cin, cout, pool):
            layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            return layers + ([nn.MaxPool2d(2)] if pool else [])

        self.features = nn.Sequential(*block(1, 32, False), *block(32, 64, True), *block(64, 64, True))
        self.head = nn.Linear(64 * 2 * 2, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


class VGGSmall(nn.Module):
    """VGG-Small for 3x32x32 inputs: 6 conv layers 128-128-256-256-512-512 (3x3, BN, ReLU,
    max-pool after every second), then fully connected layers 8192-1024-10."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        layers, cin = [], 3
        for i, cout in enumerate((128, 128, 256, 256, 512, 512)):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            if i % 2 == 1:
                layers.append(nn.MaxPool2d(2))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(512 * 4 * 4, 1024, bias=False), nn.BatchNorm1d(1024), nn.ReLU(),
                                        nn.Linear(1024, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN, plus the shortcut (1x1 conv + BN when the shape changes), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


class ResNet18(nn.Module):
    """ResNet-18 for 3x224x224 inputs (the ImageNet layout: 7x7 stem, max-pool, 4 stages of 2 blocks)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.layers(x))
        return self.fc(torch.flatten(x, 1))


def _conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1, kernel: int = 3) -> list:
    pad = dilation * (kernel // 2)
    return [nn.Conv2d(cin, cout, kernel, stride, pad, dilation=dilation, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class ASPP(nn.Module):
    """DeepLabv3's atrous spatial pyramid pooling: a 1x1 branch, three dilated 3x3 branches,
    a global-average-pooling branch (1x1 conv on the pooled features, upsampled back
    bilinearly), concatenated and projected by a 1x1 conv."""

    def __init__(self, cin: int, cout: int, dilations=(2, 4, 6)):
        super().__init__()
        self.branches = nn.ModuleList([nn.Sequential(*_conv_bn_relu(cin, cout, kernel=1))] +
                                      [nn.Sequential(*_conv_bn_relu(cin, cout, dilation=d)) for d in dilations])
        self.pooled = nn.Sequential(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(cin, cout, kernel=1))
        self.project = nn.Sequential(*_conv_bn_relu(cout * (len(dilations) + 2), cout, kernel=1))

    def forward(self, x):
        outs = [b(x) for b in self.branches]
        outs.append(nn.functional.interpolate(self.pooled(x), size=x.shape[-2:], mode="bilinear",
                                              align_corners=False))
        return self.project(torch.cat(outs, 1))


class DeepLabSmall(nn.Module):
    """A DeepLab-style segmenter for small images: a backbone of 3x3 conv-BN-ReLU layers down to
    1/4 resolution, an ASPP, a 1x1 classifier, and bilinear upsampling of the logits to the input
    size (logits [N, classes, H, W])."""

    def __init__(self, classes: int = 5, width: int = 32):
        super().__init__()
        w = width
        self.backbone = nn.Sequential(*_conv_bn_relu(3, w), *_conv_bn_relu(w, w, stride=2),
                                      *_conv_bn_relu(w, 2 * w), *_conv_bn_relu(2 * w, 2 * w, stride=2),
                                      *_conv_bn_relu(2 * w, 2 * w))
        self.aspp = ASPP(2 * w, w)
        self.classifier = nn.Conv2d(w, classes, 1)

    def forward(self, x):
        logits = self.classifier(self.aspp(self.backbone(x)))
        return nn.functional.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class ResidualBlock(nn.Module):
    """EDSR's residual block (with BatchNorm, which the Boolean lowering removes): x + conv-BN-ReLU-conv-BN(x)."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn_relu(width, width), nn.Conv2d(width, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width))

    def forward(self, x):
        return x + self.body(x)


class EDSRSmall(nn.Module):
    """An EDSR-style x``scale`` super-resolution network: a 3x3 head conv, residual blocks, a
    3x3 conv to 3·scale² channels and a pixel shuffle, added to the bilinear upsampling of the
    input (the network learns the missing detail)."""

    def __init__(self, scale: int = 2, width: int = 32, blocks: int = 4):
        super().__init__()
        self.scale = scale
        self.head = nn.Conv2d(3, width, 3, 1, 1)
        self.body = nn.Sequential(*[ResidualBlock(width) for _ in range(blocks)])
        self.tail = nn.Sequential(nn.Conv2d(width, 3 * scale * scale, 3, 1, 1), nn.PixelShuffle(scale))

    def forward(self, x):
        h = self.head(x)
        up = nn.functional.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.tail(h + self.body(h)) + up


class SelfAttention(nn.Module):
    """Multi-head self-attention written batch-first, so that its ONNX export keeps the batch N
    as the leading dimension of every tensor: q, k, v [N, H, L, d/H]; scores q·kᵀ/√(d/H) with
    the padded keys set to -1e4; softmax on the last axis; the heads joined and projected."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads, self.head_width = heads, width // heads
        self.q, self.k, self.v, self.out = (nn.Linear(width, width) for _ in range(4))

    def split(self, x):
        return x.reshape(x.shape[0], x.shape[1], self.heads, self.head_width).transpose(1, 2)

    def forward(self, x, pad):
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) / self.head_width ** 0.5
        scores = scores.masked_fill(pad[:, None, None, :], -1e4)
        mixed = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2)
        return self.out(mixed.reshape(x.shape[0], x.shape[1], -1))


class EncoderBlock(nn.Module):
    """A post-LayerNorm (BERT) encoder layer: x = LN(x + attention(x)); x = LN(x + FFN(x)),
    FFN = Linear(d, ff) · GELU · Linear(ff, d)."""

    def __init__(self, width: int, heads: int, ff: int):
        super().__init__()
        self.attn = SelfAttention(width, heads)
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, ff), nn.GELU(), nn.Linear(ff, width))

    def forward(self, x, pad):
        x = self.norm1(x + self.attn(x, pad))
        return self.norm2(x + self.ff(x))


class TextEncoder(nn.Module):
    """A small BERT-style encoder for sequence classification: token and learned position
    embeddings, ``layers`` encoder blocks, a linear classifier on the first ([CLS]) token.
    Input: int64 token ids [N, length]; token ``pad`` marks padding (masked out of attention)."""

    def __init__(self, vocab: int, length: int, classes: int = 2, width: int = 64, heads: int = 4, ff: int = 128,
                 layers: int = 2, pad: int = 0):
        super().__init__()
        self.pad = pad
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Parameter(torch.randn(1, length, width) * 0.02)
        self.blocks = nn.ModuleList(EncoderBlock(width, heads, ff) for _ in range(layers))
        self.head = nn.Linear(width, classes)

    def forward(self, ids):
        pad = ids == self.pad
        x = self.tokens(ids) + self.positions
        for block in self.blocks:
            x = block(x, pad)
        return self.head(x[:, 0])
