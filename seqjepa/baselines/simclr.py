"""SimCLR (Chen et al. 2020), invariant baseline: NT-Xent between the projections of two views.

Paper preset (seq-JEPA §3.1 / official ``SimCLR``): projector 2048-2048-2048 (Linear-BN-ReLU ×2, Linear-BN without
affine), temperature 0.5. The ``cpu``/``smoke`` presets shrink the projector with the encoder (×¼ / ×⅛ width).
Views 0 and 1 of each sequence are the positive pair; actions are not used.

    python run.py train --method simclr
    python run.py train --method simclr --set model.method_options.temperature=0.2

>>> import torch
>>> m = SimCLR(depth=10, width=8, stem="cifar", proj_dims=[32, 32])
>>> out = m(torch.randint(0, 256, (4, 2, 3, 16, 16), dtype=torch.uint8), torch.zeros(4, 1, 4))
>>> out["z"].shape
torch.Size([4, 2, 64])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from seqjepa.options import opt

from seqjepa.method import Method, Output

from .common import nt_xent, projector, view_by_view


@dataclass
class Options:
    proj_dims: list[int] = opt([2048, 2048, 2048], "projector widths (paper: 2048-2048-2048)", ge=1)
    temperature: float = opt(0.5, "NT-Xent temperature (paper: 0.5)", gt=0.0)


PRESETS = {"cpu": {"proj_dims": [512, 512, 512]}, "smoke": {"proj_dims": [64, 64, 64]}}


class SimCLR(Method):
    Options, PRESETS = Options, PRESETS

    def __init__(self, *, proj_dims: Sequence[int] = (2048, 2048, 2048), temperature: float = 0.5,
                 depth: int = 18, width: int = 64, stem: str = "imagenet",
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.25, 0.25, 0.25)):
        super().__init__(depth=depth, width=width, stem=stem, mean=mean, std=std)
        self.temperature = temperature
        self.projector = projector(self.dim, proj_dims)

    def forward(self, views: torch.Tensor, actions: torch.Tensor) -> Output:
        """views uint8 [B, T≥2, 3, H, W] (0 and 1 are used), actions [B, T-1, A] (unused) → loss, z [B, 2, D]."""
        self.check_views(views, actions, 2, "SimCLR")
        z = self.encode_views(views[:, :2])
        y = view_by_view(self.projector, z)
        return Output(loss=nt_xent(y[:, 0], y[:, 1], temperature=self.temperature), z=z)
