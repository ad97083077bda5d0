"""EquiMod (Devillers & Lefort 2023) on SimCLR, equivariant baseline: an invariant and an equivariant contrastive loss.

    loss = NT-Xent(g_inv(z₁), g_inv(z₂)) + λ_equi·NT-Xent(h(e(a) ⊕ g_equi(z₁)), g_equi(z₂))

Two projectors of the same shape (paper: 1024-1024-128, Linear-BN-ReLU, final non-affine BN), the linear 128-d action
projector e (``model.act_dim``) and a one-layer predictor h (Linear + non-affine BN), as the official
``SimCLREquiMod``. Paper preset: τ = 0.1 for both losses and equal weights; the official CLI default temperature is
0.5. Views 0 and 1 and ``actions[:, 0]`` are used.

    python run.py train --method equimod

>>> import torch
>>> m = EquiMod(action_dim=4, act_dim=8, depth=10, width=8, stem="cifar", proj_dims=[32, 16])
>>> out = m(torch.randint(0, 256, (4, 2, 3, 16, 16), dtype=torch.uint8), torch.randn(4, 1, 4))
>>> out["loss"].ndim
0
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
    proj_dims: list[int] = opt([1024, 1024, 128], "widths of each projector (paper: 1024-1024-128)", ge=1)
    temperature: float = opt(0.1, "NT-Xent temperature of both losses (paper: 0.1; official CLI: 0.5)", gt=0.0)
    equi_weight: float = opt(1.0, "weight of the equivariant loss (paper: equal weights)", ge=0.0)


PRESETS = {"cpu": {"proj_dims": [256, 256, 32]}, "smoke": {"proj_dims": [64, 64, 16]}}


class EquiMod(Method):
    Options, PRESETS = Options, PRESETS

    def __init__(self, *, action_dim: int, act_dim: int = 128, proj_dims: Sequence[int] = (1024, 1024, 128),
                 temperature: float = 0.1, equi_weight: float = 1.0, depth: int = 18, width: int = 64,
                 stem: str = "imagenet", mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.25, 0.25, 0.25)):
        super().__init__(depth=depth, width=width, stem=stem, mean=mean, std=std)
        self.temperature, self.equi_weight = temperature, equi_weight
        self.projector_inv = projector(self.dim, proj_dims)
        self.projector_equi = projector(self.dim, proj_dims)
        self.action_embed = action_projector(action_dim, act_dim)
        self.predictor = projector(act_dim + proj_dims[-1], [proj_dims[-1]])

    def forward(self, views: torch.Tensor, actions: torch.Tensor) -> Output:
        """views uint8 [B, T≥2, …] (0, 1), actions [B, T-1, A] (``actions[:, 0]``) → loss, z [B, 2, D]."""
        self.check_views(views, actions, 2, "EquiMod")
        z = self.encode_views(views[:, :2])
        y_inv, y_equi = view_by_view(self.projector_inv, z), view_by_view(self.projector_equi, z)
        e = self.action_embed(actions[:, 0].to(z.device, torch.float32))
        y_hat = self.predictor(torch.cat([e, y_equi[:, 0]], dim=-1))
        loss = (nt_xent(y_inv[:, 0], y_inv[:, 1], temperature=self.temperature)
                + self.equi_weight * nt_xent(y_hat, y_equi[:, 1], temperature=self.temperature))
        return Output(loss=loss, z=z)
