"""VICReg (Bardes et al. 2022), invariant baseline: invariance + variance + covariance on two views' projections.

    loss = λ_inv·MSE(y₁, y₂) + λ_V·(v(y₁) + v(y₂))/2 + λ_C·(c(y₁) + c(y₂))
    v(y) = mean_j relu(1 − sqrt(Var(y_j) + 1e-4))          c(y) = Σ_{i≠j} Cov(y)_ij² / K

Paper preset (seq-JEPA §3.1 table): projector 2048-2048-2048 (hidden layers with bias, no final BN), λ_inv = λ_V = 10,
λ_C = 1. The official code's CLI defaults are 25/25/1 (VICReg's own); set ``inv_weight``/``var_weight`` to 25 to
match it. With torch.distributed initialised, v and c use the batch gathered *with* gradients from every process
(the official gather carries none). Views 0 and 1 are the pair; actions are not used. The terms are public
functions: SIE and VICReg-Traj reuse them.

    python run.py train --method vicreg

>>> import torch
>>> y1, y2 = torch.randn(16, 8), torch.randn(16, 8)
>>> loss, terms = vicreg_loss(y1, y2, inv_weight=10, var_weight=10, cov_weight=1)
>>> sorted(terms)
['cov', 'inv', 'var']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from seqjepa.options import opt

from seqjepa.method import Method, Output

from .common import gather, projector, view_by_view


def variance_term(y: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Hinge on each dimension's standard deviation over the (gathered) batch: mean_j relu(1 − std_j)."""
    y = gather(y).float()
    return F.relu(1.0 - torch.sqrt(y.var(dim=0) + eps)).mean()


def covariance_term(y: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal covariances over the (gathered) batch, divided by the dimension K."""
    y = gather(y).float()
    y = y - y.mean(dim=0)
    cov = y.T @ y / (y.shape[0] - 1)
    off = cov - torch.diag_embed(torch.diagonal(cov))
    return off.pow(2).sum() / y.shape[1]


def vicreg_loss(y1: torch.Tensor, y2: torch.Tensor, *, inv_weight: float, var_weight: float,
                cov_weight: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The VICReg objective on two [N, K] projections; also returns the unweighted terms."""
    terms = {"inv": F.mse_loss(y1.float(), y2.float()),
             "var": (variance_term(y1) + variance_term(y2)) / 2,
             "cov": covariance_term(y1) + covariance_term(y2)}
    loss = inv_weight * terms["inv"] + var_weight * terms["var"] + cov_weight * terms["cov"]
    return loss, terms


@dataclass
class Options:
    proj_dims: list[int] = opt([2048, 2048, 2048], "projector widths (paper: 2048-2048-2048)", ge=1)
    inv_weight: float = opt(10.0, "λ_inv, weight of the invariance (MSE) term (paper: 10; official code: 25)", ge=0.0)
    var_weight: float = opt(10.0, "λ_V, weight of the variance term (paper: 10; official code: 25)", ge=0.0)
    cov_weight: float = opt(1.0, "λ_C, weight of the covariance term (paper: 1)", ge=0.0)


PRESETS = {"cpu": {"proj_dims": [512, 512, 512]}, "smoke": {"proj_dims": [64, 64, 64]}}


class VICReg(Method):
    Options, PRESETS = Options, PRESETS

    def __init__(self, *, proj_dims: Sequence[int] = (2048, 2048, 2048), inv_weight: float = 10.0,
                 var_weight: float = 10.0, cov_weight: float = 1.0, depth: int = 18, width: int = 64,
                 stem: str = "imagenet", mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.25, 0.25, 0.25)):
        super().__init__(depth=depth, width=width, stem=stem, mean=mean, std=std)
        self.weights = dict(inv_weight=inv_weight, var_weight=var_weight, cov_weight=cov_weight)
        self.projector = projector(self.dim, proj_dims, hidden_bias=True, last_norm=False)

    def forward(self, views: torch.Tensor, actions: torch.Tensor) -> Output:
        """views uint8 [B, T≥2, …] (0 and 1 are used), actions unused → loss, z [B, 2, D]."""
        self.check_views(views, actions, 2, "VICReg")
        z = self.encode_views(views[:, :2])
        y = view_by_view(self.projector, z)
        loss, _ = vicreg_loss(y[:, 0], y[:, 1], **self.weights)
        return Output(loss=loss, z=z)
