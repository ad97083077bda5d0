"""Planning with a learned world model: reach a goal view by searching actions in latent space.

Given the views seen so far (x_1..x_M and the actions a_1..a_{M-1} between them) and a goal view, find the next
H actions whose predicted embedding matches the goal's target embedding f̄(x_goal) (cosine), then execute them:

    z_agg = g(z_1⊕e_1, …, z_M⊕0);   ẑ_1 = h(z_agg ⊕ e(a_M))                      # one step ahead
    ẑ_t   = h(g(z_1⊕e_1, …, z_M⊕e(a_M), ẑ_1⊕e(a_{M+1}), …, ẑ_{t-1}⊕0) ⊕ e(a_{M+t-1}))    # t > 1
    cost  = 1 − cos(ẑ_H, f̄(x_goal))

Two optimisers minimise the cost over a :class:`PlanSpace`'s variables u [B, K, H, U] (K candidates per episode):

- :func:`cem`: the cross-entropy method (sample, keep the elite fraction, refit a diagonal Gaussian, repeat);
- :func:`gradient_plan`: Adam on u through the predictor, projected back to the action space after every step
  (quaternions normalised, fixations kept in the scene), from several random restarts.

Both keep the best candidate seen. Any ``cost(actions [B, K, H, A]) -> [B, K]`` can be planned, so the same code
searches the true world (the oracle of ``agents.plan_eval``) or a known toy model (the tests).

>>> space = BoxSpace(batch=1, low=-torch.ones(1), high=torch.ones(1))         # a 1-d toy: reach a = 0.3
>>> toy = lambda a: (a[..., 0, 0] - 0.3).abs()                                  # actions [B, K, H, A] -> [B, K]
>>> plan = cem(toy, space, horizon=1, generator=torch.Generator().manual_seed(0))
>>> round(float(plan.actions[0, 0, 0]), 2)
0.3
>>> cost = LatentGoalCost(model, views, actions, goal)                          # doctest: +SKIP
>>> plan = cem(cost, space_for(world, state), horizon=1, generator=g)          # doctest: +SKIP
>>> state = execute(world, state, plan.actions, g)                             # doctest: +SKIP
>>> goal_error(world, state["params"], goal_params)                            # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from envs import rotations as rt
from envs.base import State, World
from envs.saccades import Saccades
from seqjepa.options import ConfigError

Cost = Callable[[Tensor], Tensor]  # actions [B, K, H, A] -> cost [B, K] (lower is better)
Tick = Callable[[str], None]        # progress of a long search: called with what was just done
RENDER_CHUNK = 512                  # candidate views the pixel oracle renders per call (memory, progress)


# -- action spaces: what the planners optimise, and how it becomes actions ---------------------------------------

class PlanSpace(Protocol):
    """The planners' variables u [B, K, H, U]: an initial Gaussian, a projection and the map to actions."""

    def init(self, horizon: int) -> tuple[Tensor, Tensor]:
        """Initial mean and std, [B, H, U] each."""

    def project(self, u: Tensor) -> Tensor:
        """u onto the feasible set (differentiable almost everywhere)."""

    def to_actions(self, u: Tensor) -> Tensor:
        """[B, K, H, U] -> actions [B, K, H, A]."""


@dataclasses.dataclass
class RotationSpace:
    """Relative rotations as quaternions (x, y, z, w), normalised with w >= 0; extra dims (hue shifts) in
    [-0.5, 0.5]. The initial Gaussian N(0, I) on the quaternion is the uniform distribution on SO(3)."""
    batch: int
    action_dim: int = 4
    device: torch.device | str = "cpu"

    def init(self, horizon: int) -> tuple[Tensor, Tensor]:
        mean = torch.zeros(self.batch, horizon, self.action_dim, device=self.device)
        std = torch.full_like(mean, 0.25)
        std[..., :4] = 1.0
        return mean, std

    def project(self, u: Tensor) -> Tensor:
        q = rt.canonical_quat(rt.normalize_quat(u[..., :4]))
        return torch.cat([q, u[..., 4:].clamp(-0.5, 0.5)], -1)

    def to_actions(self, u: Tensor) -> Tensor:
        return u


@dataclasses.dataclass
class FixationSpace:
    """Absolute fixations (row, col) in scene fractions, kept inside the scene; actions are the moves between
    consecutive fixations, the first from ``start`` [B, 2]. Planning targets rather than moves keeps every
    candidate inside the scene, where the model was trained."""
    start: Tensor
    scene_size: int

    def init(self, horizon: int) -> tuple[Tensor, Tensor]:
        mean = torch.full((len(self.start), horizon, 2), 0.5, device=self.start.device)
        return mean, torch.full_like(mean, 0.3)

    def project(self, u: Tensor) -> Tensor:
        return u.clamp(0.0, (self.scene_size - 1) / self.scene_size)

    def to_actions(self, u: Tensor) -> Tensor:
        first = repeat(self.start, "b a -> b k 1 a", k=u.shape[1])
        return u - torch.cat([first, u[:, :, :-1]], 2)


