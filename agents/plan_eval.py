"""``run.py plan``: goal-reaching with the learned world model and active vision, on a checkpoint.

Goal reaching (every world with rotations or fixations), on the test split, for each horizon H: an episode shows
the model M views (M = the run's train.seq_len) under the random policy; the goal is the view H random steps
further on (the model never sees those steps). Each method then executes H actions open loop from the last seen
view, and the remaining error to the goal is measured: the geodesic angle to the goal rotation (degrees) or the
distance to the goal fixation (scene pixels). Methods, all from the same episodes and goals:

    start          no move: the error before acting
    random         H actions of the world's random policy
    cem, gradient  planned with the world model (agents.planning), cost 1 − cos(ẑ_H, f̄(goal))
    oracle_params  CEM with the same budget in the true world, cost = the true remaining error
    oracle_pixels  CEM with the same budget in the true world, cost = pixel MSE of the rendered view to the goal

Active vision (saccade worlds): a linear probe on z_agg after k glimpses, trained on saliency sequences of the
train split, classifies test-split sequences chosen by each policy (saliency, uniform, the world model's
``active_change`` and ``active_disagreement``); the same scenes and first fixation for every policy.

Writes ``plan.json`` (every number with its protocol) and ``plan.md`` next to the checkpoint.

>>> results = plan_checkpoint("runs/NAME/latest.pt", PlanConfig(episodes=16))   # doctest: +SKIP
>>> results["metrics"]["goal/H=1/cem"]["value"]                                  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

import envs
from envs.base import State, World
from envs.saccades import PATH_LEN, Saccades
from envs.sequences import rollout
from eval.common import has_predictor
from eval.features import collect
from eval.probes import fit_classifier

from .active_vision import ActiveVisionPolicy
from .planning import LatentGoalCost, PlanSpace, cem, execute, goal_error, gradient_plan, space_for, world_cost
from .saliency import SaliencyPolicy
from .uniform import UniformPolicy


@dataclasses.dataclass
class PlanConfig:
    """The protocol of ``run.py plan``; each number in plan.json carries the fields it used."""
    episodes: int = 64            # goal-reaching episodes per horizon
    horizons: tuple[int, ...] = (1, 3)
    candidates: int = 64          # CEM samples per iteration (model and oracles)
    iterations: int = 4           # CEM iterations
    elite_frac: float = 0.125
    restarts: int = 8             # gradient planner: random starts ...
    grad_steps: int = 30          # ... and Adam steps each
    grad_lr: float = 0.05
    seed: int = 0
    glimpses: tuple[int, ...] = (1, 2, 4, 6)
    probe_sequences: int = 1000   # saliency train sequences for the active-vision probe
    active_sequences: int = 256   # test sequences per policy
    probe_epochs: int = 100
    active_candidates: int = 32


def load_model(path: Path, *, require_predictor: bool = True) -> tuple[nn.Module, object, dict]:
    """The trained model of a checkpoint in eval mode, frozen, with its run config and the raw checkpoint; a model
    without an action-conditioned predictor (a baseline) is refused unless ``require_predictor`` is off."""
    from eval.from_checkpoint import checkpoint_network
    from seqjepa import checkpoint
    from seqjepa.config import Config, from_dict
    from seqjepa.train import resolve_device

    ckpt = checkpoint.load(path)
    cfg = from_dict(Config, ckpt["config"])
    model = checkpoint_network(ckpt, cfg, trained=True)
    if require_predictor and not has_predictor(model):
        raise ValueError(f"checkpoint {path} is a {ckpt.get('method')!r} model without a predictor; planning "
                         f"(and benchmarks/action_use.py) need a seq-JEPA world model")
    model = model.to(resolve_device(cfg.train.device)).eval().requires_grad_(False)
    return model, cfg, ckpt


def _generator(world: World, seed: int) -> torch.Generator:
    return torch.Generator(device=world.device).manual_seed(seed)


# -- goal reaching ------------------------------------------------------------------------------------------------

def episode(world: World, n: int, m: int, h: int, g: torch.Generator) -> dict:
    """M views under the random policy (and the actions between them), the last state, and the goal H random
    steps further on."""
    state = world.reset(n, g)
    views, params = [world.render(state)], [state["params"]]
    for _ in range(m - 1):
        state = world.step(state, world.sample_action(state, g), g)
        views.append(world.render(state))
        params.append(state["params"])
    p = torch.stack(params, 1)
    goal, true_plan = state, []
    for _ in range(h):
        true_plan.append(world.sample_action(goal, g))
        goal = world.step(goal, true_plan[-1], g)
    return {"state": state, "views": torch.stack(views, 1), "actions": world.relative(p[:, :-1], p[:, 1:]),
            "goal_view": world.render(goal), "goal_params": goal["params"], "true_plan": torch.stack(true_plan, 1)}


def _random_actions(world: World, state: State, h: int, g: torch.Generator) -> Tensor:
    acts = []
    for _ in range(h):
        acts.append(world.sample_action(state, g))
        state = world.step(state, acts[-1], g)
    return torch.stack(acts, 1)


def goal_reaching(model: nn.Module, world: World, m: int, pc: PlanConfig, log: Callable[[str], None]) -> dict:
    """{"goal/H=h/method": entry} for every horizon and method (see the module doc)."""
    out = {}
    device = next(model.parameters()).device
    for h in pc.horizons:
        ep = episode(world, pc.episodes, m, h, _generator(world, pc.seed * 7919 + h))
        state, goal_params = ep["state"], ep["goal_params"]
        latent = LatentGoalCost(model, ep["views"].to(device), ep["actions"].to(device), ep["goal_view"].to(device))
        gen = lambda: torch.Generator(device=device).manual_seed(pc.seed + 1)  # noqa: E731  same draws per method
        space = space_for(world, state)
        cem_kw = dict(candidates=pc.candidates, iterations=pc.iterations, elite_frac=pc.elite_frac)
        methods = {
            "start": lambda: None,
            "random": lambda: _random_actions(world, state, h, _generator(world, pc.seed + 2)),
            "cem": lambda: cem(latent, space, h, generator=gen(), **cem_kw).actions,
            "gradient": lambda: gradient_plan(latent, space, h, restarts=pc.restarts, steps=pc.grad_steps,
                                              lr=pc.grad_lr, generator=gen()).actions,
            "oracle_params": lambda: cem(world_cost(world, state, goal_params, None, _generator(world, pc.seed + 3)),
                                         space, h, generator=gen(), **cem_kw).actions,
            "oracle_pixels": lambda: cem(world_cost(world, state, goal_params, ep["goal_view"],
                                                    _generator(world, pc.seed + 3)),
                                         space, h, generator=gen(), **cem_kw).actions,
        }
        out[f"goal/H={h}/true_plan_rank"] = true_plan_rank(latent, space, ep["true_plan"], h, pc, gen())
        for name, plan in methods.items():
            t0 = time.time()
            actions = plan()
            reached = state if actions is None else execute(world, state, actions, _generator(world, pc.seed + 4))
            err, unit = goal_error(world, reached["params"], goal_params)
            with torch.no_grad():  # how close the view reached is to the goal in the model's target space
                f = model.encode_target(torch.stack([world.render(reached), ep["goal_view"]], 1).to(device))
                latent_cos = torch.cosine_similarity(f[:, 0].float(), f[:, 1].float(), dim=-1)
            out[f"goal/H={h}/{name}"] = {
                "value": float(err.mean()), "median": float(err.median()), "std": float(err.std()),
                "unit": unit, "latent_cos": float(latent_cos.mean()), "seconds": round(time.time() - t0, 2),
                "protocol": _goal_protocol(name, h, m, pc)}
            log(f"goal H={h} {name:14s} error {float(err.mean()):7.2f} {unit} (median {float(err.median()):.2f}),"
                f" latent cos {float(latent_cos.mean()):.3f}, {time.time() - t0:.1f} s")
    return out


@torch.no_grad()
def true_plan_rank(latent: LatentGoalCost, space: PlanSpace, true_plan: Tensor, h: int, pc: PlanConfig,
                   g: torch.Generator) -> dict:
    """Does the model prefer the actions that really led to the goal? The share (%) of random plans (the
    planners' initial distribution) the model scores better than the true plan: 50 = no idea, 0 = perfect."""
    mean, std = space.init(h)
    noise = torch.randn(mean.shape[0], pc.candidates, *mean.shape[1:], generator=g, device=mean.device)
    rivals = latent(space.to_actions(space.project(mean[:, None] + std[:, None] * noise)))
    mine = latent(true_plan[:, None].to(rivals.device))
    share = (rivals < mine).float().mean(1) * 100
    return {"value": float(share.mean()), "median": float(share.median()), "unit": "% of random plans ranked "
            "better than the true plan by the model", "protocol": {"episodes": pc.episodes, "horizon": h,
            "random_plans": pc.candidates, "seed": pc.seed, "cost": "1 - cos(predicted, goal target embedding)",
            "true_plan": "the random-policy actions that produced the goal"}}


def _goal_protocol(name: str, h: int, m: int, pc: PlanConfig) -> dict:
    p = {"episodes": pc.episodes, "horizon": h, "context_views": m, "seed": pc.seed, "split": "test",
         "goal": f"the view {h} random-policy steps after the last seen view",
         "execution": "open loop: the whole plan, then the error to the goal params"}
    if name in ("cem", "oracle_params", "oracle_pixels"):
        p |= {"planner": "cem", "candidates": pc.candidates, "iterations": pc.iterations,
              "elite_frac": pc.elite_frac}
    if name == "gradient":
        p |= {"planner": "gradient (Adam, projected)", "restarts": pc.restarts, "iterations": pc.grad_steps,
              "lr": pc.grad_lr}
    p["cost"] = {"cem": "1 - cos(predicted embedding after H steps, target embedding of the goal)",
                 "gradient": "1 - cos(predicted embedding after H steps, target embedding of the goal)",
                 "oracle_params": "true remaining error (true world)",
                 "oracle_pixels": "mean squared pixel difference of the rendered view to the goal view (true world)",
                 }.get(name, "none")
    return p


# -- active vision ------------------------------------------------------------------------------------------------

def glimpse_features(model: nn.Module, world: World, policy, n: int, ks: list[int], seed: int,
                     chunk: int = 128) -> dict:
    """z_agg after each k in ``ks`` glimpses chosen by ``policy``, for ``n`` sequences; per-chunk generators, so
    every policy sees the same scenes and first fixations."""
    episodes = torch.randint(0, world.num_episodes, (n,), generator=torch.Generator().manual_seed(seed))
    parts = []
    for i, start in enumerate(range(0, n, chunk)):
        eps = episodes[start:start + chunk].to(world.device)
        batch = rollout(world, policy, len(eps), max(ks), _generator(world, seed + 1 + i), episodes=eps)
        parts.append(collect(model, [batch], m_val=ks, device=next(model.parameters()).device))
    return {"z_agg": {k: torch.cat([p["z_agg"][k] for p in parts]) for k in ks},
            "labels": torch.cat([p["labels"] for p in parts])}


def active_vision(model: nn.Module, world_train: Saccades, world_test: Saccades, pc: PlanConfig,
                  log: Callable[[str], None]) -> dict:
    """{"active/k=k/policy": top-1 %} of a linear probe trained on saliency sequences (see the module doc)."""
    ks = sorted({k for k in pc.glimpses if 1 <= k <= PATH_LEN})
    train = glimpse_features(model, world_train, SaliencyPolicy(), pc.probe_sequences, ks, pc.seed)
    policies = {"saliency": SaliencyPolicy(), "uniform": UniformPolicy(),
                "active_change": ActiveVisionPolicy(model, candidates=pc.active_candidates, score="change"),
                "active_disagreement": ActiveVisionPolicy(model, candidates=pc.active_candidates,
                                                          score="disagreement")}
    out = {}
    for name, policy in policies.items():
        t0 = time.time()
        test = glimpse_features(model, world_test, policy, pc.active_sequences, ks, pc.seed + 10_000)
        for k in ks:
            acc = fit_classifier(train["z_agg"][k], train["labels"], test["z_agg"][k], test["labels"],
                                 num_classes=world_test.num_classes, epochs=pc.probe_epochs, lr=1e-3,
                                 batch_size=256, seed=pc.seed)
            out[f"active/k={k}/{name}"] = {
                "value": acc, "unit": "top-1 %", "seconds": round(time.time() - t0, 2),
                "protocol": {"probe": "linear on z_agg (standardised), Adam lr 1e-3, batch 256",
                             "probe_epochs": pc.probe_epochs, "probe_train": f"{pc.probe_sequences} saliency "
                             f"sequences of the train split", "test_sequences": pc.active_sequences, "glimpses": k,
                             "candidates": pc.active_candidates if name.startswith("active") else None,
                             "chance": 100 / world_test.num_classes, "seed": pc.seed}}
        log(f"active vision {name:20s} " + " ".join(f"k={k}: {out[f'active/k={k}/{name}']['value']:.1f}%"
                                                    for k in ks) + f" ({time.time() - t0:.0f} s)")
    return out


# -- the command --------------------------------------------------------------------------------------------------

def plan_checkpoint(path: str | Path, pc: PlanConfig | None = None, log: Callable[[str], None] = print) -> dict:
    """Run the planning evaluations on the checkpoint at ``path``; write plan.json and plan.md next to it."""
    from seqjepa.train import build_world

    path, pc = Path(path), pc or PlanConfig()
    model, cfg, ckpt = load_model(path)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = next(model.parameters()).device
    world = build_world(cfg, device, "test")
    torch.manual_seed(pc.seed)
    t0 = time.time()
    metrics = goal_reaching(model, world, cfg.train.seq_len, pc, log)
    notes = {}
    if isinstance(world, Saccades):
        metrics |= active_vision(model, build_world(cfg, device, "train"), world, pc, log)
    else:
        notes["active_vision"] = "skipped: needs a saccade world"
    results = {"checkpoint": str(path), "world": envs.world_class(cfg.world.env)[0], "step": ckpt["step"],
               "config": dataclasses.asdict(pc), "seconds": round(time.time() - t0, 1), "metrics": metrics,
               "notes": notes}
    with open(path.parent / "plan.json", "w") as fh:
        json.dump(results, fh, indent=2)
    (path.parent / "plan.md").write_text(format_report(results))
    return results


def format_report(results: dict) -> str:
    """plan.md: a goal-reaching table per horizon and the active-vision table."""
    m, lines = results["metrics"], [f"# Planning with {results['checkpoint']} (step {results['step']}, "
                                    f"{results['world']})", ""]
    for h in results["config"]["horizons"]:
        rows = {k.split("/")[-1]: v for k, v in m.items() if k.startswith(f"goal/H={h}/")}
        rank = rows.pop("true_plan_rank", None)
        if not rows:
            continue
        unit = next(iter(rows.values()))["unit"]
        lines += [f"## Goal reaching, H = {h} ({results['config']['episodes']} episodes; error in {unit})", "",
                  "| method | mean error | median | latent cos to goal | seconds |", "|---|---|---|---|---|"]
        lines += [f"| {k} | {v['value']:.2f} | {v['median']:.2f} | {v['latent_cos']:.3f} | {v['seconds']:.1f} |"
                  for k, v in rows.items()] + [""]
        if rank is not None:
            lines += [f"The model scores {rank['value']:.1f}% of random plans better than the true plan "
                      f"(50 = no idea, 0 = perfect).", ""]
    active = {k: v for k, v in m.items() if k.startswith("active/")}
    if active:
        ks = sorted({int(k.split("/")[1][2:]) for k in active})
        names = list(dict.fromkeys(k.split("/")[2] for k in active))
        chance = next(iter(active.values()))["protocol"]["chance"]
        lines += [f"## Active vision: linear-probe top-1 (%) on z_agg after k glimpses (chance {chance:.1f}%)",
                  "", "| policy | " + " | ".join(f"k={k}" for k in ks) + " |", "|---" * (len(ks) + 1) + "|"]
        lines += [f"| {n} | " + " | ".join(f"{m[f'active/k={k}/{n}']['value']:.1f}" for k in ks) + " |"
                  for n in names] + [""]
    lines += [f"- {k}: {v}" for k, v in results["notes"].items()]
    lines += ["", "Protocol: see plan.json (every number carries its own)."]
    return "\n".join(lines) + "\n"
