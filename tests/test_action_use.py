"""Action use and the relative-action R², measured on a held-out batch while training (issue 22, item 2).

The action use is the predictor's loss with the next action a_M taken from another sequence over its loss with
the true one (eval mode); seqjepa.train logs it as ``probe_online/action_use`` and an ``action use 1.23x`` console
column at every log step, beside ``probe_online/r2_rel_action``, the online regressor scored on the same batch.
"""
import math
import re

import pytest
import torch

import envs
from seqjepa import checkpoint
from seqjepa.options import apply_overrides
from seqjepa.model import SeqJEPA, action_use, derangement, evaluating, uses_next_action
from seqjepa.data import build_world
from seqjepa.monitor import HeldOutMonitor, OnlineProbes
from seqjepa.train import build_model, train

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = dict(depth=10, width=8, stem="cifar", act_dim=16, agg_layers=1, agg_heads=2, pred_hidden=64, dropout=0.0)


def colour_sequences(n: int, g: torch.Generator, views: int = 3, size: int = 8):
    """Plain-coloured views with random colours; action i is the colour change from view i to view i+1, so the
    target's colour is the last observed one's plus a_M: predicting the target needs the last action."""
    c = torch.rand(n, views, 3, generator=g)
    images = (c[..., None, None].expand(n, views, 3, size, size) * 255).round().to(torch.uint8)
    return images, c[:, 1:] - c[:, :-1]


def trained_on_colours(steps: int, *, blind: bool = False) -> SeqJEPA:
    """A tiny seq-JEPA trained on colour sequences; ``blind``: its action embedding is zero and frozen, so the
    predictor (and the tokens) never see an action."""
    torch.manual_seed(0)
    model = SeqJEPA(action_dim=3, **TINY)
    if blind:
        model.action_embed[0].weight.data.zero_()
        model.action_embed[0].weight.requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        out = model(*colour_sequences(64, g))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        model.update_target(0.99)
    return model


def ratio(model: SeqJEPA) -> float:
    g = torch.Generator().manual_seed(1)
    views, actions = colour_sequences(256, g)
    with evaluating(model), torch.no_grad():
        losses = action_use(model, views, actions, actions[derangement(256, g)])
    return float(losses["last shuffled"].mean() / losses["true"].mean())


def test_derangement_moves_every_sequence():
    for n in (2, 3, 7, 256):
        other = derangement(n, torch.Generator().manual_seed(n))
        assert sorted(other.tolist()) == list(range(n))
        assert (other != torch.arange(n)).all()


