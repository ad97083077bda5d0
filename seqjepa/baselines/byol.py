"""BYOL (Grill et al. 2020), invariant baseline: predict the EMA target's projection of the other view.

    loss = ‖q(g(f(x₁)))~ − sg(ḡ(f̄(x₂)))~‖² + ‖q(g(f(x₂)))~ − sg(ḡ(f̄(x₁)))~‖²   (~: L2-normalised; = 2 − 2cos each)

Paper preset (seq-JEPA §3.1 table): projector 2048-2048-2048, predictor hidden 512 with ReLU, EMA τ_base 0.996 rising
to 1 on a cosine (``model.tau_base``; the trainer calls ``update_target`` every step). The official code instead uses
a 2048-128 projector and a 2048-hidden predictor (set ``proj_dims=[2048,128]``, ``pred_hidden=2048`` to match), and
its target **never updates** unless ``--ema`` is passed; here the EMA always runs (``model.ema=false`` gives a
stop-gradient online target instead, SimSiam-style). Views 0 and 1 are the pair; actions are not used.

    python run.py train --method byol

>>> import torch
>>> m = BYOL(depth=10, width=8, stem="cifar", proj_dims=[32, 16], pred_hidden=8)
>>> out = m(torch.randint(0, 256, (4, 2, 3, 16, 16), dtype=torch.uint8), torch.zeros(4, 1, 4))
>>> out["loss"].backward(); m.update_target(0.99)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from seqjepa.options import opt

from seqjepa.method import Method, Output

from .common import cosine_regression, projector, view_by_view


@dataclass
class Options:
    proj_dims: list[int] = opt([2048, 2048, 2048], "projector widths (paper: 2048-2048-2048; official code: "
                                                   "2048-128)", ge=1)
    pred_hidden: int = opt(512, "hidden width of the predictor MLP (paper: 512; official code: 2048)", ge=1)


PRESETS = {"cpu": {"proj_dims": [512, 512, 512], "pred_hidden": 128},
           "smoke": {"proj_dims": [64, 64, 64], "pred_hidden": 32}}


class BYOL(Method):
    Options, PRESETS = Options, PRESETS

    def __init__(self, *, proj_dims: Sequence[int] = (2048, 2048, 2048), pred_hidden: int = 512, ema: bool = True,
                 depth: int = 18, width: int = 64, stem: str = "imagenet",
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.25, 0.25, 0.25)):
        super().__init__(depth=depth, width=width, stem=stem, mean=mean, std=std)
        self.projector = projector(self.dim, proj_dims)
        out = proj_dims[-1]
        self.predictor = projector(out, [pred_hidden, out], last_bias=True, last_norm=False)
        self.add_target("encoder", ema)
        self.add_target("projector", ema)

    @torch.no_grad()
    def targets(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f̄(x) [B, T, D] and ḡ(f̄(x)) [B, T, K] for uint8 views [B, T, …], without gradient (the EMA networks, or
        the online ones when EMA is off)."""
        encoder = self.target("encoder")
        z = torch.stack([encoder(self.prepare(views[:, t:t + 1])) for t in range(views.shape[1])], dim=1)
        return z, view_by_view(self.target("projector"), z)

    def forward(self, views: torch.Tensor, actions: torch.Tensor) -> Output:
        """views uint8 [B, T≥2, …] (0 and 1 are used), actions unused → loss (symmetric), z [B, 2, D]."""
        self.check_views(views, actions, 2, "BYOL")
        z = self.encode_views(views[:, :2])
        p = view_by_view(self.predictor, view_by_view(self.projector, z))
        _, t = self.targets(views[:, :2])
        loss = cosine_regression(p[:, 0], t[:, 1]) + cosine_regression(p[:, 1], t[:, 0])
        return Output(loss=loss, z=z)
