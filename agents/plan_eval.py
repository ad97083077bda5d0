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

Writes ``plan.json`` (every number with its protocol) and ``plan.md`` next to the checkpoint; plan.md says for each
horizon, in words, whether planning with the model ends nearer the goal than not moving (when it does not, the
model has not learned what the actions do). The searches report their progress (the pixel oracle renders every
candidate: minutes on a CPU).

>>> results = plan_checkpoint("runs/NAME/latest.pt", PlanConfig(episodes=16))   # doctest: +SKIP
>>> results["metrics"]["goal/H=1/cem"]["value"]                                  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

import envs
from envs.base import State, World
from envs.saccades import PATH_LEN, Saccades
from envs.sequences import rollout
from eval.features import collect
from eval.probes import fit_classifier
from seqjepa.progress import Progress, wants_bar

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


def load_model(path: Path, *, require_predictor: bool = True, overrides: Sequence[str] = (),
               trusted: bool = False) -> tuple[nn.Module, object, dict]:
    """The trained model of a checkpoint in eval mode, frozen, with its run config and the raw checkpoint; a model
    without an action-conditioned predictor (a baseline) is refused unless ``require_predictor`` is off.
    The checkpoint is checked and confined as ``run.py eval`` does (``eval.from_checkpoint.open_checkpoint``:
    ``overrides`` on top of its config; ``trusted`` for a checkpoint this process wrote)."""
    from eval.from_checkpoint import checkpoint_network, open_checkpoint
    from seqjepa.checkpoint import CheckpointError
    from seqjepa.device import resolve_device

    ckpt, cfg = open_checkpoint(path, overrides, trusted=trusted)
    model = checkpoint_network(ckpt, cfg, trained=True)
    if require_predictor and not model.predicts:
        raise CheckpointError(f"checkpoint {path} is a {ckpt.get('method')!r} model without a predictor; planning "
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


def goal_reaching(model: nn.Module, world: World, m: int, pc: PlanConfig, log: Callable[[str], None],
                  bar: bool = False) -> dict:
    """{"goal/H=h/method": entry} for every horizon and method (see the module doc); each method's search shows
    its progress (a tqdm bar with ``bar``, else a line through ``log`` every ten seconds)."""
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
            "start": lambda tick: None,
            "random": lambda tick: _random_actions(world, state, h, _generator(world, pc.seed + 2)),
            "cem": lambda tick: cem(latent, space, h, generator=gen(), tick=tick, **cem_kw).actions,
            "gradient": lambda tick: gradient_plan(latent, space, h, restarts=pc.restarts, steps=pc.grad_steps,
                                                   lr=pc.grad_lr, generator=gen(), tick=tick).actions,
            "oracle_params": lambda tick: cem(world_cost(world, state, goal_params, None,
                                                         _generator(world, pc.seed + 3)),
                                              space, h, generator=gen(), tick=tick, **cem_kw).actions,
            # The slow one (it renders every candidate): its render chunks report too, not only its CEM rounds.
            "oracle_pixels": lambda tick: cem(world_cost(world, state, goal_params, ep["goal_view"],
                                                         _generator(world, pc.seed + 3),
                                                         tick=lambda note: tick(note, 0)),
                                              space, h, generator=gen(), tick=tick, **cem_kw).actions,
        }
        rounds = {"gradient": (pc.grad_steps + 1, "steps")} | {
            k: (pc.iterations, "CEM rounds") for k in ("cem", "oracle_params", "oracle_pixels")}
        out[f"goal/H={h}/true_plan_rank"] = true_plan_rank(latent, space, ep["true_plan"], h, pc, gen())
        for name, plan in methods.items():
            t0 = time.time()
            total, counted = rounds.get(name, (None, "steps"))
            with Progress(f"plan: goal H={h} {name}", total=total, unit=counted, log=log, bar=bar) as p:
                actions = plan(lambda note, n=1: p.update(n, note))
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
                     chunk: int = 128, tick: Callable[[], None] | None = None) -> dict:
    """z_agg after each k in ``ks`` glimpses chosen by ``policy``, for ``n`` sequences; per-chunk generators, so
    every policy sees the same scenes and first fixations. ``tick`` after each chunk."""
    episodes = torch.randint(0, world.num_episodes, (n,), generator=torch.Generator().manual_seed(seed))
    parts = []
    for i, start in enumerate(range(0, n, chunk)):
        eps = episodes[start:start + chunk].to(world.device)
        batch = rollout(world, policy, len(eps), max(ks), _generator(world, seed + 1 + i), episodes=eps)
        parts.append(collect(model, [batch], m_val=ks, device=next(model.parameters()).device))
        if tick is not None:
            tick()
    return {"z_agg": {k: torch.cat([p["z_agg"][k] for p in parts]) for k in ks},
            "labels": torch.cat([p["labels"] for p in parts])}


