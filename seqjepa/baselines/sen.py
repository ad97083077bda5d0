"""SEN (Park et al. 2022), equivariant baseline: predict view 1's projection from view 0's and the action.

    ŷ₂ = h(e(a) ⊕ g(f(x₁)))          loss = NT-Xent(ŷ₂, g(f(x₂)))   (no invariance term)

e is the linear action projector (``model.act_dim``, 128 in the paper) with a non-affine BatchNorm; h is one Linear
layer + non-affine BatchNorm, as in the official ``SEN_Contrastive``. Paper preset: projector 2048-2048-2048,
temperature 0.5. Views 0 and 1 and ``actions[:, 0]`` (view 0 → view 1) are used.

    python run.py train --method sen

>>> import torch
>>> m = SEN(action_dim=4, act_dim=8, depth=10, width=8, stem="cifar", proj_dims=[32, 32])
>>> out = m(torch.randint(0, 256, (4, 2, 3, 16, 16), dtype=torch.uint8), torch.randn(4, 1, 4))
>>> out["z"].shape
torch.Size([4, 2, 64])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from seqjepa.options import opt

from seqjepa.method import Method, Output

from .common import action_projector, nt_xent, projector, view_by_view


@dataclass
class Options:
    proj_dims: list[int] = opt([2048, 2048, 2048], "equivariant projector widths (paper: 2048-2048-2048)", ge=1)
    temperature: float = opt(0.5, "NT-Xent temperature (paper: 0.5)", gt=0.0)


PRESETS = {"cpu": {"proj_dims": [512, 512, 512]}, "smoke": {"proj_dims": [64, 64, 64]}}


class SEN(Method):
    Options, PRESETS = Options, PRESETS

    def __init__(self, *, action_dim: int, act_dim: int = 128, proj_dims: Sequence[int] = (2048, 2048, 2048),
                 temperature: float = 0.5, depth: int = 18, width: int = 64, stem: str = "imagenet",
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.25, 0.25, 0.25)):
        super().__init__(depth=depth, width=width, stem=stem, mean=mean, std=std)
        self.temperature = temperature
        self.projector = projector(self.dim, proj_dims)
        self.action_embed = action_projector(action_dim, act_dim)
        self.predictor = projector(act_dim + proj_dims[-1], [proj_dims[-1]])

    def forward(self, views: torch.Tensor, actions: torch.Tensor) -> Output:
        """views uint8 [B, T≥2, …] (0, 1), actions [B, T-1, A] (``actions[:, 0]``) → loss, z [B, 2, D]."""
        self.check_views(views, actions, 2, "SEN")
        z = self.encode_views(views[:, :2])
        y = view_by_view(self.projector, z)
        e = self.action_embed(actions[:, 0].to(y.device, torch.float32))
        y_hat = self.predictor(torch.cat([e, y[:, 0]], dim=-1))
        return Output(loss=nt_xent(y_hat, y[:, 1], temperature=self.temperature), z=z)
