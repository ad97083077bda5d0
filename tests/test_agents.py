"""Agents: every policy on every world it fits; planners on toy problems with a known model; run.py plan."""
import json
import math
import subprocess
import sys

import pytest
import torch
from einops import rearrange

import envs
from agents import AGENTS, check_agent, make_agent
from agents.planning import LatentGoalCost, cem, execute, goal_error, gradient_plan, space_for
from envs import rotations as rt
from conftest import ROOT

WORLD_OPTIONS = {
    "seqjepa/RotatingObjects-v0": dict(image_size=16, num_classes=2, instances=3),
    "seqjepa/Saccades-v0": dict(scene_size=48, image_size=16, num_classes=2, per_class=2),
    "seqjepa/Augmentations-v0": dict(image_size=16, num_classes=3, per_class=4),
}
FITS = {"random": list(WORLD_OPTIONS), "saliency": ["seqjepa/Saccades-v0"],
        "uniform": ["seqjepa/RotatingObjects-v0", "seqjepa/Saccades-v0"],
        "sweep": ["seqjepa/RotatingObjects-v0", "seqjepa/Saccades-v0"]}
PAIRS = [(agent, world) for agent, worlds in FITS.items() for world in worlds]
MISFITS = [(agent, world) for agent in FITS for world in WORLD_OPTIONS if world not in FITS[agent]]


@pytest.fixture(scope="module")
def worlds():
    return {k: envs.make_world(k, **v) for k, v in WORLD_OPTIONS.items()}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_every_agent_is_covered():
    assert set(FITS) == set(AGENTS)


@pytest.mark.parametrize("agent, world_id", PAIRS)
@pytest.mark.parametrize("n", [1, 5])
def test_policy_shapes_bounds_determinism(agent, world_id, n, worlds):
    world = worlds[world_id]
    state = world.reset(n, gen(1))
    actions = [make_agent(agent)(world, state, gen(2)) for _ in range(2)]
    a = actions[0]
    assert a.shape == (n, world.action_dim) and a.device == world.device and a.dtype == torch.float32
    assert torch.isfinite(a).all() and (a >= world.action_low).all() and (a <= world.action_high).all()
    assert torch.equal(actions[0], actions[1]), "same state and seed must give the same action"
    new = world.step(state, a, gen(3))
    if world_id == "seqjepa/Saccades-v0":  # fixations land inside the scene, exactly where the policy aimed
        target = state["params"] + a
        assert ((target >= 0) & (target < 1)).all() and torch.allclose(new["params"], target, atol=1e-5)
    if world_id == "seqjepa/RotatingObjects-v0":
        assert torch.allclose(a[:, :4].norm(dim=1), torch.ones(n), atol=1e-5) and (a[:, 3] >= 0).all()


@pytest.mark.parametrize("agent, world_id", MISFITS)
def test_misfit_names_the_world(agent, world_id, worlds):
    with pytest.raises(ValueError, match=world_id.replace("/", ".")):
        check_agent(agent, worlds[world_id])


def test_saliency_policy_on_a_uniform_fixation_world_computes_maps():
    world = envs.make_world("seqjepa/Saccades-v0", **{**WORLD_OPTIONS["seqjepa/Saccades-v0"], "fixations": "uniform"})
    assert world.saliency is None
    a = make_agent("saliency")(world, world.reset(3, gen()), gen())
    assert a.shape == (3, 2)


def test_sweep_is_a_steady_yaw_and_a_full_raster(worlds):
    rot, sac = worlds["seqjepa/RotatingObjects-v0"], worlds["seqjepa/Saccades-v0"]
    state = start = rot.reset(2, gen())
    for _ in range(24):  # 24 x 15 degrees about one axis: back where it started
        state = rot.step(state, make_agent("sweep")(rot, state, gen()), gen())
    assert goal_error(rot, state["params"], start["params"])[0].max() < 1e-2
    state, seen = sac.reset(1, gen()), set()
    for _ in range(9):
        state = sac.step(state, make_agent("sweep")(sac, state, gen()), gen())
        seen.add(tuple((state["params"][0] * 48).tolist()))
    assert seen == {(r, c) for r in (8.0, 24.0, 40.0) for c in (8.0, 24.0, 40.0)}


# -- planners on toy problems: a stand-in model that is exactly the true transition in embedding space ------------

class ExactToy:
    """A stand-in world model whose 'views' already are embeddings: the encoder and the action embedding are the
    identity and the aggregate is the last token; subclasses give the exact transition as ``predict``."""
    action_embed = True
    predicts = True

    def encode(self, views):
        return views

    encode_target = encode

    def embed_actions(self, a):
        return a

    def aggregate(self, z, e):
        return z[:, -1]


