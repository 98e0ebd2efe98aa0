"""Image classifiers in plain torch, all with batch norm and a leading :class:`Normalize` layer.

Every model maps images in [0, 1] of shape (N, C, H, W) to logits (N, num_classes). Each has
``model.normalize`` (first child), ``model.forward_features(x) -> (N, D)`` (penultimate features) and
``model.fc`` (the final ``nn.Linear(D, num_classes)``), so ``forward(x) == fc(forward_features(x))``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from backdoorlab.errors import BackdoorlabError
from backdoorlab.models.registry import register_model


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` on (N, C, H, W); mean/std are persistent buffers of shape (C,)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean.shape != std.shape:
            raise BackdoorlabError(f"Normalize: mean has {mean.numel()} values, std has {std.numel()}")
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"mean={self.mean.tolist()}, std={self.std.tolist()}"


class FeatureDropout(nn.Module):
    """Dropout on the penultimate features (N, D), with rate ``p`` and inverted scaling.

    ``at_inference=True`` keeps it active in eval mode too (the triggerless backdoor's model: predictions are
    random). ``forced`` lists units dropped always (used to train and to measure the triggerless backdoor); it
    is a plain attribute, not saved in checkpoints.
    """

    def __init__(self, p: float, at_inference: bool = False):
        super().__init__()
        if not 0.0 < p < 1.0:
            raise BackdoorlabError(f"dropout rate must lie in (0, 1), got {p}")
        self.p, self.at_inference = float(p), bool(at_inference)
        self.forced: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        active = self.training or self.at_inference
        if not active and self.forced is None:
            return x
        keep = torch.ones_like(x)
        if active:
            keep = (torch.rand_like(x) >= self.p).to(x.dtype)
        if self.forced is not None:
            keep[:, self.forced] = 0.0
        return x * keep / (1 - self.p) if active else x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}, at_inference={self.at_inference}"


def init_weights(model: nn.Module) -> nn.Module:
    """Kaiming-normal (fan_out, ReLU) conv weights, BN weight 1 / bias 0, zero conv biases; Linear as PyTorch."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


class Classifier(nn.Module):
    """``normalize -> body -> flatten -> fc``: body maps (N, C, H, W) to (N, D, ...) flattened to (N, D)."""

    def __init__(self, normalize: Normalize, body: nn.Module, fc: nn.Linear):
        super().__init__()
        self.normalize = normalize
        self.body = body
        self.fc = fc
        self.dropout: nn.Module | None = None  # set by create_model(..., dropout=p)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [0, 1] -> penultimate features (N, D)."""
        return torch.flatten(self.body(self.normalize(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [0, 1] -> logits (N, num_classes)."""
        features = self.forward_features(x)
        if self.dropout is not None:
            features = self.dropout(features)
        return self.fc(features)


# --------------------------------------------------------------------------------------------------- small-cnn


@register_model("small-cnn")
def small_cnn(num_classes, in_channels, input_size, mean, std) -> Classifier:
    """Two conv-BN-ReLU-maxpool blocks (32, 64 channels), then Linear(64*H/4*W/4 -> 128)-ReLU, Linear(-> classes).

    Sizes: (N, C, H, W) -> (N, 32, H/2, W/2) -> (N, 64, H/4, W/4) -> (N, 128) -> (N, num_classes); H, W >= 4.
    """
    h, w = input_size[0] // 4, input_size[1] // 4
    if h < 1 or w < 1:
        raise BackdoorlabError(f"small-cnn needs input_size of at least 4x4, got {tuple(input_size)}")
    body = nn.Sequential(
        _conv_bn_relu(in_channels, 32), nn.MaxPool2d(2),
        _conv_bn_relu(32, 64), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * h * w, 128), nn.ReLU(),
    )  # fmt: skip
    return init_weights(Classifier(Normalize(mean, std), body, nn.Linear(128, num_classes)))


# ---------------------------------------------------------------------------------------------------- resnet20


class BasicBlock(nn.Module):
    """Post-activation basic block: relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)).

    (N, cin, H, W) -> (N, cout, H/s, W/s); the shortcut is the identity, or 1x1 conv + BN when the shape changes.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


@register_model("resnet20")
def resnet20(num_classes, in_channels, input_size, mean, std) -> Classifier:
    """CIFAR ResNet-20 (He et al. 2016): conv16, 3 stages x 3 basic blocks (16/32/64, strides 1/2/2), GAP, fc.

    Sizes: (N, C, H, W) -> (N, 64, H/4, W/4) -> (N, 64) -> (N, num_classes). About 0.27M parameters.
    """
    layers, cin = [_conv_bn_relu(in_channels, 16)], 16
    for cout, stride in [(16, 1), (32, 2), (64, 2)]:
        for i in range(3):
            layers.append(BasicBlock(cin, cout, stride if i == 0 else 1))
            cin = cout
    body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1))
    return init_weights(Classifier(Normalize(mean, std), body, nn.Linear(64, num_classes)))


# --------------------------------------------------------------------------------------------- preact-resnet18


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016b): conv(relu(bn(conv(relu(bn(x)))))) + shortcut.

    (N, cin, H, W) -> (N, cout, H/s, W/s); the shortcut is the identity, or a 1x1 conv of relu(bn(x)).
    """

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


@register_model("preact-resnet18")
def preact_resnet18(num_classes, in_channels, input_size, mean, std) -> Classifier:
    """Pre-activation ResNet-18: conv64, [2, 2, 2, 2] blocks (64/128/256/512, strides 1/2/2/2), BN-ReLU, GAP, fc.

    Sizes: (N, C, 32, 32) -> (N, 512, 4, 4) -> (N, 512) -> (N, num_classes). About 11.2M parameters.
    """
    layers, cin = [nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)], 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        for i in range(2):
            layers.append(PreActBlock(cin, cout, stride if i == 0 else 1))
            cin = cout
    body = nn.Sequential(*layers, nn.BatchNorm2d(512), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    return init_weights(Classifier(Normalize(mean, std), body, nn.Linear(512, num_classes)))


# ---------------------------------------------------------------------------------------------------- vgg16-bn

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


@register_model("vgg16-bn")
def vgg16_bn(num_classes, in_channels, input_size, mean, std) -> Classifier:
    """VGG-16 with BN: 13 conv3x3-BN-ReLU layers, 5 max-pools, GAP, Linear(512 -> num_classes).

    Sizes: (N, C, 32, 32) -> (N, 512, 1, 1) -> (N, 512) -> (N, num_classes). A max-pool is skipped once the
    feature map is smaller than 2x2 (e.g. 28x28 input: 14, 7, 3, 1, skip), and a global average pool makes
    the classifier independent of the input size. About 14.7M parameters.
    """
    layers, cin, (h, w) = [], in_channels, input_size
    for v in VGG16_CFG:
        if v == "M":
            if min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
        else:
            layers.append(_conv_bn_relu(cin, v))
            cin = v
    body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1))
    return init_weights(Classifier(Normalize(mean, std), body, nn.Linear(512, num_classes)))