@dataclasses.dataclass
class BoxSpace:
    """Any other world: actions clipped to the box [low, high]."""
    batch: int
    low: Tensor
    high: Tensor

    def init(self, horizon: int) -> tuple[Tensor, Tensor]:
        mean = repeat((self.low + self.high) / 2, "a -> b h a", b=self.batch, h=horizon).clone()
        return mean, repeat((self.high - self.low) / 4, "a -> b h a", b=self.batch, h=horizon).clone()

    def project(self, u: Tensor) -> Tensor:
        return torch.minimum(torch.maximum(u, self.low), self.high)

    def to_actions(self, u: Tensor) -> Tensor:
        return u


def space_for(world: World, state: State) -> PlanSpace:
    """The planning space that fits ``world``, for the episodes of ``state``."""
    n = len(state["params"])
    if isinstance(world, Saccades):
        return FixationSpace(state["params"].float(), world.options.scene_size)
    rot = world.factors.get("rotation")
    if rot is not None and (rot.start, rot.stop) == (0, 4):
        return RotationSpace(n, world.action_dim, world.device)
    return BoxSpace(n, world.action_low, world.action_high)


# -- the world model's cost ---------------------------------------------------------------------------------------

class LatentGoalCost:
    """cost(actions) = 1 − cos(ẑ after the actions, f̄(goal)) for a seq-JEPA-like model (encode, encode_target,
    embed_actions, aggregate, predict). ``views`` uint8 [B, M, 3, H, W] seen so far, ``actions`` [B, M-1, A]
    between them, ``goal`` uint8 [B, 3, H, W]. Put the model in eval mode first (BatchNorm, dropout)."""

    def __init__(self, model: nn.Module, views: Tensor, actions: Tensor, goal: Tensor):
        if not model.predicts or model.action_embed is None:
            raise ConfigError("planning needs an action-conditioned world model (seq-JEPA with model.act_cond "
                             "both or predictor); this model has no action pathway into its predictor")
        self.model = model
        with torch.no_grad():
            self.z = model.encode(views)                                       # [B, M, D]
            b, m = self.z.shape[:2]
            self.e = (model.embed_actions(actions[:, :m - 1]) if m > 1
                      else self.z.new_zeros(b, 0, model.act_dim))              # [B, M-1, act]
            self.z_agg = model.aggregate(self.z, self.e)                       # the same for every candidate
            self.target = F.normalize(model.encode_target(goal[:, None])[:, 0].float(), dim=-1)

    def predict(self, actions: Tensor) -> Tensor:
        """Predicted embedding after the H actions [B, K, H, A] -> [B, K, D] (autoregressive for H > 1)."""
        b, k, h = actions.shape[:3]
        e_new = self.model.embed_actions(rearrange(actions, "b k h a -> (b k) h a"))   # [(B K), H, act]
        z_hat = self.model.predict(repeat(self.z_agg, "b d -> (b k) d", k=k), e_new[:, 0])
        if h > 1:
            z, e = repeat(self.z, "b m d -> (b k) m d", k=k), repeat(self.e, "b m c -> (b k) m c", k=k)
            for t in range(1, h):
                # The prediction becomes the next observation token, carrying the action that led to it.
                z, e = torch.cat([z, z_hat[:, None]], 1), torch.cat([e, e_new[:, t - 1:t]], 1)
                z_hat = self.model.predict(self.model.aggregate(z, e), e_new[:, t])
        return rearrange(z_hat, "(b k) d -> b k d", b=b)

    def __call__(self, actions: Tensor) -> Tensor:
        z_hat = F.normalize(self.predict(actions).float(), dim=-1)
        return 1.0 - torch.einsum("bkd,bd->bk", z_hat, self.target)


# -- the planners -------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Plan:
    """The best plan found per episode: variables u [B, H, U], actions [B, H, A], cost [B]."""
    u: Tensor
    actions: Tensor
    cost: Tensor
    evaluations: int   # candidate evaluations of the cost per episode (the search budget)


def _keep_best(best: Plan | None, u: Tensor, c: Tensor, space: PlanSpace, evaluations: int) -> Plan:
    """Merge this round's candidates u [B, K, H, U] with costs c [B, K] into the best plan so far."""
    i = c.argmin(1)
    rows = torch.arange(len(c), device=c.device)
    u_best, c_best = u[rows, i], c[rows, i]
    if best is not None:
        better = c_best < best.cost
        u_best = torch.where(better[:, None, None], u_best, best.u)
        c_best = torch.where(better, c_best, best.cost)
    return Plan(u_best, space.to_actions(u_best[:, None])[:, 0], c_best, evaluations)


