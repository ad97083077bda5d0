"""Suite ``retrieval``: MRR, Hit@1 and Hit@5 of the predictor's output among the views of the same object.

SIE's definition (``eval_MRR_Hk.py`` of facebookresearch/SIE, used by Table 10 of the paper): the prediction for
the target view is compared by cosine similarity with the target-space embeddings of *every view of the same
object* (SIE: all 50 views of a 3DIEBench object, the source view and the target included); the rank of the true
target view among them gives MRR = mean(1/rank) and Hit@k = fraction with rank ≤ k. Here:

* prediction: ẑ = predict(z_agg(x_1…x_M, a_1…a_{M-1}), e(a_M)) for each M in cfg.m_val;
* candidates: the target encoder's embeddings of the object's views — with a view bank, all of that object's bank
  views (as SIE); live, the sequence's own views plus fresh random views of the same episode up to
  ``LIVE_CANDIDATES``. Other objects are never candidates;
* ties are counted in the target's favour (rank = 1 + #candidates strictly more similar).

>>> ranks(torch.eye(2), torch.eye(2)[None].repeat(2, 1, 1), torch.tensor([0, 0])).tolist()
[1, 2]

JSON keys: ``retrieval/M={m}/mrr``, ``retrieval/M={m}/hit@1``, ``retrieval/M={m}/hit@5``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from envs.base import World
from envs.sequences import Batch, ViewBank, random_policy, rollout

from .common import TEST_SEED_OFFSET, Context, frozen, generator_for

if TYPE_CHECKING:
    from seqjepa.config import EvalConfig

NAME = "retrieval"
LIVE_CANDIDATES = 16  # live worlds render this many views per object as candidates (SIE's bank: 50)
HITS = (1, 5)


def views_needed(cfg: EvalConfig) -> int:
    return max(cfg.m_val) + 1


def skip_reason(ctx: Context) -> str | None:
    if not ctx.model.predicts:
        return "the model has no predictor"
    return None


def sample_with_candidates(world: World, bank: ViewBank | None, n: int, steps: int, gen: torch.Generator,
                           n_candidates: int = LIVE_CANDIDATES) -> tuple[Batch, Tensor, Tensor]:
    """Sequences plus the candidate views of their objects.

    Returns ``(batch, candidates uint8 [n, C, 3, H, W], index long [n, steps])`` where ``index[i, t]`` is the
    position of view ``t`` of sequence ``i`` among its candidates.
    """
    if bank is not None:
        dev = bank.views.device
        rows = torch.randint(0, bank.views.shape[0], (n,), generator=gen, device=dev)
        idx = torch.rand(n, bank.num_views, generator=gen, device=dev).argsort(1)[:, :steps]
        params = bank.params[rows[:, None], idx]
        batch = Batch(bank.views[rows[:, None], idx], world.relative(params[:, :-1], params[:, 1:]), params,
                      bank.labels[rows], bank.episodes[rows])
        return batch, bank.views[rows], idx
    batch = rollout(world, random_policy, n, steps, gen)
    fresh = [world.render(world.reset(n, gen, batch.episodes)) for _ in range(max(0, n_candidates - steps))]
    cands = torch.cat([batch.views, *(f[:, None] for f in fresh)], dim=1)
    return batch, cands, torch.arange(steps, device=batch.views.device).expand(n, steps)


def ranks(pred: Tensor, cands: Tensor, target: Tensor) -> Tensor:
    """Rank (1 = best) of candidate ``target[i]`` for prediction ``pred[i]`` by cosine similarity.

    ``pred`` [N, D], ``cands`` [N, C, D], ``target`` long [N]. Ties count in the target's favour.
    """
    sims = torch.einsum("nd,ncd->nc", F.normalize(pred.float(), dim=-1), F.normalize(cands.float(), dim=-1))
    own = sims.gather(1, target.long()[:, None])
    return 1 + (sims > own).sum(1)


def summarise(r: Tensor) -> dict[str, float]:
    """MRR and Hit@k from ranks."""
    out = {"mrr": float((1.0 / r.double()).mean())}
    out.update({f"hit@{k}": float((r <= k).double().mean()) for k in HITS})
    return out


def chance(n_candidates: int) -> dict[str, float]:
    """What a random ranking scores: MRR = H_C / C, Hit@k = min(k, C) / C.

    >>> round(chance(12)["mrr"], 3), round(chance(12)["hit@5"], 3)
    (0.259, 0.417)
    """
    out = {"mrr": sum(1.0 / r for r in range(1, n_candidates + 1)) / n_candidates}
    out.update({f"hit@{k}": min(k, n_candidates) / n_candidates for k in HITS})
    return out


@torch.no_grad()
def predicted_ranks(ctx: Context, batch: Batch, cands: Tensor, index: Tensor, m_val: list[int]) -> dict[int, Tensor]:
    """Ranks of the true view M (0-based) for each M, for one chunk already on the device."""
    model = ctx.model
    amp = torch.autocast(torch.device(ctx.device).type, dtype=torch.bfloat16, enabled=ctx.autocast)
    with frozen(model), amp:
        z = model.encode(batch.views[:, :max(m_val)])
        e = model.embed_actions(batch.actions)
        targets = model.encode_target(cands)  # [n, C, D]
        out = {}
        for m in m_val:
            z_agg = model.aggregate(z[:, :m], None if e is None else e[:, :m])
            z_hat = model.predict(z_agg, None if e is None else e[:, m - 1])
            out[m] = ranks(z_hat, targets, index[:, m]).cpu()
    return out


def run(ctx: Context) -> dict[str, dict]:
    """Rank predictions among candidate views of the test split's objects."""
    cfg, m_val = ctx.cfg, ctx.m_val
    steps = max(m_val) + 1
    gen = generator_for(ctx.world_test, ctx.bank_test, cfg.seed + TEST_SEED_OFFSET)
    all_ranks: dict[int, list[Tensor]] = {m: [] for m in m_val}
    n_cands = 0
    for start in range(0, cfg.test_sequences, cfg.batch_size):
        k = min(cfg.batch_size, cfg.test_sequences - start)
        batch, cands, index = sample_with_candidates(ctx.world_test, ctx.bank_test, k, steps, gen)
        n_cands = cands.shape[1]
        dev = ctx.device
        got = predicted_ranks(ctx, batch.to(dev), cands.to(dev), index.to(dev), m_val)
        for m in m_val:
            all_ranks[m].append(got[m])
        ctx.tick(f"{start + k}/{cfg.test_sequences} test sequences")
    candidate_set = ("all bank views of the same object (SIE: all 50 views of the object)" if ctx.bank_test
                     is not None else f"the sequence's {steps} views + fresh random views of the same episode")
    out, floor = {}, chance(n_cands)
    for m in m_val:
        r = torch.cat(all_ranks[m])
        for key, value in summarise(r).items():
            unit = "MRR" if key == "mrr" else f"Hit@{key[4:]} (fraction)"
            out[f"retrieval/M={m}/{key}"] = {"value": value, "protocol": {
                "probe": "none: the model's own predictor output ẑ, ranked by cosine similarity",
                "metric": f"{unit} of the true target view among the candidates", "unit": unit,
                "input": f"ẑ = predict(z_agg(first {m} views), e(a_{m})); the target is view {m + 1}",
                "candidates": int(n_cands), "chance": floor[key], "candidate_set": candidate_set,
                "candidate_embeddings": "target encoder (EMA copy) outputs, L2-normalised",
                "ties": "counted in the target's favour", "reference": "SIE eval_MRR_Hk.py",
                "sequences": int(r.numel()), "views": m, "epochs": 0, "lr": None,
                "batch_size": cfg.batch_size, **ctx.base}}
    return out
