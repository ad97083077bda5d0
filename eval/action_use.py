"""Suite ``action_use``: does the predictor use the action? Its loss with another sequence's a_M over its loss with
the true one, on test sequences.

seq-JEPA can only become equivariant if predicting the next view needs the action: a predictor that ignores a_M
gives the encoder no reason to keep the pose. For each M in ``cfg.m_val`` the frozen model predicts view M+1 of
each test sequence from z_agg(x_1…x_M, a_1…a_{M-1}) and e(a_M), and the same with a_M taken from another sequence
of the batch (a permutation without fixed points; the tokens' actions are unchanged). The value is the ratio of the
mean losses 1 − cos(ẑ, target): ≈ 1 when the predictor ignores the action, and the random initialisation scores
≈ 1 by construction (its yardstick). The same measurement runs during training on a held-out batch
(``probe_online/action_use``, seqjepa.train.action_use).

JSON keys: ``action_use/M={m}`` (the ratio), each with the two mean losses in its protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from seqjepa.model import action_use, derangement, uses_next_action

from .common import TEST_SEED_OFFSET, Context, draw, frozen, generator_for

if TYPE_CHECKING:
    from seqjepa.config import EvalConfig

NAME = "action_use"


def views_needed(cfg: EvalConfig) -> int:
    return max(cfg.m_val) + 1


def skip_reason(ctx: Context) -> str | None:
    if not ctx.model.predicts:
        return "the model has no predictor"
    if not uses_next_action(ctx.model):
        return "the predictor is not conditioned on the action"
    return None


@torch.no_grad()
def run(ctx: Context) -> dict[str, dict]:
    """Mean losses with the true and with a shuffled a_M on ``cfg.test_sequences`` test sequences, per M."""
    cfg, m_val = ctx.cfg, ctx.m_val
    steps = max(m_val) + 1
    gen = generator_for(ctx.world_test, ctx.bank_test, cfg.seed + TEST_SEED_OFFSET)
    sums = {m: torch.zeros(2, dtype=torch.float64) for m in m_val}
    n = 0
    amp = torch.autocast(torch.device(ctx.device).type, dtype=torch.bfloat16, enabled=ctx.autocast)
    for start in range(0, cfg.test_sequences, cfg.batch_size):
        k = min(cfg.batch_size, cfg.test_sequences - start)
        if k < 2:
            break  # a permutation without fixed points needs two sequences
        batch = draw(ctx.world_test, ctx.bank_test, k, steps, gen).to(ctx.device)
        n += k
        other = derangement(k, gen).to(ctx.device)
        with frozen(ctx.model), amp:
            for m in m_val:
                losses = action_use(ctx.model, batch.views[:, :m + 1], batch.actions[:, :m],
                                    batch.actions[other, :m])
                sums[m] += torch.stack([losses["true"].double().sum(), losses["last shuffled"].double().sum()]).cpu()
        ctx.tick(f"{n}/{cfg.test_sequences} test sequences")
    out = {}
    for m in m_val:
        true, shuffled = (sums[m] / n).tolist()
        out[f"action_use/M={m}"] = {"value": shuffled / true, "protocol": {
            "probe": "none: the model's own predictor, in eval mode",
            "metric": "mean loss with another sequence's a_M / mean loss with the true a_M (1 - cos to the "
                      "target encoder's embedding of view M+1)", "unit": "ratio",
            "input": f"z_agg(first {m} views, a_1..a_{m - 1}) and e(a_{m}); shuffled: a_{m} of another test "
                     "sequence (a permutation without fixed points), the tokens' actions unchanged",
            "loss_true": true, "loss_shuffled": shuffled, "chance": 1.0, "sequences": n, "views": m + 1,
            "epochs": 0, "lr": None, "batch_size": cfg.batch_size, **ctx.base}}
    return out
