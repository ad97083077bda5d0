"""Conditional BYOL (seq-JEPA paper's hybrid baseline): BYOL whose predictor also receives the relative action.

Two-view seq-JEPA without the aggregator: ŷ₂ = q(e(a) ⊕ g(f(x₁))), loss = 2 − 2·cos(ŷ₂, sg(ḡ(f̄(x₂)))), in one direction
(view 0 → view 1, as the official ``BYOL_Conditional``; the reverse would need the inverse action). e is the linear
action projector with a non-affine BatchNorm (the "normalised relative transformation", ``model.act_dim`` = 128 in the
paper). Same settings and EMA as :mod:`.byol` (paper: projector 2048-2048-2048, predictor hidden 512; official code:
2048-128 and 2048). The official target only updates with ``--ema``; here it always does. Uses views 0, 1 and
``actions[:, 0]``.

    python run.py train --method cond_byol

>>> import torch
>>> m = CondBYOL(action_dim=4, act_dim=8, depth=10, width=8, stem="cifar", proj_dims=[32, 16], pred_hidden=8)
>>> out = m(torch.randint(0, 256, (4, 2, 3, 16, 16), dtype=torch.uint8), torch.randn(4, 1, 4))
>>> out["loss"].backward(); m.update_target(0.99)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .byol import BYOL, PRESETS, Options
from seqjepa.method import Output

from .common import action_projector, cosine_regression, projector


class CondBYOL(BYOL):
    Options, PRESETS = Options, PRESETS

    def __init__(self, *, action_dim: int, act_dim: int = 128, proj_dims: Sequence[int] = (2048, 2048, 2048),
                 pred_hidden: int = 512, ema: bool = True, depth: int = 18, width: int = 64, stem: str = "imagenet",
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.25, 0.25, 0.25)):
        super().__init__(proj_dims=proj_dims, pred_hidden=pred_hidden, ema=ema, depth=depth, width=width, stem=stem,
                         mean=mean, std=std)
        out = proj_dims[-1]
        self.action_embed = action_projector(action_dim, act_dim)
        self.predictor = projector(act_dim + out, [pred_hidden, out], last_bias=True, last_norm=False)

    def forward(self, views: torch.Tensor, actions: torch.Tensor) -> Output:
        """views uint8 [B, T≥2, …] (0, 1), actions [B, T-1, A] (``actions[:, 0]``) → loss, z [B, 1, D] (view 0,
        online), target [B, D] (view 1, target encoder)."""
        self.check_views(views, actions, 2, "Conditional BYOL")
        z = self.encode(views[:, :1])  # only view 0 goes through the online network (one direction)
        e = self.action_embed(actions[:, 0].to(z.device, torch.float32))
        y_hat = self.predictor(torch.cat([e, self.projector(z[:, 0])], dim=-1))
        z_t, y_t = self.targets(views[:, 1:2])
        return Output(loss=cosine_regression(y_hat, y_t[:, 0]), z=z, target=z_t[:, 0])
