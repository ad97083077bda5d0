"""SIE (Garrido et al. 2023), equivariant baseline: VICReg on split invariant/equivariant parts + hypernetwork.

The encoder output z (D) is split in halves: z_inv = z[:D/2], z_equi = z[D/2:], each with its own projector
(paper: 1024-1024-1024; hidden layers with bias, no final BN). The predictor is SIE's hypernetwork: a bias-free
linear map from the *raw* action a (``action_dim``) to a P×P matrix W(a), applied to view 0's equivariant projection:

    ŷ₂ = W(a)·g_equi(z₁_equi)
    loss = λ_inv·MSE(g_inv(z₁), g_inv(z₂)) + λ_equi·MSE(ŷ₂, g_equi(z₂_equi))
         + λ_V·[(v(y₁) + v(y₂))/2 + v(ŷ₂)/2] + λ_C·(c(y₁) + c(y₂))        y_i = g_inv(z_i) ⊕ g_equi(z_i)

with VICReg's v and c (:mod:`.vicreg`). Paper preset: λ_inv = λ_V = 10, λ_equi = 4.5, λ_C = 1 (the official CLI
defaults are 25/25/1 with λ_equi = λ_inv). Views 0 and 1 and ``actions[:, 0]`` are used.

    python run.py train --method sie

>>> import torch
>>> m = SIE(action_dim=4, depth=10, width=8, stem="cifar", proj_dims=[16, 16])
>>> out = m(torch.randint(0, 256, (4, 2, 3, 16, 16), dtype=torch.uint8), torch.randn(4, 1, 4))
>>> m.predictor(torch.randn(4, 16), torch.randn(4, 4)).shape
torch.Size([4, 16])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import nn

from seqjepa.options import opt

from seqjepa.method import Method, Output

from .common import projector, view_by_view
from .vicreg import covariance_term, variance_term


class HyperPredictor(nn.Module):
    """W(a) = reshape(L a) with L a bias-free Linear(action_dim → P·P); ŷ = W(a) y (no bias, no activation)."""

    def __init__(self, *, action_dim: int, dim: int):
        super().__init__()
        self.dim = dim
        self.hypernet = nn.Linear(action_dim, dim * dim, bias=False)

    def forward(self, y: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """y [B, P], a [B, A] → W(a)·y [B, P]."""
        w = rearrange(self.hypernet(a), "b (o i) -> b o i", o=self.dim)
        return einsum(w, y, "b o i, b i -> b o")


def equivariance_term(y_hat: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor:
    """SIE's equivariance loss: MSE between the predicted and the actual equivariant projection of view 1."""
    return F.mse_loss(y_hat.float(), y_target.float())


@dataclass
class Options:
    proj_dims: list[int] = opt([1024, 1024, 1024], "widths of each head, invariant and equivariant "
                                                   "(paper: 1024-1024-1024)", ge=1)
    inv_weight: float = opt(10.0, "λ_inv (paper: 10; official CLI: 25)", ge=0.0)
    equi_weight: float = opt(4.5, "λ_equi (paper: 4.5; official CLI: λ_inv)", ge=0.0)
    var_weight: float = opt(10.0, "λ_V (paper: 10; official CLI: 25)", ge=0.0)
    cov_weight: float = opt(1.0, "λ_C (paper: 1)", ge=0.0)


PRESETS = {"cpu": {"proj_dims": [256, 256, 256]}, "smoke": {"proj_dims": [64, 64, 64]}}


class SIE(Method):
    Options, PRESETS = Options, PRESETS

    def __init__(self, *, action_dim: int, proj_dims: Sequence[int] = (1024, 1024, 1024), inv_weight: float = 10.0,
                 equi_weight: float = 4.5, var_weight: float = 10.0, cov_weight: float = 1.0, depth: int = 18,
                 width: int = 64, stem: str = "imagenet", mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.25, 0.25, 0.25)):
        super().__init__(depth=depth, width=width, stem=stem, mean=mean, std=std)
        self.weights = dict(inv=inv_weight, equi=equi_weight, var=var_weight, cov=cov_weight)
        self.split = self.dim // 2
        self.projector_inv = projector(self.split, proj_dims, hidden_bias=True, last_norm=False)
        self.projector_equi = projector(self.dim - self.split, proj_dims, hidden_bias=True, last_norm=False)
        self.predictor = HyperPredictor(action_dim=action_dim, dim=proj_dims[-1])

    def losses(self, y_inv: torch.Tensor, y_equi: torch.Tensor, a: torch.Tensor) -> dict[str, torch.Tensor]:
        """The unweighted terms from projections [B, 2, P] of views 0/1 and the actions a [B, A]."""
        y_hat = self.predictor(y_equi[:, 0], a)
        y = torch.cat([y_inv, y_equi], dim=-1)
        return {"inv": F.mse_loss(y_inv[:, 0].float(), y_inv[:, 1].float()),
                "equi": equivariance_term(y_hat, y_equi[:, 1]),
                "var": (variance_term(y[:, 0]) + variance_term(y[:, 1])) / 2 + variance_term(y_hat) / 2,
                "cov": covariance_term(y[:, 0]) + covariance_term(y[:, 1])}

    def forward(self, views: torch.Tensor, actions: torch.Tensor) -> Output:
        """views uint8 [B, T≥2, …] (0, 1), actions [B, T-1, A] (``actions[:, 0]``, raw) → loss, z [B, 2, D]."""
        self.check_views(views, actions, 2, "SIE")
        z = self.encode_views(views[:, :2])
        y_inv = view_by_view(self.projector_inv, z[..., :self.split])
        y_equi = view_by_view(self.projector_equi, z[..., self.split:])
        terms = self.losses(y_inv, y_equi, actions[:, 0].to(z.device, torch.float32))
        return Output(loss=sum(self.weights[k] * v for k, v in terms.items()), z=z)
