"""A checkpoint handed to `run.py eval` / `run.py plan` is checked before anything is built from it, and decides
nothing about this machine: every bad file is one line naming it and what is wrong (exit 2 through run.py), no
network is allocated from unchecked hparams, views are cached where the user says, and no plug-in module is
imported on a checkpoint's word. Also: the report accumulates suites, and long steps show progress."""

from __future__ import annotations

import json
import random
import re
import sys
import time

import pytest
import torch

import run
from eval.from_checkpoint import evaluate_checkpoint, merge_results, open_checkpoint
from seqjepa.progress import Progress
from seqjepa import checkpoint
from seqjepa.checkpoint import CheckpointError
from seqjepa.config import WorldConfig

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A smoke checkpoint (two steps) and the cache folder its run used."""
    from seqjepa.config import preset
    from seqjepa.options import apply_overrides
    from seqjepa.train import train

    tmp = tmp_path_factory.mktemp("good")
    cfg = preset("smoke")
    apply_overrides(cfg, [f"world.cache_dir={tmp / 'run-cache'}", "train.progress=off", "train.steps=2",
                          "train.threads=1", "world.bank_objects=8", "world.bank_views=4"])
    train(cfg, tmp / "run", log=lambda s: None)
    return tmp / "run" / "latest.pt"


def variant(good, tmp_path, name: str, change) -> str:
    """A copy of the good checkpoint with ``change(ckpt)`` applied, saved as ``name``."""
    ckpt = torch.load(good, weights_only=True)
    change(ckpt)
    path = tmp_path / name
    checkpoint.save(ckpt, path)
    return path


def _set(key, value):
    return lambda c: c["model_hparams"].__setitem__(key, value)


def _other_architecture(c):
    c["model_hparams"]["width"] = 16  # the weights stay width 8's


def _text(path):
    path.write_text("this is not a checkpoint\n")


def _random(path):
    path.write_bytes(random.Random(0).randbytes(4096))


def _truncated(path, good):
    data = good.read_bytes()
    path.write_bytes(data[:len(data) // 2])


# (case id, how to make the file, what the one line must say)
FILES = [
    ("empty", lambda p, g: p.write_bytes(b""), "empty file"),
    ("text", lambda p, g: _text(p), "not a PyTorch checkpoint"),
    ("random bytes", lambda p, g: _random(p), "not a PyTorch checkpoint"),
    ("truncated", _truncated, "not a PyTorch checkpoint"),
]

HPARAMS = [
    ("no model_hparams", lambda c: c.pop("model_hparams"), "no model_hparams"),
    ("model_hparams a list", lambda c: c.__setitem__("model_hparams", [1, 2]), "model_hparams: got a list"),
    ("unknown key", _set("bogus", 1), "unknown key(s) 'bogus'"),
    ("missing action_dim", lambda c: c["model_hparams"].pop("action_dim"), "missing action_dim"),
    ("width a string", _set("width", "wide"), "model_hparams.width: got 'wide'"),
    ("depth off the list", _set("depth", 11), "model_hparams.depth: got 11; allowed: one of 10, 18, 34"),
    ("negative dropout", _set("dropout", -0.5), "model_hparams.dropout: got -0.5"),
    ("bad action_bn", _set("action_bn", "x"), "model_hparams.action_bn: got 'x'"),
    ("agg_heads not dividing", _set("agg_heads", 3), "agg_heads=3 must divide"),
    ("another architecture", _other_architecture, "do not fit the seqjepa network"),
    ("width 10^6", _set("width", 10 ** 6), "model_hparams.width: got 1000000"),
    ("a wider network than the weights", _set("width", 32), "do not fit the seqjepa network"),
    ("unknown method", lambda c: c.__setitem__("method", "bogus"), "method: got 'bogus'"),
    ("baseline method on seq-JEPA weights", lambda c: c.__setitem__("method", "simclr"), "unknown key(s)"),
    ("weights not tensors", lambda c: c.__setitem__("model", {"a": 1}), "model: expected a mapping"),
    ("no step", lambda c: c.pop("step"), "step: got None"),
    ("negative step", lambda c: c.__setitem__("step", -3), "step: got -3"),
    ("no config", lambda c: c.pop("config"), "no stored config"),
    ("bad config value", lambda c: c["config"]["train"].__setitem__("steps", 0), "stored config: train.steps: got 0"),
    ("unknown world", lambda c: c["config"]["world"].__setitem__("env", "nowhere/Nothing-v0"),
     "is not a registered world"),
    ("plug-in module named only in the file",
     lambda c: c["config"]["world"].__setitem__("env", "seqjepa_plugin_never_imported:my/World-v0"),
     "needs the plug-in module 'seqjepa_plugin_never_imported'"),
]


def one_line_through_run(path, capsys, command="eval") -> str:
    rc = run.main([command, "--ckpt", str(path)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(path) in err, err
    return err


@pytest.mark.parametrize("case, make, says", FILES, ids=[c[0] for c in FILES])
def test_a_file_that_is_not_a_checkpoint_is_one_line(case, make, says, good, tmp_path, capsys):
    path = tmp_path / "latest.pt"
    make(path, good)
    with pytest.raises(CheckpointError, match=says):
        open_checkpoint(path)
    assert says in one_line_through_run(path, capsys)


@pytest.mark.parametrize("case, change, says", HPARAMS, ids=[c[0] for c in HPARAMS])
def test_a_damaged_checkpoint_is_one_line_before_any_network_is_built(case, change, says, good, tmp_path, capsys,
                                                                      monkeypatch):
    path = variant(good, tmp_path, "latest.pt", change)
    built = []
    from eval import from_checkpoint
    real = from_checkpoint.checkpoint_network
    monkeypatch.setattr(from_checkpoint, "checkpoint_network", lambda *a, **k: built.append(1) or real(*a, **k))
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {path}: ") + ".*" + re.escape(says)):
        open_checkpoint(path)
    assert time.perf_counter() - t0 < 30  # width 10^6 is checked on the meta device, not allocated
    assert says in one_line_through_run(path, capsys)
    assert built == []


@pytest.mark.parametrize("method", ["seqjepa", "simclr", "byol", "vicreg", "vicreg_traj", "sen", "equimod", "sie",
                                    "cond_byol", "conv_jepa"])
def test_every_method_s_network_passes_the_check_and_a_wider_one_does_not(method):
    from eval.from_checkpoint import check_network
    from seqjepa.baselines import build
    from seqjepa.config import preset

    cfg = preset("smoke")
    cfg.model.method = method
    model = build(cfg.model, action_dim=4, preset="smoke")
    ckpt = {"method": method, "model": model.state_dict(), "model_hparams": dict(model.hparams)}
    check_network(ckpt, "x.pt")  # built on the meta device: reading its hparams back must work there too
    ckpt["model_hparams"]["width"] = 2 * model.hparams["width"]
    with pytest.raises(CheckpointError, match=f"its weights do not fit the {method} network"):
        check_network(ckpt, "x.pt")


def test_a_size_beyond_the_weights_is_refused_before_the_meta_build():
    """Sizes without a config bound (a baseline's projector widths) are capped by the weights the file holds."""
    from eval.from_checkpoint import check_network
    ckpt = {"method": "simclr", "model": {"w": torch.zeros(10)}, "model_hparams": {"proj_dims": [8, 10 ** 9]}}
    with pytest.raises(CheckpointError, match=r"model_hparams.proj_dims: got \[8, 1000000000\]; a network of that "
                                              r"size holds more than the 10 weights in this file"):
        check_network(ckpt, "x.pt")


def test_plan_refuses_the_same_files(good, tmp_path, capsys):
    path = tmp_path / "latest.pt"
    _text(path)
    assert "not a PyTorch checkpoint" in one_line_through_run(path, capsys, "plan")
    path = variant(good, tmp_path, "other.pt", _other_architecture)
    assert "do not fit" in one_line_through_run(path, capsys, "plan")


def test_every_constructor_setting_has_declared_bounds():
    """check_hparams validates each model_hparams key against a config section; a new constructor parameter of a
    method must be declared in one (ModelConfig, the method's Options, WorldHparams)."""
    import dataclasses
    import inspect

    from eval.from_checkpoint import WorldHparams
    from seqjepa.baselines import method_class
    from seqjepa.baselines import METHODS
    from seqjepa.config import ModelConfig

    declared = {f.name for f in dataclasses.fields(ModelConfig)} | {f.name for f in dataclasses.fields(WorldHparams)}
    for method in METHODS:
        cls = method_class(method)
        own = {f.name for f in dataclasses.fields(cls.Options)} if cls.Options is not None else set()
        assert set(inspect.signature(cls).parameters) <= declared | own, method


# -- confinement ---------------------------------------------------------------------------------------------------


def test_the_checkpoint_does_not_choose_the_cache_or_import_a_plugin(good, tmp_path):
    _, cfg = open_checkpoint(good)
    assert cfg.world.cache_dir == WorldConfig().cache_dir  # not the run's tmp folder the file names
    _, cfg = open_checkpoint(good, [f"world.cache_dir={tmp_path / 'mine'}"])
    assert cfg.world.cache_dir == str(tmp_path / "mine")
    _, cfg = open_checkpoint(good, trusted=True)  # this process wrote it: the run's own settings stand
    assert cfg.world.cache_dir == str(good.parent.parent / "run-cache")

    # A registered world behind a module name: used without importing the module.
    path = variant(good, tmp_path, "a.pt", lambda c: c["config"]["world"].__setitem__(
        "env", "seqjepa_plugin_never_imported:seqjepa/RotatingObjects-v0"))
    _, cfg = open_checkpoint(path)
    assert cfg.world.env == "seqjepa/RotatingObjects-v0" and "seqjepa_plugin_never_imported" not in sys.modules
    # Unknown world behind a module: refused, not imported; named by the user: imported (and here not found).
    path = variant(good, tmp_path, "b.pt", lambda c: c["config"]["world"].__setitem__(
        "env", "seqjepa_plugin_never_imported:my/World-v0"))
    with pytest.raises(CheckpointError, match="--set world.env=seqjepa_plugin_never_imported:my/World-v0"):
        open_checkpoint(path)
    assert "seqjepa_plugin_never_imported" not in sys.modules
    _, cfg = open_checkpoint(path, ["world.env=seqjepa_plugin_never_imported:my/World-v0"])
    import envs
    with pytest.raises(ValueError, match="cannot import plug-in module 'seqjepa_plugin_never_imported'"):
        envs.world_class(cfg.world.env)


def test_eval_caches_views_where_the_user_says(good, tmp_path):
    mine = tmp_path / "mine"
    stored = good.parent.parent / "run-cache"
    before = {p.name for p in stored.glob("bank-*.pt")}
    evaluate_checkpoint(good, [f"world.cache_dir={mine}", "eval.random_init_baseline=false",
                               "eval.train_sequences=16", "eval.test_sequences=16"],
                        suites=["equivariance"], tensorboard=False, log=lambda s: None)
    assert list(mine.glob("bank-*.pt")), "the banks went elsewhere"
    assert {p.name for p in stored.glob("bank-*.pt")} == before


# -- the report accumulates ----------------------------------------------------------------------------------------


def _entry(value, suite_key_protocol=None):
    return {"value": value, "protocol": {"unit": "top-1 %", **(suite_key_protocol or {})}}


def _results(step, metrics, suites, protocol=None, notes=None, random=None):
    out = {"trained": {"metrics": metrics, "suites": suites, "notes": notes or {}, "protocol": protocol or {"p": 1},
                       "step": step}, "checkpoint": "runs/x/latest.pt"}
    if random is not None:
        out["random init"] = {"metrics": random, "suites": suites, "notes": {}, "protocol": protocol or {"p": 1},
                              "step": 0}
    return out


def test_a_later_suite_is_merged_and_a_rerun_replaces_only_its_own_numbers(tmp_path):
    ckpt = tmp_path / "latest.pt"
    first = _results(7, {"linear_probe/encoder": _entry(50.0), "equivariance/rotation": _entry(0.5),
                         "absolute/rotation": _entry(0.4)}, ["linear_probe", "equivariance"],
                     random={"linear_probe/encoder": _entry(20.0), "equivariance/rotation": _entry(0.0)})
    (tmp_path / "eval.json").write_text(json.dumps(first))
    knn = _results(7, {"knn/encoder": _entry(40.0)}, ["knn"], protocol={"p": 2},
                   random={"knn/encoder": _entry(10.0)})
    merged = merge_results(ckpt, knn, log=lambda s: None)
    assert set(merged["trained"]["metrics"]) == {"linear_probe/encoder", "equivariance/rotation",
                                                 "absolute/rotation", "knn/encoder"}
    assert merged["trained"]["suites"] == ["linear_probe", "equivariance", "knn"]
    assert merged["random init"]["metrics"]["linear_probe/encoder"]["value"] == 20.0
    assert merged["random init"]["metrics"]["knn/encoder"]["value"] == 10.0
    assert merged["trained"]["earlier_suites"] == ["linear_probe", "equivariance"]
    assert merged["trained"]["suite_protocols"]["linear_probe"] == {"p": 1}  # theirs, not this call's
    # a re-run of equivariance replaces its two keys (absolute/ belongs to it) and nothing else
    (tmp_path / "eval.json").write_text(json.dumps(merged))
    again = _results(7, {"equivariance/rotation": _entry(0.6)}, ["equivariance"],
                     random={"equivariance/rotation": _entry(0.1)})
    merged = merge_results(ckpt, again, log=lambda s: None)
    assert "absolute/rotation" not in merged["trained"]["metrics"]
    assert merged["trained"]["metrics"]["equivariance/rotation"]["value"] == 0.6
    assert merged["random init"]["metrics"]["equivariance/rotation"]["value"] == 0.1
    assert merged["trained"]["metrics"]["knn/encoder"]["value"] == 40.0
    # another step: the old numbers describe another network and are dropped
    lines = []
    fresh = merge_results(ckpt, _results(9, {"knn/encoder": _entry(1.0)}, ["knn"]), log=lines.append)
    assert set(fresh["trained"]["metrics"]) == {"knn/encoder"} and "another checkpoint or step" in lines[0]


def test_a_random_init_of_an_earlier_evaluation_stays_when_this_one_has_none(tmp_path):
    first = _results(3, {"linear_probe/encoder": _entry(50.0)}, ["linear_probe"],
                     random={"linear_probe/encoder": _entry(20.0)})
    (tmp_path / "eval.json").write_text(json.dumps(first))
    merged = merge_results(tmp_path / "latest.pt", _results(3, {"knn/encoder": _entry(40.0)}, ["knn"]),
                           log=lambda s: None)
    assert merged["random init"]["metrics"] == {"linear_probe/encoder": _entry(20.0)}


def test_an_unreadable_report_is_replaced(tmp_path):
    (tmp_path / "eval.json").write_text("{half")
    lines = []
    new = _results(1, {"knn/encoder": _entry(1.0)}, ["knn"])
    assert merge_results(tmp_path / "latest.pt", new, log=lines.append) == new and "not readable" in lines[0]


# -- progress ------------------------------------------------------------------------------------------------------


def test_progress_lines_without_a_terminal_and_a_bar_with_one(capsys):
    lines = []
    with Progress("eval: features", total=4, unit="batches", log=lines.append, every=0) as p:
        p.update(note="train split")
        p.update(0, note="still rendering")
    assert lines == ["eval: features: 1/4 batches, train split (0 s)",
                     "eval: features: 1/4 batches, still rendering (0 s)"]
    lines.clear()
    with Progress("eval: knn", log=lines.append) as p:  # a short step: nothing extra in the log
        p.update(note="fitting")
    assert lines == []
    with Progress("plan: goal H=1 oracle_pixels", total=2, unit="CEM rounds", log=lines.append, bar=True) as p:
        p.update(note="CEM iteration 1/2")
    assert lines == [] and "oracle_pixels" in capsys.readouterr().err


def test_evaluate_reports_each_long_step(monkeypatch, tmp_path, good):
    """With no terminal, every step of an evaluation (features, each suite's fits) says what it is doing."""
    from seqjepa import progress
    monkeypatch.setattr(progress, "EVERY", 0.0)
    lines = []
    evaluate_checkpoint(good, [f"world.cache_dir={tmp_path}", "eval.random_init_baseline=false",
                               "eval.train_sequences=16", "eval.test_sequences=16"],
                        suites=["linear_probe", "equivariance"], tensorboard=False, log=lines.append)
    assert any(line.startswith("eval: features of the train split: 1/") for line in lines)
    assert any(line.startswith("eval: linear_probe: fitting linear_probe/z_agg/M=1") for line in lines)
    assert any(line.startswith("eval: equivariance: fitting equivariance/rotation") for line in lines)
