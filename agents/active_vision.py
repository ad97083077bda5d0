"""Active vision: a saccade policy that chooses the next fixation with the world model.

The agent remembers where it looked (the saccade world's ``path``), so it re-renders what it saw, encodes it and
aggregates it with the moves between fixations into z_agg. Then it scores C candidate fixations (uniform over the
pixels inhibition of return leaves open) and moves to the best one:

- ``change`` (expected information gain, in the model's own terms): imagine the glimpse there, ẑ = h(z_agg ⊕ e(a)),
  append it as the next token and re-aggregate; the score is 1 − cos(z_agg', z_agg), how much the candidate would
  change the invariant representation;
- ``disagreement`` (uncertainty): run the aggregator with its dropout on S times and predict ẑ for every
  candidate from each sample; the score is the spread of the S predictions (mean per-dimension variance of the
  normalised ẑ), where the model is least sure what it would see.

>>> policy = ActiveVisionPolicy(model, candidates=32, score="change")          # doctest: +SKIP
>>> batch = envs.rollout(world, policy, n=16, steps=5, generator=g)            # doctest: +SKIP
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from envs.base import State, World
from envs.saccades import Saccades
from seqjepa.options import ConfigError

from .base import on_device, unfit

Score = Literal["change", "disagreement"]


class ActiveVisionPolicy:
    """Next fixation = the best of ``candidates`` random open fixations under ``score`` (see the module doc).

    The model must be in eval mode (the disagreement score switches the aggregator's dropout on by itself).
    Deterministic given the generator: dropout masks are drawn from a seed taken from it.
    """

    def __init__(self, model: nn.Module, *, candidates: int = 32, score: Score = "change", samples: int = 8):
        if score not in ("change", "disagreement"):
            raise ConfigError(f"score: got {score!r}; allowed: 'change', 'disagreement'")
        if not model.predicts or model.action_embed is None:
            raise ConfigError("active vision needs an action-conditioned world model (seq-JEPA, act_cond both)")
        self.model, self.candidates, self.score, self.samples = model, candidates, score, samples

    @torch.no_grad()
    def __call__(self, world: World, state: State, generator: torch.Generator) -> Tensor:
        if not isinstance(world, Saccades):
            raise unfit("active vision", world, "a saccade world (seqjepa/Saccades-v0)")
        g = on_device(generator, world)
        z, e = self._seen(world, state)
        fix, open_ = self._candidates(world, state, g)                       # [n, C, 2], [n, C]
        moves = fix - state["params"][:, None]
        e_new = self.model.embed_actions(moves)                             # [n, C, act]
        if self.score == "change":
            score = self._change(z, e, e_new)
        else:
            seed = int(torch.randint(0, 2**62, (1,), generator=g, device=world.device).item())
            score = self._disagreement(z, e, e_new, seed)
        best = score.masked_fill(~open_.to(score.device), float("-inf")).argmax(1)
        return moves[torch.arange(len(moves), device=moves.device), best.to(moves.device)]

    def _seen(self, world: Saccades, state: State) -> tuple[Tensor, Tensor]:
        """Encodings z [n, T, D] of the remembered glimpses and embeddings e [n, T-1, act] of the moves."""
        path = state["path"]
        t = int((path[..., 0] >= 0).sum(1).min())  # episodes run in lockstep; the shortest memory is common
        path = path[:, -t:]
        views = torch.stack([world.render({**state, "params": path[:, i]}) for i in range(t)], 1)
        z = self.model.encode(views)
        e = (self.model.embed_actions(world.relative(path[:, :-1], path[:, 1:])) if t > 1
             else z.new_zeros(len(z), 0, self.model.act_dim))
        return z, e

    def _candidates(self, world: Saccades, state: State, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """C fixations uniform over the scene's pixels (scene fractions) and whether IoR leaves each open."""
        s, n = world.options.scene_size, len(state["params"])
        pix = torch.randint(0, s, (n, self.candidates, 2), generator=g, device=world.device)
        if world.options.ior == "none":
            return pix.float() / s, torch.ones(n, self.candidates, dtype=torch.bool, device=world.device)
        rows = torch.arange(n, device=world.device)[:, None]
        open_ = ~state["inhibition"][rows, pix[..., 0], pix[..., 1]]
        open_ |= ~open_.any(1, keepdim=True)  # every candidate inhibited: let them all compete
        return pix.float() / s, open_

    def _change(self, z: Tensor, e: Tensor, e_new: Tensor) -> Tensor:
        """1 − cos(z_agg after imagining each candidate's glimpse, z_agg now): [n, C]."""
        m, c = self.model, e_new.shape[1]
        z_agg = m.aggregate(z, e)
        flat = rearrange(e_new, "n c k -> (n c) k")
        z_hat = m.predict(repeat(z_agg, "n d -> (n c) d", c=c), flat)
        z_more = torch.cat([repeat(z, "n t d -> (n c) t d", c=c), z_hat[:, None]], 1)
        e_more = torch.cat([repeat(e, "n t k -> (n c) t k", c=c), flat[:, None]], 1)
        z_agg_new = rearrange(m.aggregate(z_more, e_more), "(n c) d -> n c d", c=c)
        return 1 - F.cosine_similarity(z_agg_new.float(), z_agg[:, None].float(), dim=-1)

    def _disagreement(self, z: Tensor, e: Tensor, e_new: Tensor, seed: int) -> Tensor:
        """Spread of ẑ over dropout samples of the aggregator: [n, C]."""
        m, c = self.model, e_new.shape[1]
        was = m.aggregator.training
        with torch.random.fork_rng(devices=[z.device] if z.device.type == "cuda" else []):
            torch.manual_seed(seed)
            m.aggregator.train(True)  # dropout on; the predictor's BatchNorm stays in eval mode
            try:
                aggs = torch.stack([m.aggregate(z, e) for _ in range(self.samples)])   # [S, n, d]
            finally:
                m.aggregator.train(was)
        s = aggs.shape[0]
        z_hat = m.predict(repeat(aggs, "s n d -> (s n c) d", c=c), repeat(e_new, "n c k -> (s n c) k", s=s))
        z_hat = rearrange(F.normalize(z_hat.float(), dim=-1), "(s n c) d -> s n c d", s=s, c=c)
        return z_hat.var(0).mean(-1)
