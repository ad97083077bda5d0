"""The benchmark scripts' reports are written from what was measured (no figure of their own)."""

import importlib.util

from conftest import ROOT


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def metric(v: float) -> dict:
    return {"value": v, "protocol": {"probe": "p"}}


def test_world_learning_report_lists_every_measured_metric_and_nothing_else():
    wl = load("world_learning")
    run = {"env": "seqjepa/Saccades-v0", "command": "python benchmarks/world_learning.py", "settings": ["a=1"],
           "train_s": 10.0, "eval_s": 5.0, "threads": 2, "torch": "2.x", "factors": ["position"], "m_val": 5,
           "world_options": {"scene_size": 64},
           "trained": {"linear_probe/encoder": metric(31.0), "equivariance/position": metric(0.5),
                       "path_integration/position/full/M=7": metric(0.8)},
           "random_init": {"linear_probe/encoder": metric(20.0), "equivariance/position": metric(0.625),
                           "path_integration/position/full/M=7": metric(0.1)}}
    text = wl.report({"runs": [run]})
    assert "| seqjepa/Saccades-v0 | — | `a=1` | encoder linear probe top-1 % | 31.0 | 20.0 | +11.0 |" in text
    assert "| relative-action R² (position) from [z_1, z_2] | 0.500 | 0.625 | -0.125 |" in text
    assert "M=7 | 0.800 | 0.100 | +0.700 |" in text
    assert "z_agg linear probe" not in text and "M=3" not in text  # not measured: not reported
    assert "--set a=1" in text and '`{"scene_size": 64}`' in text


def test_world_learning_report_averages_seeds_of_the_same_settings_only():
    wl = load("world_learning")

    def run(seed, enc, rand, settings=(), clean=None, steps=1500):
        trained = {"linear_probe/encoder": metric(enc)} | ({"linear_probe/encoder/clean": metric(clean)} if clean
                                                           else {})
        random_init = {"linear_probe/encoder": metric(rand)} | ({"linear_probe/encoder/clean": metric(10.0)}
                                                                if clean else {})
        return {"env": "seqjepa/Augmentations-v0", "seed": seed, "steps": steps, "command": "c",
                "settings": [*settings, f"train.seed={seed}", f"eval.seed={seed}"], "train_s": 1.0, "eval_s": 1.0,
                "threads": 2, "torch": "2.x", "factors": [], "m_val": 5, "trained": trained, "random_init": random_init}

    text = wl.report({"runs": [run(0, 14.0, 12.0), run(1, 10.0, 12.0, clean=13.0),
                               run(2, 30.0, 12.0, ["world.options.x=1", "eval.suites=[linear_probe]"]),
                               run(0, 25.0, 12.0, steps=12000)]})
    # Seeds 0 and 1 share their settings: means 12.0 vs 12.0, each seed's difference listed.
    assert "| encoder linear probe top-1 % | 12.0 | 12.0 | +0.0 | +2.0 / -2.0 (seed 0, 1) |" in text
    # A metric that one seed did not measure is averaged over the seeds that did, and marked for the other.
    assert "on the clean view | 13.0 | 10.0 | +3.0 | — / +3.0 (seed 0, 1) |" in text
    # Other settings (x=1) are another block, never mixed into the mean, and the block names its world option.
    assert "| 1500 | `x=1` | encoder linear probe top-1 % | 30.0 | 12.0 | +18.0 | +18.0 (seed 2) |" in text
    # So are other step counts, and each block says its steps.
    assert ("| seqjepa/Augmentations-v0 | 12000 | — | encoder linear probe top-1 % | 25.0 | 12.0 | +13.0 | +13.0 "
            "(seed 0) |" in text)
    assert "| seqjepa/Augmentations-v0 | 1500 | — | encoder linear probe top-1 % | 12.0 |" in text
    assert text.count("- `seqjepa/Augmentations-v0`, seed ") == 4


def test_action_use_sees_actions_only_where_the_predictor_reads_them(smoke_cfg, tmp_path):
    from seqjepa.config import apply_overrides
    from seqjepa.train import train

    au = load("action_use")
    apply_overrides(smoke_cfg, ["train.eval_after=false"])
    train(smoke_cfg, tmp_path / "both", log=lambda s: None)
    apply_overrides(smoke_cfg, ["model.act_cond=none"])
    train(smoke_cfg, tmp_path / "none", log=lambda s: None)
    both = au.action_use(tmp_path / "both", batches=2, batch_size=16, seed=0)
    none = au.action_use(tmp_path / "none", batches=2, batch_size=16, seed=0)
    assert none["true"] == none["last shuffled"] == none["all shuffled"]  # no action pathway: nothing changes
    assert both["last shuffled"] != both["true"]


