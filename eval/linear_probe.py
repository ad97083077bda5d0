"""Suite ``linear_probe``: top-1 of a linear classifier on z_agg for every M_val, and on the encoder output.

The invariance proxy of the paper (§3.3 item 1): z_agg aggregates the first M views and actions[:, :M-1]. Where
the world has clean views (``World.clean_views``: the augmentation world's images before any transformation, as
the official code's classifier reads ``enc(orig_img)`` in the CIFAR-100 / Tiny ImageNet setting; the glimpse on the
class object of a procedural saccade scene), the encoder is also probed on the clean view of each sequence's
episode.

>>> run(ctx)["linear_probe/z_agg/M=5"]["value"]      # doctest: +SKIP
87.4

JSON keys: ``linear_probe/z_agg/M={m}`` for m in cfg.m_val, ``linear_probe/encoder``, and
``linear_probe/encoder/clean`` where the world has clean views.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from envs import World

from .common import Context, classify, frozen

if TYPE_CHECKING:
    from seqjepa.config import EvalConfig

NAME = "linear_probe"


def views_needed(cfg: EvalConfig) -> int:
    return max(cfg.m_val) + 1


def skip_reason(ctx: Context) -> str | None:
    return None  # every model has an encoder; z_agg rows are simply absent for encoder-only models


def run(ctx: Context, prefix: str = "") -> dict[str, dict]:
    """Fit and score the probes; ``prefix`` namespaces the keys (the ood suite passes ``"ood/"``)."""
    tr, te, out = ctx.train, ctx.test, {}
    for m in sorted(tr["z_agg"]):
        key = f"{prefix}linear_probe/z_agg/M={m}"
        out[key] = classify(tr["z_agg"][m], tr["labels"], te["z_agg"][m], te["labels"], ctx, views=m,
                            inputs=f"z_agg from the first {m} views and actions[:, :{m}]", metric=key)
    key = f"{prefix}linear_probe/encoder"
    out[key] = classify(tr["z"][:, 0], tr["labels"], te["z"][:, 0], te["labels"], ctx, views=1,
                        inputs="encoder output z of the first view", metric=key)
    clean_tr = clean_features(ctx, ctx.world_train, tr["episodes"])
    clean_te = clean_features(ctx, ctx.world_test, te["episodes"]) if clean_tr is not None else None
    if clean_te is not None:
        out[f"{prefix}linear_probe/encoder/clean"] = classify(
            clean_tr, tr["labels"], clean_te, te["labels"], ctx, views=1,
            inputs="encoder output z of the clean view of each sequence's episode (world.clean_views)",
            metric=f"{prefix}linear_probe/encoder/clean")
    return out


def clean_features(ctx: Context, world: World, episodes: Tensor) -> Tensor | None:
    """Frozen encoder outputs [N, D] of ``world.clean_views(episodes)`` on the CPU, or None without clean views.

    Sequences repeat episodes (6000 probe sequences over ~1000 images): each distinct image is encoded once.
    """
    distinct, index = episodes.unique(return_inverse=True)
    amp = torch.autocast(torch.device(ctx.device).type, dtype=torch.bfloat16, enabled=ctx.autocast)
    out = []
    with frozen(ctx.model), amp:
        for chunk in distinct.split(ctx.cfg.batch_size):
            views = world.clean_views(chunk)
            if views is None:
                return None
            out.append(ctx.model.encode(views.to(ctx.device, non_blocking=True)[:, None])[:, 0].float().cpu())
    return torch.cat(out)[index]
