"""Conv-JEPA (seq-JEPA paper's saccade baseline, official ``Conv_IJEPA``): predict the last patch from each earlier one.

For a sequence of M observed patches x_1..x_M and a target patch x_{M+1}, with r_i the relative move from patch i to
the target (the sum of the actions a_i..a_M; exact for the saccade world, whose actions are position differences):

    ŷ_i  = h(e(r_i) ⊕ g(f(x_i)))                      # each patch on its own: no aggregation
    loss = mean_i [1 − cos(ŷ_i, sg(ḡ(f̄(x_{M+1}))))]    # ``pair_reduction="sum"`` sums, as the paper's text says

Paper preset (= the official code): projector 2048-128 (Linear-BN-ReLU, Linear-BN without affine), the linear
action projector e (``model.act_dim``, 128), predictor (128 + 128) → 1024 → 128 with BN and ReLU, EMA target encoder
and projector (``model.tau_base``). The official loss averages over pairs while the paper says they are summed; the
mean is the default here. Without ``--ema`` the official target branch is not even detached; here ``model.ema=false``
gives the online networks under stop-gradient.

    python run.py train --method conv_jepa --env seqjepa/Saccades-v0

>>> import torch
>>> m = ConvJEPA(action_dim=2, act_dim=8, depth=10, width=8, stem="cifar", proj_dims=[32, 16], pred_hidden=16)
>>> out = m(torch.randint(0, 256, (4, 4, 3, 16, 16), dtype=torch.uint8), torch.randn(4, 3, 2))
>>> out["z"].shape, out["target"].shape
(torch.Size([4, 3, 64]), torch.Size([4, 64]))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from seqjepa.options import opt

from seqjepa.method import Method, Output

from .common import action_projector, per_view, projector, view_by_view


def moves_to_last(actions: torch.Tensor) -> torch.Tensor:
    """Relative actions [B, M, A] (a_i: view i → i+1) → r [B, M, A], r_i = a_i + … + a_M (view i → view M+1)."""
    return actions.flip(1).cumsum(1).flip(1)


def pairwise_loss(y_hat: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Σ or mean over the M pairs of the batch-mean 1 − cos(ŷ_i, target); y_hat [B, M, K], target [B, K]."""
    per_pair = 1.0 - F.cosine_similarity(y_hat.float(), target.float()[:, None], dim=-1).mean(0)  # [M]
    return per_pair.sum() if reduction == "sum" else per_pair.mean()


@dataclass
class Options:
    proj_dims: list[int] = opt([2048, 128], "projector widths (official code: 2048-128)", ge=1)
    pred_hidden: int = opt(1024, "hidden width of the predictor (official main_pls default: 1024)", ge=1)
    pair_reduction: Literal["mean", "sum"] = opt("mean", "how the M pair losses combine: mean (official code) or "
                                                         "sum (paper text)")


PRESETS = {"cpu": {"proj_dims": [512, 32], "pred_hidden": 256}, "smoke": {"proj_dims": [64, 16], "pred_hidden": 32}}


class ConvJEPA(Method):
    Options, PRESETS = Options, PRESETS

    def __init__(self, *, action_dim: int, act_dim: int = 128, proj_dims: Sequence[int] = (2048, 128),
                 pred_hidden: int = 1024, pair_reduction: Literal["mean", "sum"] = "mean", ema: bool = True,
                 depth: int = 18, width: int = 64, stem: str = "imagenet", mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.25, 0.25, 0.25)):
        super().__init__(depth=depth, width=width, stem=stem, mean=mean, std=std)
        if pair_reduction not in ("mean", "sum"):
            raise ValueError(f"pair_reduction: got {pair_reduction!r}; allowed: 'mean' or 'sum'")
        self.pair_reduction = pair_reduction
        out = proj_dims[-1]
        self.projector = projector(self.dim, proj_dims)
        self.action_embed = action_projector(action_dim, act_dim)
        self.predictor = projector(act_dim + out, [pred_hidden, out], last_bias=True, last_norm=False)
        self.add_target("encoder", ema)
        self.add_target("projector", ema)

    @torch.no_grad()
    def targets(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f̄(x) [B, D] and ḡ(f̄(x)) [B, K] for one uint8 view per sequence [B, 3, H, W], without gradient."""
        z = self.target("encoder")(self.prepare(views[:, None]))
        return z, self.target("projector")(z)

    def forward(self, views: torch.Tensor, actions: torch.Tensor) -> Output:
        """views uint8 [B, M+1, …] (the last is the target), actions [B, M, A] → loss, z [B, M, D], target [B, D]."""
        self.check_views(views, actions, 2, "Conv-JEPA")
        M = views.shape[1] - 1
        z = self.encode(views[:, :M])
        # As the official code: the encoder and projector see all B·M patches as one batch, while the action
        # projector and the predictor run once per patch i (B rows each), in train mode with their own statistics.
        e = view_by_view(self.action_embed, moves_to_last(actions.to(z.device, torch.float32)))
        y_hat = view_by_view(self.predictor, torch.cat([e, per_view(self.projector, z)], dim=-1))
        z_t, y_t = self.targets(views[:, M])
        return Output(loss=pairwise_loss(y_hat, y_t, self.pair_reduction), z=z, target=z_t)