def test_view_diagnostics_effective_rank_counts_equal_directions_and_the_ceiling_runs(smoke_cfg):
    import torch

    from seqjepa.train import build_bank, build_model, build_world

    vd = load("view_diagnostics")
    basis = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(0)))[0]
    signs = torch.randint(0, 2, (4096, 3), generator=torch.Generator().manual_seed(1)).float() * 2 - 1
    rank, top5 = vd.effective_rank(signs @ basis[:3] + 5.0)     # three equal directions, any offset
    assert abs(rank - 3) < 0.05 and abs(top5 - 1) < 1e-5
    rank, top5 = vd.effective_rank(torch.randn(4096, 32, generator=torch.Generator().manual_seed(2)))
    assert 28 < rank <= 32 and top5 < 0.25

    world = build_world(smoke_cfg, torch.device("cpu"), "train")
    train = build_bank(smoke_cfg, world, "train", lambda m: None)
    test_world = build_world(smoke_cfg, torch.device("cpu"), "test")
    test = build_bank(smoke_cfg, test_world, "test", lambda m: None)
    model = build_model(smoke_cfg, world)
    one, many, clean = vd.supervised_ceiling(model, smoke_cfg, world, train, test, steps=2, views=2, seed=0,
                                             test_world=test_world)
    assert 0 <= one <= 100 and 0 <= many <= 100 and clean is None   # the objects world has no clean view


def test_supervised_equivariance_reads_a_visible_action_and_not_a_hidden_one(tmp_path):
    """Two views that show the action (the saccade's glimpse moves over the scene) give a positive R² once the
    encoder is trained on it; the same pairs with the relative action drawn at random give none."""
    import torch

    from envs.sequences import ViewBank
    from seqjepa.config import apply_overrides, preset
    from seqjepa.train import build_bank, build_model, build_world

    vd = load("view_diagnostics")
    smoke_cfg = preset("smoke", "seqjepa/Saccades-v0")
    apply_overrides(smoke_cfg, [f"world.cache_dir={tmp_path}", "world.options.scene_size=32",
                                "world.options.glimpse=16", "world.options.per_class=20",
                                "world.options.num_classes=4", "world.bank_objects=80", "world.bank_views=4"])
    world = build_world(smoke_cfg, torch.device("cpu"), "train")
    train = build_bank(smoke_cfg, world, "train", lambda m: None)
    test_world = build_world(smoke_cfg, torch.device("cpu"), "test")
    test = build_bank(smoke_cfg, test_world, "test", lambda m: None)
    *_, clean = vd.supervised_ceiling(build_model(smoke_cfg, world), smoke_cfg, world, train, test, steps=2, views=2,
                                      seed=0, test_world=test_world)
    assert 0 <= clean <= 100                                   # the glimpse on each test scene's class object
    r2 = vd.supervised_equivariance(build_model(smoke_cfg, world), smoke_cfg, world, train, test, steps=150, seed=0)
    assert list(r2) == ["position"] and r2["position"] > 0.3
    g = torch.Generator().manual_seed(0)
    shuffled = [ViewBank(b.views, b.params[torch.randperm(len(b.params), generator=g)], b.labels, b.episodes)
                for b in (train, test)]
    r2 = vd.supervised_equivariance(build_model(smoke_cfg, world), smoke_cfg, world, *shuffled, steps=150, seed=0)
    assert r2["position"] < 0.1


def test_view_diagnostics_loads_any_method_while_planning_refuses_a_baseline(smoke_cfg, tmp_path, capsys):
    import sys

    import pytest

    from agents.plan_eval import load_model
    from seqjepa.config import apply_overrides
    from seqjepa.train import train

    apply_overrides(smoke_cfg, ["train.eval_after=false", "model.method=simclr"])
    train(smoke_cfg, tmp_path / "simclr", log=lambda s: None)
    with pytest.raises(ValueError, match="'simclr' model without a predictor"):
        load_model(tmp_path / "simclr" / "latest.pt")
    vd = load("view_diagnostics")
    argv, sys.argv = sys.argv, ["view_diagnostics.py", str(tmp_path / "simclr"), "--steps", "0"]
    try:
        vd.main()
    finally:
        sys.argv = argv
    assert "effective rank of z on 1024 train-bank views: trained" in capsys.readouterr().out