class RotationToy(ExactToy):
    """z = vec(R); aggregate = the last token (the current rotation); predict = vec(R @ R(a)). Exact."""
    act_dim = 4

    def predict(self, z_agg, e):
        return (z_agg.reshape(-1, 3, 3) @ rt.quat_to_matrix(e)).flatten(1)


class FixationToy(ExactToy):
    """z = [p, cos(W p + b)] of the fixation p; aggregate = the last token; predict = z(clip(p + a)). Exact."""
    act_dim = 2

    def __init__(self):
        g = gen(5)
        self.w, self.b = torch.randn(32, 2, generator=g) * 6, torch.rand(32, generator=g) * 2 * math.pi

    def embed(self, p):
        return torch.cat([p, torch.cos(p @ self.w.T + self.b)], -1)

    def predict(self, z_agg, e):
        return self.embed((z_agg[:, :2] + e).clamp(0, 47 / 48))


def toy_problem(world_id, worlds, n, h):
    """Start states, their toy 'views' (what the stand-in model encodes) and goals h random steps away."""
    world = worlds[world_id]
    state = world.reset(n, gen(7))
    goal = execute(world, state, torch.stack([world.sample_action(state, gen(8 + t)) for t in range(h)], 1), gen(9))
    if world_id == "seqjepa/RotatingObjects-v0":
        view = lambda p: rt.euler_to_matrix(p[:, :3]).flatten(1)  # noqa: E731
        model = RotationToy()
    else:
        model = FixationToy()
        view = lambda p: model.embed(p)  # noqa: E731
    cost = LatentGoalCost(model, view(state["params"])[:, None], torch.zeros(n, 0, world.action_dim),
                          view(goal["params"]))
    return world, state, goal, cost


@pytest.mark.parametrize("world_id, tol", [("seqjepa/RotatingObjects-v0", 6.0), ("seqjepa/Saccades-v0", 3.0)])
@pytest.mark.parametrize("h", [1, 2])
def test_planners_reach_the_goal_with_a_known_model(world_id, tol, h, worlds):
    world, state, goal, cost = toy_problem(world_id, worlds, 24, h)
    space = space_for(world, state)
    errors = {}
    for name, plan in {"cem": lambda: cem(cost, space, h, candidates=128, iterations=8, generator=gen(1)),
                       "gradient": lambda: gradient_plan(cost, space, h, restarts=8, steps=40, lr=0.05,
                                                         generator=gen(1))}.items():
        p = plan()
        assert p.actions.shape == (24, h, world.action_dim) and p.cost.shape == (24,)
        errors[name] = goal_error(world, execute(world, state, p.actions, gen(3))["params"], goal["params"])[0]
    rand = torch.stack([world.sample_action(state, gen(20 + t)) for t in range(h)], 1)
    errors["random"] = goal_error(world, execute(world, state, rand, gen(3))["params"], goal["params"])[0]
    medians = {k: float(v.median()) for k, v in errors.items()}
    assert medians["gradient"] < tol and medians["cem"] < 2 * tol, medians
    assert medians["random"] > 4 * tol, medians


def test_the_pixel_oracle_renders_in_chunks_with_progress_and_the_same_costs(worlds, monkeypatch):
    from agents import planning
    world = worlds["seqjepa/RotatingObjects-v0"]
    state = world.reset(3, gen(1))
    goal = execute(world, state, world.sample_action(state, gen(2))[:, None], gen(3))
    actions = rt.random_quat(3 * 5, gen(4)).reshape(3, 5, 1, 4)
    whole = planning.world_cost(world, state, goal["params"], world.render(goal), gen(5))(actions)
    monkeypatch.setattr(planning, "RENDER_CHUNK", 4)
    notes = []
    chunked = planning.world_cost(world, state, goal["params"], world.render(goal), gen(5), tick=notes.append)(actions)
    assert torch.allclose(whole, chunked, atol=1e-4)
    assert notes == [f"rendered {n}/15 candidate views" for n in (4, 8, 12, 15)]
    rounds = []
    cem(lambda a: a.sum((-1, -2)), space_for(world, state), 1, candidates=4, iterations=3, generator=gen(6),
        tick=rounds.append)
    assert rounds == ["CEM iteration 1/3", "CEM iteration 2/3", "CEM iteration 3/3"]


def _goal_rows(**errors):
    return {k: {"value": v, "median": v, "latent_cos": 0.0, "seconds": 0.0, "unit": "degrees"}
            for k, v in errors.items()}


def test_plan_report_says_when_the_model_has_not_learned_the_action():
    from agents.plan_eval import goal_verdict
    lost = goal_verdict(_goal_rows(start=55.0, random=120.0, cem=135.0, gradient=130.0, oracle_params=12.0),
                        "degrees")
    assert lost.startswith("**The model has not learned what the actions do**")
    assert "cem 135.0, gradient 130.0 vs 55.0 degrees without moving" in lost and "reaches 12.0" in lost
    learned = goal_verdict(_goal_rows(start=55.0, cem=30.0, gradient=40.0, oracle_params=12.0), "degrees")
    assert learned.startswith("Planning with the model ends nearer the goal than not moving")
    small = goal_verdict(_goal_rows(start=55.0, cem=130.0, oracle_params=60.0), "degrees")
    assert "search budget is too small" in small


