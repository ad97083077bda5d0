"""Tests of the evaluation package: R² against sklearn, probe sanity, frozen feature collection, the suite."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch
from torch import nn

from envs.base import Factor, World
from envs.sequences import ViewBank, random_policy, rollout
from eval import collect, evaluate, fit_classifier, fit_regressor, format_table, r2_score
from seqjepa.config import EvalConfig


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models


# -- a tiny world and a stand-in model ------------------------------------------------------------------------------


class ToyWorld(World):
    """12 objects in 3 classes; params = (shift, tint) in [-1, 1], both visible in an 8x8 view."""

    name = "toy world"

    def __init__(self, split: str = "train", device: str = "cpu"):
        self.options = types.SimpleNamespace(split=split)
        self.device = torch.device(device)
        self.num_classes, self.num_episodes, self.image_size = 3, 12, 8
        self.action_dim = self.param_dim = 2
        self.factors = {"shift": Factor(0, 1, "mlp"), "tint": Factor(1, 2, "linear")}
        self.action_low, self.action_high = -torch.ones(2), torch.ones(2)

    def reset(self, n, generator, episodes=None):
        if episodes is None:
            episodes = torch.randint(0, self.num_episodes, (n,), generator=generator)
        params = torch.rand(n, 2, generator=generator) * 2 - 1
        return {"label": episodes % self.num_classes, "episode": episodes, "params": params}

    def step(self, state, action, generator):
        return {**state, "params": (state["params"] + action).clamp(-1, 1)}

    def render(self, state):
        n, s = state["label"].shape[0], self.image_size
        ramp = torch.linspace(-1, 1, s).expand(s, s)
        img = torch.empty(n, 3, s, s)
        img[:, 0] = (state["label"].float() / 2)[:, None, None]
        img[:, 1] = 0.5 + 0.5 * state["params"][:, :1, None] * ramp
        img[:, 2] = (0.5 + 0.5 * state["params"][:, 1])[:, None, None]
        return (img.clamp(0, 1) * 255).to(torch.uint8)

    def relative(self, p_from, p_to):
        return p_to - p_from

    def sample_action(self, state, generator):
        return (torch.rand(state["label"].shape[0], 2, generator=generator) - 0.5)

    def absolute(self, params):
        return {"shift": params[..., :1]}


class StandIn(nn.Module):
    """The SeqJEPA evaluation API with BatchNorm and dropout in it, small enough for instant tests."""

    predicts = True

    def __init__(self, action_dim: int = 2, dim: int = 16, act_dim: int = 4, act_cond: str = "both"):
        super().__init__()
        self.hparams = {"act_cond": act_cond}
        self.action_embed = None
        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                     nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, dim))
        self.act_dim = act_dim if act_cond != "none" else 0
        if act_cond != "none":
            self.action_embed = nn.Sequential(nn.Linear(action_dim, act_dim, bias=False),
                                              nn.BatchNorm1d(act_dim, affine=False))
        self.agg = nn.Sequential(nn.Linear(dim + self.act_dim, dim + self.act_dim), nn.Dropout(0.5))

    def encode(self, views):
        b = views.shape[0]
        x = views.flatten(0, 1).float() / 255
        return self.encoder(x).view(b, -1, self.encoder[-1].out_features)

    def encode_target(self, views):
        return self.encode(views)

    def embed_actions(self, actions):
        if self.act_dim == 0:
            return None
        return self.action_embed(actions.flatten(0, 1).float()).view(*actions.shape[:2], -1)

    def aggregate(self, z, e=None):
        b, m, _ = z.shape
        if self.act_dim:
            slots = z.new_zeros(b, m, self.act_dim)
            if e is not None and m > 1:
                slots = torch.cat([e[:, :m - 1], e.new_zeros(b, 1, self.act_dim)], 1)
            z = torch.cat([z, slots], -1)
        return self.agg(z).mean(1)

    def predict(self, z_agg, e_next):
        return z_agg


def real_model(act_cond: str = "both") -> nn.Module:
    model_mod = pytest.importorskip("seqjepa.model")
    return model_mod.SeqJEPA(action_dim=2, depth=10, width=4, stem="cifar", act_dim=8, agg_layers=1, agg_heads=2,
                             pred_hidden=16, act_cond=act_cond)


def toy_batch(n: int = 16, steps: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return rollout(ToyWorld(), random_policy, n, steps, g)


def small_cfg(**kw) -> EvalConfig:
    base = dict(m_val=[1, 2, 3], train_sequences=64, test_sequences=32, linear_epochs=3, mlp_epochs=3, lr=1e-3,
                batch_size=32, mlp_hidden=16, seed=0)
    return EvalConfig(**{**base, **kw})


# -- R² -------------------------------------------------------------------------------------------------------------


def test_r2_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(0)
    y = torch.randn(200, 4, generator=g) * torch.tensor([1.0, 5.0, 0.1, 2.0]) + 3
    pred = y + torch.randn(200, 4, generator=g) * 0.7
    yn, pn = y.double().numpy(), pred.double().numpy()
    assert float(r2_score(y, pred)) == pytest.approx(metrics.r2_score(yn, pn), abs=1e-5)
    np.testing.assert_allclose(r2_score(y, pred, "raw").numpy(), metrics.r2_score(yn, pn, multioutput="raw_values"),
                               atol=1e-5)
    # SIE's global R² is sklearn's on the flattened arrays.
    assert float(r2_score(y, pred, "global")) == pytest.approx(metrics.r2_score(yn.ravel(), pn.ravel()), abs=1e-5)
    # 1-d input, and sklearn's force_finite rule for constant targets.
    assert float(r2_score(y[:, 0], pred[:, 0])) == pytest.approx(metrics.r2_score(yn[:, 0], pn[:, 0]), abs=1e-5)
    const = torch.ones(50, 2)
    pc = torch.stack([torch.ones(50), torch.randn(50, generator=g)], 1)
    np.testing.assert_allclose(r2_score(const, pc, "raw").numpy(),
                               metrics.r2_score(const.numpy(), pc.numpy(), multioutput="raw_values"), atol=1e-6)


# -- probes ---------------------------------------------------------------------------------------------------------


def _split(x, y, n_train):
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def test_classifier_separable_and_random_labels():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1500, 16, generator=g) * 3 + 1
    w = torch.randn(16, 4, generator=g)
    y = (x @ w).argmax(1)  # linearly separable by construction
    kw = dict(num_classes=4, epochs=30, lr=1e-2, batch_size=128, seed=0)
    acc = fit_classifier(*_split(x, y, 1000), **kw)
    assert acc > 90
    y_rand = torch.randint(0, 4, (1500,), generator=g)
    chance = fit_classifier(*_split(x, y_rand, 1000), **kw)
    assert 10 < chance < 40
    # Deterministic given the seed, and the caller's RNG is left alone.
    state = torch.get_rng_state()
    assert fit_classifier(*_split(x, y, 1000), **kw) == acc
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_regressor_linear_target_and_noise(head):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1200, 12, generator=g) * 4 - 2
    # Targets of very different scales: target standardisation makes the fit scale-free.
    y = x @ torch.randn(12, 3, generator=g) * torch.tensor([100.0, 1.0, 0.01])
    kw = dict(head=head, hidden=64, epochs=40, lr=3e-3, batch_size=64, seed=0)
    res = fit_regressor(*_split(x, y, 900), **kw)
    assert set(res) == {"r2", "r2_global", "epoch"} and res["epoch"] == (40 if head == "mlp" else None)
    assert res["r2"] > 0.98 and res["r2_global"] > 0.98
    noise = torch.randn(1200, 3, generator=g)
    res = fit_regressor(*_split(x, noise, 900), **kw)
    assert res["r2"] <= 0.1 and res["r2_global"] <= 0.1
    if head == "linear":
        assert res["r2"] > -0.1  # a linear fit to noise is about as good as the mean


def test_linear_regressor_is_the_least_squares_optimum():
    # The exact fit scores what ordinary least squares scores (the ridge moves the weights of collinear features,
    # not the fit), and an Adam-trained head of one epoch does worse on the split it was fitted on.
    from eval.probes import fit_linear, standardize
    g = torch.Generator().manual_seed(5)
    x = torch.randn(800, 16, generator=g) @ torch.randn(16, 16, generator=g)  # correlated features
    y = torch.sin(x[:, :2]) + 0.3 * torch.randn(800, 2, generator=g)
    xs, _, _, _ = standardize(x, x)
    ys, _, _, _ = standardize(y, y)
    a = torch.cat([xs.double(), torch.ones(800, 1, dtype=torch.float64)], 1)
    ols = torch.linalg.lstsq(a, ys.double()).solution
    assert float(((a @ fit_linear(xs, ys) - ys) ** 2).mean()) == pytest.approx(float(((a @ ols - ys) ** 2).mean()),
                                                                              rel=1e-3)
    exact = fit_regressor(x, y, x, y, head="linear", hidden=0, epochs=1, lr=1e-3, batch_size=64, seed=0)
    assert exact["r2"] == pytest.approx(float(r2_score(y, (a @ ols).float() * y.std(0, unbiased=False) + y.mean(0),
                                                        "uniform")), abs=1e-3)
    adam = fit_regressor(x, y, x, y, head="mlp", hidden=2, epochs=1, lr=1e-3, batch_size=64, seed=0)
    assert exact["r2"] > adam["r2"]


def test_hold_out_keeps_each_episode_on_one_side():
    from eval.probes import hold_out
    groups = torch.arange(100) % 20
    x = torch.arange(100.0)[:, None]
    xf, _, (xv, _) = hold_out(x, x, 0.1, torch.Generator().manual_seed(0), groups)
    fit_g, val_g = set(groups[xf[:, 0].long()].tolist()), set(groups[xv[:, 0].long()].tolist())
    assert len(val_g) == 2 and not fit_g & val_g and len(xf) + len(xv) == 100
    with pytest.raises(ValueError, match=r"val_fraction: got 0.1 with 1 episode\(s\)"):
        hold_out(x, x, 0.1, torch.Generator(), torch.zeros(100, dtype=torch.long))
    with pytest.raises(ValueError, match=r"with 1 row\(s\)"):
        hold_out(x[:1], x[:1], 0.1, torch.Generator())


@pytest.mark.slow
def test_validation_split_picks_the_epoch_before_overfitting():
    # A wide MLP on few noisy rows over-fits: scored after the last epoch its R² falls well below 0; with the
    # epoch chosen on rows held out of the train split it stays near the mean predictor's 0.
    g = torch.Generator().manual_seed(4)
    x = torch.randn(700, 32, generator=g)
    y = x[:, :1] * 0.3 + torch.randn(700, 1, generator=g)
    kw = dict(head="mlp", hidden=256, epochs=60, lr=3e-3, batch_size=32, seed=0)
    last = fit_regressor(*_split(x, y, 300), **kw)
    picked = fit_regressor(*_split(x, y, 300), **kw, val_fraction=0.2)
    assert last["epoch"] == 60 and picked["epoch"] < 30
    assert last["r2"] < -0.1 and picked["r2"] > 0 and picked["r2"] > last["r2"] + 0.15
    assert fit_regressor(*_split(x, y, 300), **kw, val_fraction=0.2) == picked  # deterministic


# -- features ---------------------------------------------------------------------------------------------------------


def _bn_state(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


@pytest.mark.parametrize("make", [StandIn, real_model], ids=["stand-in", "SeqJEPA"])
def test_collect_freezes_bn_and_restores_mode(make):
    model = make()
    model.train()
    model.encoder.eval()  # a mixed mode must come back as it was, module by module
    modes = {name: m.training for name, m in model.named_modules()}
    before = _bn_state(model)
    assert before, "the model under test should have BatchNorm buffers"
    batches = [toy_batch(8, 4, seed=0), toy_batch(8, 4, seed=1)]
    feats = collect(model, batches, m_val=[1, 3], device="cpu")
    after = _bn_state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {name: m.training for name, m in model.named_modules()} == modes

    assert feats["z"].shape[:2] == (16, 4) and feats["z"].dtype == torch.float32 and feats["z"].device.type == "cpu"
    assert set(feats["z_agg"]) == {1, 3} and feats["z_agg"][3].shape[0] == 16
    assert feats["labels"].dtype == torch.long and feats["params"].shape == (16, 4, 2)
    # z_agg[M] is the aggregate of the first M views, with the model in eval mode.
    model.eval()
    with torch.no_grad():
        b = batches[0]
        z = model.encode(b.views)
        e = model.embed_actions(b.actions)
        ref = model.aggregate(z[:, :3], None if e is None else e[:, :3])
    torch.testing.assert_close(feats["z_agg"][3][:8], ref)
    torch.testing.assert_close(feats["z"][:8], z)


def test_collect_without_actions_and_bf16():
    model = StandIn(act_cond="none")
    feats = collect(model, [toy_batch(8, 3)], m_val=[2], device="cpu", autocast=True)
    assert feats["z_agg"][2].dtype == torch.float32 and feats["z_agg"][2].shape == (8, 16)
    with pytest.raises(ValueError):
        collect(model, [toy_batch(8, 3)], m_val=[4], device="cpu")


# -- suite ------------------------------------------------------------------------------------------------------------

COMMON_PROTOCOL_KEYS = {"sampling", "train_sequences", "test_sequences", "seed", "input_standardisation"}


def _check_result(res: dict, cfg: EvalConfig, sampling: str) -> None:
    metrics = res["metrics"]
    expected = ({f"linear_probe/z_agg/M={m}" for m in cfg.m_val} | {"linear_probe/encoder"}
                | {"equivariance/shift", "equivariance/tint", "absolute/shift"})
    assert set(metrics) == expected
    for name, entry in metrics.items():
        p = entry["protocol"]
        assert isinstance(entry["value"], float)
        fitted = {"optimizer", "views"} | ({"epochs", "lr", "batch_size"} if "epochs" in p else set())
        assert COMMON_PROTOCOL_KEYS | {"probe"} | fitted <= set(p), name
        assert p["sampling"] == sampling and p["seed"] == cfg.seed
    m = max(cfg.m_val)
    assert metrics[f"linear_probe/z_agg/M={m}"]["protocol"]["views"] == m
    eq = metrics["equivariance/shift"]
    assert eq["protocol"]["head"] == "mlp" and eq["protocol"]["epochs"] == cfg.mlp_epochs
    assert eq["protocol"]["hidden"] == cfg.mlp_hidden
    assert eq["protocol"]["input_dim"] == 2 * metrics["linear_probe/encoder"]["protocol"]["input_dim"]
    assert metrics["equivariance/tint"]["protocol"]["head"] == "linear"
    assert "exact least squares" in metrics["equivariance/tint"]["protocol"]["optimizer"]
    assert "epochs" not in metrics["equivariance/tint"]["protocol"]
    assert {"r2", "r2_global"} <= set(eq) and eq["value"] == eq["r2"]
    assert metrics["absolute/shift"]["protocol"]["head"] == "mlp"
    assert res["protocol"]["views_per_sequence"] == max(cfg.m_val) + 1
    json.dumps(res)  # written to the run folder as is


def test_evaluate_live_end_to_end():
    torch.manual_seed(0)
    model, cfg, logs = StandIn(), small_cfg(), []
    res = evaluate(model, ToyWorld("train"), ToyWorld("test"), cfg, device="cpu", log=logs.append)
    _check_result(res, cfg, "live: random policy")
    assert any("linear_probe/encoder" in line for line in logs)
    again = evaluate(model, ToyWorld("train"), ToyWorld("test"), cfg, device="cpu", log=lambda s: None)
    assert again == res  # deterministic given cfg.seed


def test_evaluate_recovers_visible_factors():
    # In ToyWorld the class and both params are drawn into the view, so even a random encoder carries them:
    # high scores here mean features, labels and targets are paired correctly (view 0 with view 1, etc.).
    torch.manual_seed(0)
    cfg = small_cfg(m_val=[1], train_sequences=256, test_sequences=128, linear_epochs=40, mlp_epochs=40,
                    batch_size=64, mlp_hidden=32, lr=3e-3, val_fraction=0.0)  # every row trains: clean figures
    res = evaluate(StandIn(), ToyWorld("train"), ToyWorld("test"), cfg, device="cpu", log=lambda s: None)
    m = res["metrics"]
    assert m["linear_probe/encoder"]["value"] > 80 and m["linear_probe/z_agg/M=1"]["value"] > 80
    assert m["equivariance/shift"]["value"] > 0.9 and m["absolute/shift"]["value"] > 0.9
    assert m["equivariance/tint"]["value"] > 0.5  # linear head on a ReLU network's tint: weaker, still clear


class CleanToyWorld(ToyWorld):
    """ToyWorld whose views hide the class (one red level for all) while its clean views show it."""

    def render(self, state):
        return super().render({**state, "label": torch.zeros_like(state["label"])})

    def clean_views(self, episodes):
        n = len(episodes)
        return ToyWorld.render(self, {"label": episodes % self.num_classes, "params": torch.zeros(n, 2)})


def test_encoder_probe_on_clean_views_reads_the_clean_image_where_a_world_has_one():
    torch.manual_seed(0)
    cfg = small_cfg(m_val=[1], train_sequences=256, test_sequences=128, linear_epochs=40, batch_size=64, lr=3e-3,
                    val_fraction=0.0, suites=["linear_probe"])
    m = evaluate(StandIn(), CleanToyWorld("train"), CleanToyWorld("test"), cfg, device="cpu",
                 log=lambda s: None)["metrics"]
    assert m["linear_probe/encoder/clean"]["value"] > 80     # the clean image shows the class
    assert m["linear_probe/encoder"]["value"] < 60           # the views do not (chance: 33 %)
    assert "world.clean_views" in m["linear_probe/encoder/clean"]["protocol"]["input"]


def test_evaluate_bank_and_real_model():
    model = real_model()
    cfg = small_cfg(m_val=[1, 4], train_sequences=48, test_sequences=16, batch_size=16)
    bank_tr = ViewBank.render(ToyWorld("train"), objects=12, views=6, seed=0)
    bank_te = ViewBank.render(ToyWorld("test"), objects=6, views=6, seed=1)
    res = evaluate(model, ToyWorld("train"), ToyWorld("test"), cfg, device="cpu", bank_train=bank_tr,
                   bank_test=bank_te, log=lambda s: None)
    _check_result(res, cfg, "bank: distinct random views")
    assert res["metrics"]["linear_probe/z_agg/M=4"]["protocol"]["input_dim"] == model.d_model


def test_format_table():
    r1 = {"metrics": {"linear_probe/encoder": {"value": 51.234, "protocol": {"unit": "top-1 %"}},
                      "equivariance/rot": {"value": 0.71, "r2": 0.71, "r2_global": 0.65,
                                           "protocol": {"unit": "R²"}}}}
    r0 = {"linear_probe/encoder": {"value": 20.0, "protocol": {"unit": "top-1 %"}}}
    table = format_table({"trained": r1, "random init": r0})
    lines = table.splitlines()
    assert lines[0] == "| metric | trained | random init |"
    assert lines[1] == "|---|---|---|"
    assert "| linear_probe/encoder (top-1 %) | 51.23 | 20.00 |" in lines
    assert "| equivariance/rot (R²) | 0.710 | – |" in lines
    assert not any("global" in line for line in lines)  # r2_global stays in eval.json, out of the headline
    assert len(lines) == 4


def test_format_table_puts_chance_and_the_paper_beside_the_numbers():
    def res(world, top1, r2):
        return {"protocol": {"world_train": f"{world} (split=train)"}, "metrics": {
            "linear_probe/z_agg/M=5": {"value": top1, "protocol": {"unit": "top-1 %", "chance": 5.0}},
            "equivariance/rotation": {"value": r2, "protocol": {"unit": "R²", "chance": 0.0}},
            "action_use/M=1": {"value": 1.2, "protocol": {"unit": "ratio", "chance": 1.0}}}}

    lines = format_table({"trained": res("RotatingObjects", 60.0, 0.3),
                          "random init": res("RotatingObjects", 20.0, 0.0)}).splitlines()
    assert lines[0] == "| metric | trained | random init | chance | paper (3DIEBench) |"
    assert "| linear_probe/z_agg/M=5 (top-1 %) | 60.00 | 20.00 | 5.00 | 87.41 |" in lines
    assert "| equivariance/rotation (R²) | 0.300 | 0.000 | 0.000 | 0.710 |" in lines
    assert "| action_use/M=1 (ratio) | 1.200 | 1.200 | 1.000 | – |" in lines
    legend = [line for line in lines if line.startswith("- ")]
    assert legend[0] == ("- chance: a uniform guess (top-1 = 100 / classes), the train mean (R² = 0), a predictor "
                         "that ignores the action (action_use = 1)")
    assert legend[1].startswith("- paper (3DIEBench): seq-JEPA conditioned on rotation, M_tr = 3, on 3DIEBench")
    # another world: chance only, no paper column
    lines = format_table({"trained": res("Saccades", 60.0, 0.3)}).splitlines()
    assert lines[0] == "| metric | trained | chance |"
