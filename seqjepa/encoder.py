"""The encoder f: a plain ResNet (BasicBlock) without its classification head (paper §2.2).

Written by hand so the project needs no torchvision, but with torchvision's module names (``conv1``, ``bn1``,
``layer1.0.downsample.0``, ...) and initialisation, so a torchvision ``resnet18`` state dict (minus ``fc``) loads
into ``ResNet(depth=18)`` unchanged and the official checkpoints' ``encoder.*`` keys map one to one.

>>> import torch
>>> f = ResNet(depth=10, width=8, stem="cifar")
>>> f(torch.randn(2, 3, 32, 32)).shape
torch.Size([2, 64])
>>> sum(p.numel() for p in ResNet(depth=18).parameters())  # torchvision resnet18 without fc
11176512
"""

from __future__ import annotations

from typing import Literal

import torch
from einops import rearrange
from torch import nn

# Blocks per stage for each supported depth.
STAGES: dict[int, tuple[int, int, int, int]] = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a shortcut; a 1×1 conv + BN shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, *, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch alone (zero at init with ``zero_init_residual``)."""
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(self.residual(x) + shortcut)


class ResNet(nn.Module):
    """ResNet-{10,18,34} trunk → global average pool → ``8·width`` features (no fc).

    stem="imagenet": 7×7/2 conv + BN + ReLU + 3×3/2 max-pool (torchvision); stem="cifar": 3×3/1 conv + BN + ReLU and
    no max-pool, the variant the paper uses for 32×32 inputs (CIFAR-100, STL-10 glimpses).
    ``zero_init_residual`` zeroes the last BN gamma of every block, so each block starts as an identity map
    (as torchvision's ``resnet18(zero_init_residual=True)`` in the official code).
    """

    def __init__(self, *, depth: Literal[10, 18, 34] = 18, width: int = 64,
                 stem: Literal["imagenet", "cifar"] = "imagenet", zero_init_residual: bool = True):
        super().__init__()
        if depth not in STAGES:
            raise ValueError(f"depth: got {depth!r}; allowed: one of {', '.join(map(str, STAGES))}")
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem: got {stem!r}; allowed: 'imagenet' or 'cifar'")
        self.depth, self.width, self.stem = depth, width, stem
        self.out_dim = 8 * width
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = conv3x3(3, width)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        cin = width
        for i, n in enumerate(STAGES[depth]):
            cout = width * 2 ** i
            blocks = [BasicBlock(cin if j == 0 else cout, cout, stride=2 if (i > 0 and j == 0) else 1)
                      for j in range(n)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            cin = cout
        self.avgpool = nn.AdaptiveAvgPool2d(1)

        # torchvision's initialisation, so results are comparable with the official code.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def blocks(self) -> list[BasicBlock]:
        return [m for m in self.modules() if isinstance(m, BasicBlock)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] float → [N, 8·width]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def prepare_views(views: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """uint8 views [B, T, 3, H, W] → normalised float [B·T, 3, H, W] on ``mean``'s device, the encoder's input."""
    if views.dtype != torch.uint8:
        raise TypeError(f"views must be uint8 [B, T, 3, H, W] (0..255); got {views.dtype}")
    # Move while still uint8: a quarter of the bytes of float32.
    x = rearrange(views, "b t c h w -> (b t) c h w").to(mean.device, non_blocking=True)
    x = x.float().div_(255.0).sub_(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