@torch.no_grad()
def cem(cost: Cost, space: PlanSpace, horizon: int, *, candidates: int = 64, iterations: int = 4,
        elite_frac: float = 0.125, min_std: float = 0.01, generator: torch.Generator, tick: Tick | None = None
        ) -> Plan:
    """The cross-entropy method: ``iterations`` rounds of ``candidates`` samples from a diagonal Gaussian over
    u, refitted to the ``elite_frac`` best each round (std floored at ``min_std``); ``tick`` after each round."""
    mean, std = space.init(horizon)
    n_elite = max(2, round(elite_frac * candidates))
    best = None
    for it in range(iterations):
        noise = torch.randn(mean.shape[0], candidates, *mean.shape[1:], generator=generator, device=mean.device)
        u = space.project(mean[:, None] + std[:, None] * noise)
        c = cost(space.to_actions(u)).float()
        best = _keep_best(best, u, c, space, (it + 1) * candidates)
        idx = c.topk(n_elite, dim=1, largest=False).indices
        elite = u.gather(1, idx[:, :, None, None].expand(-1, -1, *u.shape[2:]))
        mean, std = elite.mean(1), elite.std(1).clamp_min(min_std)
        if tick is not None:
            tick(f"CEM iteration {it + 1}/{iterations}")
    return best


def gradient_plan(cost: Cost, space: PlanSpace, horizon: int, *, restarts: int = 8, steps: int = 30,
                  lr: float = 0.05, generator: torch.Generator, tick: Tick | None = None) -> Plan:
    """Adam on u through the cost from ``restarts`` random starts (drawn from the space's initial Gaussian);
    after every step u is projected back onto the action space. Gradients flow to u only. ``tick`` after each
    step."""
    mean, std = space.init(horizon)
    noise = torch.randn(mean.shape[0], restarts, *mean.shape[1:], generator=generator, device=mean.device)
    u = space.project(mean[:, None] + std[:, None] * noise).detach().requires_grad_(True)
    opt = torch.optim.Adam([u], lr=lr)
    best = None
    for step in range(steps + 1):
        with torch.enable_grad():
            c = cost(space.to_actions(space.project(u))).float()
            grad = torch.autograd.grad(c.sum(), u)[0] if step < steps else None
        with torch.no_grad():
            best = _keep_best(best, space.project(u).detach(), c.detach(), space, (step + 1) * restarts)
            if grad is not None:
                u.grad = grad
                opt.step()
                u.copy_(space.project(u))
        if tick is not None:
            tick(f"step {step}/{steps}")
    return best


# -- acting and scoring in the world ------------------------------------------------------------------------------

def execute(world: World, state: State, actions: Tensor, generator: torch.Generator) -> State:
    """Apply the plan's actions [B, H, A] one after the other; returns the final state."""
    for t in range(actions.shape[1]):
        state = world.step(state, actions[:, t].to(world.device), generator)
    return state


def goal_error(world: World, params: Tensor, goal: Tensor) -> tuple[Tensor, str]:
    """The remaining error to the goal per episode and its unit: the geodesic angle between the rotations
    (degrees) for rotating worlds, the distance between the fixations (scene pixels) for saccades."""
    if isinstance(world, Saccades):
        return (params - goal).norm(dim=-1) * world.options.scene_size, "pixels"
    rot = world.factors.get("rotation")
    if rot is None or (rot.start, rot.stop) != (0, 4):
        raise ValueError(f"goal_error: world {type(world).__name__} has neither rotations nor fixations")
    q = world.relative(params, goal)[..., :4]
    return torch.rad2deg(2 * torch.atan2(q[..., :3].norm(dim=-1), q[..., 3].abs())), "degrees"


def expand_state(state: State, k: int) -> State:
    """Each episode's state repeated k times (episode-major): the starting point of k candidates."""
    return {key: v.repeat_interleave(k, 0) for key, v in state.items()}


def world_cost(world: World, state: State, goal_params: Tensor, goal_view: Tensor | None,
               generator: torch.Generator, tick: Tick | None = None) -> Cost:
    """The oracle's cost in the true world: execute each candidate from ``state``; then the remaining error to
    ``goal_params`` (true parameters), or with ``goal_view`` the mean squared pixel difference of the view
    reached (rendering every candidate, ``RENDER_CHUNK`` at a time, with ``tick`` after each chunk: minutes for
    thousands of views on a CPU)."""

    def cost(actions: Tensor) -> Tensor:
        b, k = actions.shape[:2]
        reached = execute(world, expand_state(state, k), rearrange(actions, "b k h a -> (b k) h a"), generator)
        if goal_view is None:
            err = goal_error(world, reached["params"], goal_params.repeat_interleave(k, 0))[0]
        else:
            goals, n, parts = goal_view.repeat_interleave(k, 0).float(), b * k, []
            for s in range(0, n, RENDER_CHUNK):
                views = world.render({key: v[s:s + RENDER_CHUNK] for key, v in reached.items()}).float()
                parts.append((views - goals[s:s + RENDER_CHUNK]).pow(2).flatten(1).mean(1))
                if tick is not None:
                    tick(f"rendered {min(n, s + RENDER_CHUNK)}/{n} candidate views")
            err = torch.cat(parts)
        return rearrange(err.to(actions.device), "(b k) -> b k", b=b)

    return cost

