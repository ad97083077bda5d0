"""VICReg-Traj (Wang et al. 2024a), invariant + trajectory prior: VICReg plus a straight-trajectory term.

Three consecutive views l, c, r (views 0, 1, 2 of each sequence; no ground-truth transformation is used):

    loss = VICReg(y_l, y_c) − λ_traj·cos(u₁, u₂),   u₁ = P(y_c − y_l), u₂ = P(y_r − y_c),  P v = v − (v·ŷ_c) ŷ_c

with ŷ_c = y_c/‖y_c‖, so P removes the radial component at y_c: u₁, u₂ are the tangent steps of the trajectory. The
official code projects with the *un-normalised* y_c (``v − (v·y_c) y_c``), which is a projection only when ‖y_c‖ = 1
and otherwise rescales and flips the radial part; that is not copied.

Paper preset: VICReg's (projector 2048-2048-2048, λ_inv = λ_V = 10, λ_C = 1) with λ_traj = 0.01 (the official CLI
default ``--alpha`` is 1). Needs ≥ 3 views per sequence (``train.seq_len`` ≥ 2).

    python run.py train --method vicreg_traj

>>> import torch
>>> y = torch.randn(8, 3, 16)
>>> float(trajectory_term(y[:, 0], y[:, 1], y[:, 2])) <= 1.0
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from seqjepa.options import opt

from seqjepa.method import Method, Output

from .common import per_view, projector
from .vicreg import vicreg_loss


def trajectory_term(y_l: torch.Tensor, y_c: torch.Tensor, y_r: torch.Tensor) -> torch.Tensor:
    """−cos between the two tangent steps of the trajectory l → c → r at c (mean over the batch), float32."""
    y_l, y_c, y_r = y_l.float(), y_c.float(), y_r.float()
    n = F.normalize(y_c, dim=-1)

    def tangent(v: torch.Tensor) -> torch.Tensor:
        return v - (v * n).sum(dim=-1, keepdim=True) * n

    return -F.cosine_similarity(tangent(y_c - y_l), tangent(y_r - y_c), dim=-1).mean()


@dataclass
class Options:
    proj_dims: list[int] = opt([2048, 2048, 2048], "projector widths (paper: 2048-2048-2048)", ge=1)
    inv_weight: float = opt(10.0, "λ_inv (paper: VICReg's 10; official code: 25)", ge=0.0)
    var_weight: float = opt(10.0, "λ_V (paper: VICReg's 10; official code: 25)", ge=0.0)
    cov_weight: float = opt(1.0, "λ_C (paper: 1)", ge=0.0)
    traj_weight: float = opt(0.01, "λ_traj, weight of the trajectory term (paper: 0.01; official CLI: 1)", ge=0.0)


PRESETS = {"cpu": {"proj_dims": [512, 512, 512]}, "smoke": {"proj_dims": [64, 64, 64]}}


class VICRegTraj(Method):
    Options, PRESETS = Options, PRESETS

    def __init__(self, *, proj_dims: Sequence[int] = (2048, 2048, 2048), inv_weight: float = 10.0,
                 var_weight: float = 10.0, cov_weight: float = 1.0, traj_weight: float = 0.01, depth: int = 18,
                 width: int = 64, stem: str = "imagenet", mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.25, 0.25, 0.25)):
        super().__init__(depth=depth, width=width, stem=stem, mean=mean, std=std)
        self.weights = dict(inv_weight=inv_weight, var_weight=var_weight, cov_weight=cov_weight)
        self.traj_weight = traj_weight
        self.projector = projector(self.dim, proj_dims, hidden_bias=True, last_norm=False)

    def forward(self, views: torch.Tensor, actions: torch.Tensor) -> Output:
        """views uint8 [B, T≥3, …] (0, 1, 2 are used), actions unused → loss, z [B, 3, D]."""
        self.check_views(views, actions, 3, "VICReg-Traj")
        # One batch of 3B rows through encoder and projector: the official VICReg_Traj does the same (unlike the
        # two-view baselines, which call their networks once per view).
        z = self.encode(views[:, :3])
        y = per_view(self.projector, z)
        loss, _ = vicreg_loss(y[:, 0], y[:, 1], **self.weights)
        loss = loss + self.traj_weight * trajectory_term(y[:, 0], y[:, 1], y[:, 2])
        return Output(loss=loss, z=z)