def test_autoregressive_prediction_composes_the_actions(worlds):
    world, state, goal, cost = toy_problem("seqjepa/RotatingObjects-v0", worlds, 4, 1)
    q = rt.random_quat(8, gen(3)).reshape(4, 1, 2, 4)   # 4 episodes, 1 candidate, 2 steps
    two = cost.predict(q)[:, 0]
    start = rt.euler_to_matrix(state["params"][:, :3])
    expected = start @ rt.quat_to_matrix(q[:, 0, 0]) @ rt.quat_to_matrix(q[:, 0, 1])
    assert torch.allclose(two, rearrange(expected, "b i j -> b (i j)"), atol=1e-5)


# -- the trainer takes any agent; run.py plan end to end ----------------------------------------------------------

def test_train_agent_flag_sets_live_sequences_and_refuses_misfits(capsys):
    import run
    args = run.parser().parse_args(["train", "--preset", "smoke", "--agent", "sweep"])
    cfg = run.build_config(args)
    assert (cfg.world.agent, cfg.world.source) == ("sweep", "live")
    assert run.main(["train", "--preset", "smoke", "--agent", "saliency"]) == 2
    err = capsys.readouterr().err.strip()
    assert "saliency" in err and "seqjepa/RotatingObjects-v0" in err and len(err.splitlines()) == 1


def _train_smoke(cfg, tmp_path, name, overrides):
    from seqjepa.options import apply_overrides
    from seqjepa.train import train
    apply_overrides(cfg, [f"train.name={name}", "train.steps=2", "train.threads=1"] + overrides)
    train(cfg, tmp_path / name, log=lambda s: None)
    return tmp_path / name / "latest.pt"


@pytest.mark.slow
def test_plan_cli_end_to_end(smoke_cfg, tmp_path):
    ckpt = _train_smoke(smoke_cfg, tmp_path, "rot", ["world.source=live", "world.agent=uniform"])
    r = subprocess.run([sys.executable, str(ROOT / "run.py"), "plan", "--ckpt", str(ckpt), "--episodes", "3",
                        "--horizon", "2", "--candidates", "6", "--iterations", "2"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    out = json.loads((ckpt.parent / "plan.json").read_text())
    for h in (1, 2):
        for method in ("start", "random", "cem", "gradient", "oracle_params", "oracle_pixels"):
            entry = out["metrics"][f"goal/H={h}/{method}"]
            assert entry["unit"] == "degrees" and 0 <= entry["value"] <= 180
            assert entry["protocol"]["episodes"] == 3 and entry["protocol"]["horizon"] == h
    assert out["metrics"]["goal/H=2/cem"]["protocol"]["candidates"] == 6
    report = (ckpt.parent / "plan.md").read_text()
    assert "| cem |" in report and "| start (no move) |" in report
    assert "not moving" in report  # each horizon says what the planners' errors mean


def test_plan_active_vision_on_saccades(smoke_cfg, tmp_path, monkeypatch):
    from agents.plan_eval import PlanConfig, plan_checkpoint
    from seqjepa import progress
    ckpt = _train_smoke(smoke_cfg, tmp_path, "sac", [
        "world.env=seqjepa/Saccades-v0", "world.options={}", "world.options.scene_size=48",
        "world.options.image_size=16", "world.options.num_classes=2", "world.options.per_class=4"])
    pc = PlanConfig(episodes=6, horizons=(1,), candidates=6, iterations=1, restarts=2, grad_steps=2,
                    glimpses=(1, 3), probe_sequences=16, active_sequences=6, probe_epochs=2, active_candidates=4)
    monkeypatch.setattr(progress, "EVERY", 0.0)  # without a terminal each long step logs what it is doing
    lines = []
    out = plan_checkpoint(ckpt, pc, log=lines.append)["metrics"]
    assert "plan: goal H=1 oracle_pixels: 0/1 CEM rounds, rendered 36/36 candidate views (0 s)" in lines
    assert any(line.startswith("plan: active vision, saliency probe sequences: 1/1 batches") for line in lines)
    assert out["goal/H=1/oracle_pixels"]["unit"] == "pixels"
    for policy in ("saliency", "uniform", "active_change", "active_disagreement"):
        assert 0 <= out[f"active/k=3/{policy}"]["value"] <= 100
    # one glimpse: every policy has seen the same first fixation of the same scenes
    assert len({out[f"active/k=1/{p}"]["value"] for p in ("saliency", "uniform", "active_change")}) == 1
    assert "Active vision" in (ckpt.parent / "plan.md").read_text()