def active_vision(model: nn.Module, world_train: Saccades, world_test: Saccades, pc: PlanConfig,
                  log: Callable[[str], None], bar: bool = False) -> dict:
    """{"active/k=k/policy": top-1 %} of a linear probe trained on saliency sequences (see the module doc); the
    rollouts show their progress (see :func:`goal_reaching`)."""
    ks = sorted({k for k in pc.glimpses if 1 <= k <= PATH_LEN})
    chunk = 128

    def features(world: World, policy, n: int, seed: int, what: str) -> dict:
        with Progress(f"plan: active vision, {what}", total=-(-n // chunk), unit="batches", log=log, bar=bar) as p:
            return glimpse_features(model, world, policy, n, ks, seed, chunk, tick=p.update)

    train = features(world_train, SaliencyPolicy(), pc.probe_sequences, pc.seed, "saliency probe sequences")
    policies = {"saliency": SaliencyPolicy(), "uniform": UniformPolicy(),
                "active_change": ActiveVisionPolicy(model, candidates=pc.active_candidates, score="change"),
                "active_disagreement": ActiveVisionPolicy(model, candidates=pc.active_candidates,
                                                          score="disagreement")}
    out = {}
    for name, policy in policies.items():
        t0 = time.time()
        test = features(world_test, policy, pc.active_sequences, pc.seed + 10_000, f"{name} test sequences")
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

def plan_checkpoint(path: str | Path, pc: PlanConfig | None = None, log: Callable[[str], None] = print, *,
                    overrides: Sequence[str] = (), trusted: bool = False) -> dict:
    """Run the planning evaluations on the checkpoint at ``path``; write plan.json and plan.md next to it.

    The checkpoint is read as ``run.py eval`` reads it (:func:`load_model`): ``overrides`` on top of its config,
    no plug-in module imported on its word unless ``overrides`` set ``world.env`` or it is ``trusted``.
    """
    from seqjepa.data import build_world
    from seqjepa.files import atomic_write, write_json

    path, pc = Path(path), pc or PlanConfig()
    model, cfg, ckpt = load_model(path, overrides=overrides, trusted=trusted)
    bar = wants_bar(cfg.train.progress)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = next(model.parameters()).device
    world = build_world(cfg, device, "test")
    torch.manual_seed(pc.seed)
    t0 = time.time()
    metrics = goal_reaching(model, world, cfg.train.seq_len, pc, log, bar)
    notes = {}
    if isinstance(world, Saccades):
        metrics |= active_vision(model, build_world(cfg, device, "train"), world, pc, log, bar)
    else:
        notes["active_vision"] = "skipped: needs a saccade world"
    results = {"checkpoint": str(path), "world": envs.world_class(cfg.world.env)[0], "step": ckpt["step"],
               "config": dataclasses.asdict(pc), "seconds": round(time.time() - t0, 1), "metrics": metrics,
               "notes": notes}
    write_json(path.parent / "plan.json", results)
    with atomic_write(path.parent / "plan.md") as fh:
        fh.write(format_report(results))
    return results


ROW_LABELS = {"start": "start (no move)"}


def goal_verdict(rows: dict[str, dict], unit: str) -> str:
    """One plain paragraph on what the goal-reaching numbers of one horizon say about the model: planning with it
    must end nearer the goal than not moving, where the oracle (true costs, same search budget) shows the search
    can."""
    start, oracle = rows.get("start"), rows.get("oracle_params")
    planners = {k: rows[k]["value"] for k in ("cem", "gradient") if k in rows}
    if start is None or not planners:
        return ""
    moved = ", ".join(f"{k} {v:.1f}" for k, v in planners.items())
    if oracle is not None and oracle["value"] >= start["value"]:
        return (f"Even the oracle (true costs, the same search budget) ends no nearer the goal than not moving "
                f"({oracle['value']:.1f} vs {start['value']:.1f} {unit}): the search budget is too small to judge the "
                f"model; raise --candidates and --iterations.")
    if min(planners.values()) >= start["value"]:
        random = f"; random actions: {rows['random']['value']:.1f}" if "random" in rows else ""
        searched = (f", while the oracle with the same search reaches {oracle['value']:.1f}" if oracle is not None
                    else "")
        return (f"**The model has not learned what the actions do**: planning with it ends farther from the goal "
                f"than not moving ({moved} vs {start['value']:.1f} {unit} without moving{random}){searched}. Its "
                f"predictions do not follow the action, so its plans are guesses; `run.py eval --suite action_use` "
                f"measures this directly (a ratio near 1 means the predictor ignores the action).")
    return (f"Planning with the model ends nearer the goal than not moving ({moved} vs {start['value']:.1f} {unit})"
            + (f"; the oracle with the same search reaches {oracle['value']:.1f}." if oracle is not None else "."))


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
        lines += [f"| {ROW_LABELS.get(k, k)} | {v['value']:.2f} | {v['median']:.2f} | {v['latent_cos']:.3f} | "
                  f"{v['seconds']:.1f} |" for k, v in rows.items()] + [""]
        verdict = goal_verdict(rows, unit)
        if verdict:
            lines += [verdict, ""]
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
