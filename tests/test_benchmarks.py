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
    assert "| seqjepa/Saccades-v0 | encoder linear probe top-1 % | 31.0 | 20.0 | +11.0 |" in text
    assert "| relative-action R² (position) from [z_1, z_2] | 0.500 | 0.625 | -0.125 |" in text
    assert "M=7 | 0.800 | 0.100 | +0.700 |" in text
    assert "z_agg linear probe" not in text and "M=3" not in text  # not measured: not reported
    assert "--set a=1" in text and '`{"scene_size": 64}`' in text


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