def test_action_use_is_the_forward_loss_with_shuffled_actions_and_leaves_modes_as_they_were():
    torch.manual_seed(0)
    model = SeqJEPA(action_dim=3, **TINY)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):  # move the BatchNorm running statistics away from their initial values
        model(*colour_sequences(16, g))
    model.target_encoder.eval()  # a submodule in its own mode must get it back
    views, actions = colour_sequences(32, g)
    shuffled = actions[derangement(32, g)]
    last = torch.cat([actions[:, :-1], shuffled[:, -1:]], 1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with evaluating(model):
        losses = action_use(model, views, actions, shuffled, all_shuffled=True)
        with torch.no_grad():
            expected = {"true": model(views, actions)["loss"], "last shuffled": model(views, last)["loss"],
                        "all shuffled": model(views, shuffled)["loss"]}
    for name, loss in expected.items():
        assert losses[name].shape == (32,)
        assert torch.allclose(losses[name].mean(), loss, atol=1e-6), name
    assert model.training and model.encoder.training and not model.target_encoder.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # no running statistic moved


@pytest.mark.slow
def test_action_use_is_one_when_the_predictor_is_blind_to_the_action_and_well_above_when_it_uses_it():
    # The same training on a target that needs the last action: with the action pathway cut, shuffling a_M
    # changes nothing; with it, 100 steps teach the predictor to use it (measured: 2.4x; 1.4x after 50 steps).
    assert ratio(trained_on_colours(100, blind=True)) == pytest.approx(1.0, abs=1e-6)
    assert ratio(trained_on_colours(100)) > 1.5


def test_only_a_predictor_conditioned_on_the_next_action_is_measured(smoke_cfg):
    world = build_world(smoke_cfg, torch.device("cpu"), "train")
    for act_cond, expected in (("both", True), ("predictor", True), ("transformer", False), ("none", False)):
        assert uses_next_action(SeqJEPA(action_dim=4, act_cond=act_cond, **TINY)) is expected, act_cond
    apply_overrides(smoke_cfg, ["model.method=simclr"])
    assert not uses_next_action(build_model(smoke_cfg, world))


def test_online_r2_reads_the_relative_rotation_from_features_that_hold_it():
    # [z_1, z_2] holding both views' rotation matrices (plus noise dimensions): the regressor, trained online on
    # batches of 32 and scored on held-out pairs, reads the relative quaternion, w (mean ~0.86, std ~0.1) included.
    # The equivariance suite's MLP reads 0.98 from such features.
    world = envs.make_world("seqjepa/RotatingObjects-v0", image_size=16, num_classes=2, rotation_range=0.785)
    from envs import rotations as rt
    g = torch.Generator().manual_seed(0)

    def pairs(n):
        p0, p1 = world.reset(n, g)["params"], world.reset(n, g)["params"]
        z = [torch.cat([rt.euler_to_matrix(p[:, :3]).flatten(1), 0.3 * torch.randn(n, 23, generator=g)], 1) * 5
             for p in (p0, p1)]
        return torch.cat(z, 1), world.relative(p0, p1)

    x_held, y_held = pairs(256)
    torch.manual_seed(0)
    probes = OnlineProbes(agg_dim=4, z_dim=32, num_classes=2, action_dim=4, hidden=128)
    probes.set_action_scale(y_held)
    opt = torch.optim.Adam(probes.parameters(), lr=1e-3)
    for _ in range(300):
        x, y = pairs(32)
        loss, _ = probes(torch.zeros(32, 4), x, torch.zeros(32, dtype=torch.long), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with evaluating(probes):
        r2 = float(probes.r2(x_held, y_held))
    assert r2 > 0.8, r2


def quiet(cfg, run, **kwargs):
    """train() (without the end-of-training TensorBoard inspection, which only run.py asks for); returns the
    console lines."""
    lines = []
    train(cfg, run, log=lines.append, **kwargs)
    return lines


def scalars(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_training_logs_action_use_and_the_held_out_r2_every_log_interval(smoke_cfg, tmp_path):
    apply_overrides(smoke_cfg, ["train.steps=4", "train.log_every=2", "train.eval_after=false"])
    lines = quiet(smoke_cfg, tmp_path / "run")
    s = scalars(tmp_path / "run")
    for tag in ("probe_online/action_use", "probe_online/r2_rel_action"):
        assert [step for step, _ in s[tag]] == [2, 4], tag
        assert all(math.isfinite(v) for _, v in s[tag]), s[tag]
    assert all(v > 0 for _, v in s["probe_online/action_use"])
    last = [line for line in lines if line.startswith("step 4/4")]
    use = re.search(r"action use (\d+\.\d\d)x", last[0])
    assert use and float(use.group(1)) == pytest.approx(s["probe_online/action_use"][-1][1], abs=0.006)
    assert re.search(r" r2 -?\d\.\d{3} ", last[0])


@pytest.mark.parametrize("setting", ["model.act_cond=transformer", "model.method=simclr"])
def test_without_an_action_conditioned_predictor_the_column_is_a_dash(smoke_cfg, tmp_path, setting):
    apply_overrides(smoke_cfg, ["train.steps=2", "train.log_every=2", "train.eval_after=false", setting])
    lines = quiet(smoke_cfg, tmp_path / "run")
    s = scalars(tmp_path / "run")
    assert "probe_online/action_use" not in s
    assert [step for step, _ in s["probe_online/r2_rel_action"]] == [2]
    assert "action use - " in [line for line in lines if line.startswith("step 2/2")][0]


def test_the_held_out_batch_is_fixed_and_the_measurement_changes_nothing(smoke_cfg, tmp_path, monkeypatch):
    apply_overrides(smoke_cfg, ["train.steps=4", "train.log_every=1", "train.eval_after=false"])
    a = HeldOutMonitor.build(smoke_cfg, torch.device("cpu"), None, 8, lambda s: None)
    b = HeldOutMonitor.build(smoke_cfg, torch.device("cpu"), None, 8, lambda s: None)
    assert a.batch.views.shape[0] == min(256, 4 * smoke_cfg.train.batch_size)
    assert torch.equal(a.batch.views, b.batch.views) and torch.equal(a.other, b.other)

    quiet(smoke_cfg, tmp_path / "measured")  # measured at every step
    monkeypatch.setattr(HeldOutMonitor, "measure", lambda self, model, probes: {})
    quiet(smoke_cfg, tmp_path / "not")
    measured, other = (checkpoint.load(tmp_path / run / "latest.pt") for run in ("measured", "not"))
    for key in ("model", "probes"):
        assert measured[key].keys() == other[key].keys()
        assert all(torch.equal(v, other[key][k]) for k, v in measured[key].items()), key
    assert torch.equal(measured["rng"]["torch"], other["rng"]["torch"])
    assert torch.equal(measured["source"]["generator"], other["source"]["generator"])
