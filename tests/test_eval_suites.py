"""Tests of the evaluation suites, the plots and the TensorBoard inspection, on tiny models and worlds."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from envs.base import Factor, World
from envs.sequences import ViewBank, random_policy, rollout
from eval import knn, path_integration, retrieval
from eval.plots import accuracy_vs_m, path_integration_plot
from eval.suite import SUITE_NAMES, evaluate, resolve_suites, suite_of
from seqjepa.config import EvalConfig, preset
from seqjepa.model import SeqJEPA

PROTOCOL_KEYS = {"probe", "views", "sampling", "seed"}
TRAINED_HEAD_KEYS = {"epochs", "lr", "batch_size"}  # every probe but the exact linear regressor


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models


class Blocks(World):
    """3 classes drawn as a colour, a 2-d position param visible as a bright square; ``ood`` shifts the range."""

    @dataclasses.dataclass
    class Options:
        split: str = "train"
        ood: bool = False

    name = "blocks"

    def __init__(self, split: str = "train", ood: bool = False, noise: bool = False):
        self.options = self.Options(split, ood)
        self.device = torch.device("cpu")
        self.noise = noise  # views of pure noise: nothing in them says where the observer is
        self.num_classes, self.num_episodes, self.image_size = 3, 12, 8
        self.action_dim = self.param_dim = 2
        self.factors = {"position": Factor(0, 2, "linear")}
        self.action_low, self.action_high = -2 * torch.ones(2), 2 * torch.ones(2)
        self._noise = torch.Generator().manual_seed(123)

    def reset(self, n, generator, episodes=None):
        if episodes is None:
            episodes = torch.randint(0, self.num_episodes, (n,), generator=generator)
        params = torch.rand(n, 2, generator=generator) * (0.5 if self.options.ood else 1.0)
        params = params + (0.5 if self.options.ood else 0.0)
        return {"label": episodes % 3, "episode": episodes, "params": params}

    def step(self, state, action, generator):
        return {**state, "params": state["params"] + action}

    def render(self, state):
        n = state["label"].shape[0]
        if self.noise:
            return torch.randint(0, 256, (n, 3, 8, 8), generator=self._noise, dtype=torch.uint8)
        img = torch.zeros(n, 3, 8, 8)
        img[:, 0] = (state["label"].float() / 2)[:, None, None]
        pos = (state["params"].clamp(0, 1) * 6).long()
        for i in range(n):
            img[i, 1, pos[i, 0]:pos[i, 0] + 2, pos[i, 1]:pos[i, 1] + 2] = 1.0
        return (img * 255).to(torch.uint8)

    def relative(self, p_from, p_to):
        return p_to - p_from

    def sample_action(self, state, generator):
        return torch.rand(state["label"].shape[0], 2, generator=generator) - 0.5

    def absolute(self, params):
        return {"position": params[..., :2]}


def tiny_model(act_cond: str = "both") -> SeqJEPA:
    torch.manual_seed(0)
    return SeqJEPA(action_dim=2, depth=10, width=4, stem="cifar", act_dim=8, agg_layers=1, agg_heads=2,
                   pred_hidden=16, act_cond=act_cond)


def tiny_cfg(**kw) -> EvalConfig:
    base = dict(m_val=[1, 2], train_sequences=48, test_sequences=24, linear_epochs=2, mlp_epochs=2, lr=1e-3,
                batch_size=24, mlp_hidden=16, seed=0)
    return EvalConfig(**{**base, **kw})


@pytest.fixture
def short_paths(monkeypatch):
    monkeypatch.setattr(path_integration, "PATH_M", (1, 2))  # 3 views instead of the paper's 8: faster


def bn_buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


# -- every suite -------------------------------------------------------------------------------------------------------


def test_all_suites_run_with_protocols_and_frozen_bn(short_paths):
    model, cfg = tiny_model(), tiny_cfg()
    model.train()
    before = bn_buffers(model)
    res = evaluate(model, Blocks("train"), Blocks("test"), cfg, device="cpu", suites="all",
                   world_ood=Blocks("test", ood=True), log=lambda s: None)
    after = bn_buffers(model)
    assert all(torch.equal(before[k], after[k]) for k in before), "evaluation moved BatchNorm statistics"
    assert model.training and model.encoder.training  # modes restored
    assert res["suites"] == list(SUITE_NAMES) and res["notes"] == {}
    keys = set(res["metrics"])
    expected = {"linear_probe/z_agg/M=1", "linear_probe/z_agg/M=2", "linear_probe/encoder",
                "equivariance/position", "absolute/position", "ood/linear_probe/encoder", "ood/equivariance/position",
                "ood/absolute/position", "knn/z_agg/M=2", "knn/encoder", "retrieval/M=1/mrr", "retrieval/M=2/hit@5",
                "action_use/M=1", "action_use/M=2"}
    expected |= {f"path_integration/position/{c}/M={m}" for c in path_integration.CONDITIONS for m in (1, 2)}
    assert expected <= keys, expected - keys
    for name, entry in res["metrics"].items():
        assert isinstance(entry["value"], float), name
        need = PROTOCOL_KEYS | (set() if entry["protocol"].get("head") == "linear" else TRAINED_HEAD_KEYS)
        assert need <= set(entry["protocol"]), (name, need - set(entry["protocol"]))
    assert res["metrics"]["ood/equivariance/position"]["protocol"]["test_world"].endswith("ood=True)")
    assert res["metrics"]["path_integration/position/no_vision/M=2"]["protocol"]["condition"] == "no_vision"
    assert 0 < res["metrics"]["retrieval/M=1/mrr"]["value"] <= 1
    assert {suite_of(k) for k in keys} == set(res["suites"])  # what merging a later evaluation relies on
    json.dumps(res)
    # plots from the results, with the caption (chance level, ablations) under the 640x420 chart
    img = accuracy_vs_m({"trained": res})
    assert img.width == 640 and img.height > 420
    assert path_integration_plot(res) is not None


def test_skips_are_noted_and_names_checked(short_paths):
    res = evaluate(tiny_model(), Blocks("train"), Blocks("test"), tiny_cfg(), device="cpu",
                   suites=["ood", "knn"], log=lambda s: None)
    assert res["suites"] == ["knn"] and "ood" in res["notes"]
    assert all(k.startswith("knn/") for k in res["metrics"])
    with pytest.raises(ValueError, match="allowed"):
        resolve_suites(["linear_probe", "nope"])
    assert resolve_suites(["knn", "linear_probe"]) == ["linear_probe", "knn"]  # canonical order


def test_a_suite_needing_two_views_runs_alone_whatever_m_val_says():
    # run.py eval --suite equivariance with the cpu preset's m_val up to 5 used to fail: z_agg was asked of M = 5
    # views from 2-view sequences.
    res = evaluate(tiny_model(), Blocks("train"), Blocks("test"), tiny_cfg(m_val=[1, 2, 5]), device="cpu",
                   suites=["equivariance"], log=lambda s: None)
    assert res["metrics"]["equivariance/position"]["protocol"]["views"] == 2
    assert all(k.startswith(("equivariance/", "absolute/")) for k in res["metrics"])


def test_path_integration_at_m1_is_the_given_action(short_paths):
    # Views are noise: only the action can tell the target, which at M = 1 *is* a_1.
    cfg = tiny_cfg(m_val=[1], train_sequences=384, test_sequences=128, linear_epochs=40, batch_size=64, lr=1e-2)
    res = evaluate(tiny_model(), Blocks("train", noise=True), Blocks("test", noise=True), cfg, device="cpu",
                   suites=["path_integration"], log=lambda s: None)
    m = res["metrics"]
    assert m["path_integration/position/full/M=1"]["value"] > 0.95
    assert m["path_integration/position/no_vision/M=1"]["value"] > 0.95  # visual features zeroed, actions kept
    assert m["path_integration/position/no_actions/M=1"]["value"] < 0.3   # nothing left that knows a_1
    assert m["path_integration/position/full/M=1"]["protocol"]["head"] == "linear"


def test_path_integration_inputs_ablate_what_they_say():
    model = tiny_model()
    g = torch.Generator().manual_seed(0)
    batch = rollout(Blocks(), random_policy, 6, 3, g)
    z = model.eval().encode(batch.views).detach()
    full = path_integration.inputs(model, z, batch.actions, 2, "full", "cpu")
    no_act = path_integration.inputs(model, z, batch.actions, 2, "no_actions", "cpu")
    no_vis = path_integration.inputs(model, z, batch.actions, 2, "no_vision", "cpu")
    d = model.d_model
    assert full.shape == (6, d + model.act_dim)
    assert torch.all(no_act[:, d:] == 0) and not torch.all(full[:, d:] == 0)
    torch.testing.assert_close(no_vis[:, d:], full[:, d:])  # same action slot
    zero_z = model.aggregate(torch.zeros_like(z[:, :2]), model.embed_actions(batch.actions[:, :2]))
    torch.testing.assert_close(no_vis[:, :d], zero_z.detach())
    # a model without actions gets the raw a_M
    plain = tiny_model("none").eval()
    x = path_integration.inputs(plain, plain.encode(batch.views).detach(), batch.actions, 2, "full", "cpu")
    torch.testing.assert_close(x[:, -2:], batch.actions[:, 1])
    # views_only: no action reaches the input; the aggregate of the m + 1 views beside both endpoints
    seen = path_integration.inputs(model, z, batch.actions, 2, "views_only", "cpu")
    assert seen.shape == (6, d + 2 * model.dim)
    torch.testing.assert_close(seen, path_integration.inputs(model, z, torch.randn_like(batch.actions), 2,
                                                             "views_only", "cpu"))
    torch.testing.assert_close(seen[:, :d], model.aggregate(z[:, :3], None).detach())
    torch.testing.assert_close(seen[:, d:], torch.cat([z[:, 0], z[:, 2]], dim=1))
    with pytest.raises(ValueError, match="m \\+ 1 = 3 views"):
        path_integration.inputs(model, z[:, :2], batch.actions, 2, "views_only", "cpu")


class PositionEncoder(SeqJEPA):
    """A tiny seq-JEPA whose encoder reports where the bright square of a Blocks view is (its first two dims): an
    encoder that carries position, as training should make one."""

    def encode(self, views):
        square = views[:, :, 1].float()                                    # [B, T, 8, 8]
        mass = square.sum((-1, -2)).clamp_min(1)
        idx = torch.arange(8, dtype=torch.float32)
        z = torch.zeros(*views.shape[:2], self.dim)
        z[..., 0] = (square.sum(-1) * idx).sum(-1) / mass
        z[..., 1] = (square.sum(-2) * idx).sum(-1) / mass
        return z


@pytest.mark.slow
def test_path_integration_views_only_needs_vision_that_carries_position(short_paths):
    """The learned part: with noise views (nothing visible says where the observer is) views_only finds nothing
    while full still reads the actions (the paper's protocol, solved without vision); with an encoder that carries
    position, views_only reads the move from the views alone."""
    cfg = tiny_cfg(m_val=[1], train_sequences=384, test_sequences=128, linear_epochs=40, batch_size=64, lr=1e-2)
    blind = evaluate(tiny_model(), Blocks("train", noise=True), Blocks("test", noise=True), cfg, device="cpu",
                     suites=["path_integration"], log=lambda s: None)["metrics"]
    assert blind["path_integration/position/full/M=2"]["value"] > 0.8           # actions alone do it
    assert blind["path_integration/position/views_only/M=2"]["value"] < 0.2
    torch.manual_seed(0)
    sighted = PositionEncoder(action_dim=2, depth=10, width=4, stem="cifar", act_dim=8, agg_layers=1, agg_heads=2,
                              pred_hidden=16)
    seen = evaluate(sighted, Blocks("train"), Blocks("test"), cfg, device="cpu", suites=["path_integration"],
                    log=lambda s: None)["metrics"]
    entry = seen["path_integration/position/views_only/M=2"]
    assert entry["value"] > 0.5, entry["value"]
    assert entry["protocol"]["condition"] == "views_only" and entry["protocol"]["views"] == 3
    assert entry["protocol"]["action_input"].startswith("none")
    assert seen["path_integration/position/full/M=2"]["protocol"]["protocol"] == "paper Fig. 6"


# -- retrieval and k-NN ------------------------------------------------------------------------------------------------


def test_action_use_is_one_when_the_predictor_ignores_the_action_and_skips_without_it():
    model, cfg = tiny_model(), tiny_cfg(test_sequences=48)
    res = evaluate(model, Blocks("train"), Blocks("test"), cfg, device="cpu", suites=["action_use"],
                   log=lambda s: None)["metrics"]
    entry = res["action_use/M=2"]
    assert entry["value"] == pytest.approx(entry["protocol"]["loss_shuffled"] / entry["protocol"]["loss_true"])
    assert entry["protocol"]["sequences"] == 48
    # A random predictor's output still moves with a_M; with its action slot's weights zeroed it cannot.
    with torch.no_grad():
        model.predictor[0].weight[:, model.d_model:] = 0
    res = evaluate(model, Blocks("train"), Blocks("test"), cfg, device="cpu", suites=["action_use"],
                   log=lambda s: None)["metrics"]
    assert res["action_use/M=1"]["value"] == pytest.approx(1.0, abs=1e-6)
    for act_cond in ("none", "transformer"):
        out = evaluate(tiny_model(act_cond), Blocks("train"), Blocks("test"), cfg, device="cpu",
                       suites=["action_use"], log=lambda s: None)
        assert out["metrics"] == {} and "action_use" in out["notes"]


def test_retrieval_ranks_by_hand():
    cands = torch.eye(4)[None].repeat(3, 1, 1)                      # 3 queries, 4 orthogonal candidates each
    pred = torch.tensor([[1.0, 0.0, 0.0, 0.0],                      # target 0: most similar -> rank 1
                         [0.9, 0.5, 0.0, 0.0],                      # target 1: candidate 0 beats it -> rank 2
                         [0.9, 0.6, 0.3, 0.0]])                     # target 2: two beat it -> rank 3
    r = retrieval.ranks(pred, cands, torch.tensor([0, 1, 2]))
    assert r.tolist() == [1, 2, 3]
    s = retrieval.summarise(r)
    assert s["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert s["hit@1"] == pytest.approx(1 / 3) and s["hit@5"] == 1.0
    # a tie counts for the target
    assert retrieval.ranks(torch.ones(1, 2), torch.ones(1, 3, 2), torch.tensor([2])).tolist() == [1]


@pytest.mark.parametrize("use_bank", [True, False], ids=["bank", "live"])
def test_retrieval_candidates_hold_the_true_views(use_bank):
    world = Blocks()
    bank = ViewBank.render(world, objects=6, views=5, seed=0) if use_bank else None
    g = torch.Generator().manual_seed(1)
    batch, cands, index = retrieval.sample_with_candidates(world, bank, 4, 3, g, n_candidates=7)
    assert cands.shape[:2] == (4, 5 if use_bank else 7) and index.shape == (4, 3)
    for i in range(4):
        for t in range(3):
            assert torch.equal(cands[i, index[i, t]], batch.views[i, t])


def test_knn_separable_and_random():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=g) * 5
    y = torch.arange(300) % 3
    x = centres[y] + torch.randn(300, 16, generator=g)
    assert knn.knn_top1(x[:200], y[:200], x[200:], y[200:], num_classes=3) == 100.0
    y_rand = torch.randint(0, 3, (300,), generator=g)
    assert knn.knn_top1(x[:200], y_rand[:200], x[200:], y_rand[200:], num_classes=3) < 60


# -- TensorBoard -------------------------------------------------------------------------------------------------------


def test_tensorboard_inspection_tags_and_projector(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    from eval.tensorboard import MAX_POINTS, end_of_training, log_inspection

    cfg = preset("smoke")
    cfg.train.seq_len, cfg.eval.test_sequences = 2, 20
    world = Blocks()
    bank = ViewBank.render(world, objects=12, views=5, seed=0)
    model = tiny_model()
    before = bn_buffers(model)
    with SummaryWriter(str(tmp_path)) as w:
        w.add_scalar("train/loss", 0.5, 7)
        end_of_training(w, model, world, cfg, step=7, device="cpu", bank=bank, log=lambda s: None)
    with SummaryWriter(str(tmp_path)) as w:  # a later writer (run.py eval) must not hide the earlier projector
        tags = log_inspection(w, model, world, cfg, step=7, device="cpu", bank=bank, prefix="eval",
                              log=lambda s: None)
    assert all(torch.equal(before[k], v) for k, v in bn_buffers(model).items())
    assert "eval/prediction_vs_target" in tags

    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    t = acc.Tags()
    for tag in ("inspect/imagination/0", "inspect/imagination/3", "inspect/agg_attention", "eval/agg_attention"):
        assert tag in t["images"], tag
    assert "config/table/text_summary" in t["tensors"] and "inspect/about/text_summary" in t["tensors"]
    assert "hparam/train_loss" in t["scalars"]
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(acc.PluginTagToContent("hparams"))

    pbtxt = (tmp_path / "projector_config.pbtxt").read_text()
    for tag in ("inspect%2fprediction_vs_target", "inspect%2fz_agg", "eval%2fprediction_vs_target"):
        assert tag in pbtxt, tag
        folder = tmp_path / "00007" / tag
        for f in ("tensors.tsv", "metadata.tsv", "sprite.png"):
            assert (folder / f).is_file(), (tag, f)
    meta = (tmp_path / "00007" / "inspect%2fprediction_vs_target" / "metadata.tsv").read_text().splitlines()
    assert meta[0].split("\t") == ["class", "kind", "transformation", "M", "step", "sequence"]
    kinds = {row.split("\t")[1] for row in meta[1:]}
    assert kinds == {"predicted", "actual"} and len(meta) - 1 == 2 * 20 <= MAX_POINTS


@pytest.mark.slow
def test_evaluate_checkpoint_suites_and_report(tmp_path, short_paths, monkeypatch):
    from eval import plots
    from eval.from_checkpoint import evaluate_checkpoint
    from seqjepa.options import apply_overrides
    from seqjepa.train import train

    cfg = preset("smoke")
    apply_overrides(cfg, [f"world.cache_dir={tmp_path / 'cache'}", "train.progress=off", "train.steps=2",
                          "world.bank_objects=8", "world.bank_views=4", "eval.train_sequences=16",
                          "eval.test_sequences=16", "eval.random_init_baseline=false", "world.options.instances=4"])
    train(cfg, tmp_path / "run", log=lambda s: None)
    run = tmp_path / "run"
    # trusted: this process wrote the checkpoint, so its cache folder is the user's own
    res = evaluate_checkpoint(run / "latest.pt", suites=["linear_probe", "retrieval"], inspect=True, trusted=True,
                              log=lambda s: None)
    keys = set(res["trained"]["metrics"])
    assert "linear_probe/z_agg/M=2" in keys and "retrieval/M=2/mrr" in keys
    assert not any(k.startswith(("knn", "equivariance")) for k in keys)
    for f in ("eval.json", "eval.md", "eval_accuracy_vs_m.png"):
        assert (run / f).is_file(), f
    assert "retrieval/M=1/mrr" in (run / "eval.md").read_text()
    first = json.loads((run / "eval.json").read_text())

    # A later k-NN run (with the random init this time) joins the report; the plot says what it shows.
    titles = []
    real_plot = plots.line_plot
    monkeypatch.setattr(plots, "line_plot", lambda series, **kw: titles.append(kw["title"]) or real_plot(series, **kw))
    here = [f"world.cache_dir={tmp_path / 'cache'}"]
    res = evaluate_checkpoint(run / "latest.pt", here + ["eval.random_init_baseline=true"], suites=["knn"],
                              tensorboard=False, log=lambda s: None)
    assert set(res["trained"]["metrics"]) == {"knn/z_agg/M=1", "knn/z_agg/M=2", "knn/encoder"}  # this call's
    report = json.loads((run / "eval.json").read_text())
    trained = report["trained"]
    assert trained["suites"] == ["linear_probe", "retrieval", "knn"] and trained["earlier_suites"] == [
        "linear_probe", "retrieval"]
    assert {k: v for k, v in trained["metrics"].items() if not k.startswith("knn/")} == first["trained"]["metrics"]
    assert set(report["random init"]["metrics"]) == set(res["random init"]["metrics"])
    assert "knn/encoder" in (run / "eval.md").read_text() and "linear_probe/encoder" in (run / "eval.md").read_text()
    assert titles[-1] == "top-1 on z_agg vs M_val (solid: linear probe, dashed: k-NN)"

    # Re-running the linear probe (other epochs) replaces only its numbers.
    evaluate_checkpoint(run / "latest.pt", here + ["eval.linear_epochs=1"], suites=["linear_probe"],
                        tensorboard=False, log=lambda s: None)
    report = json.loads((run / "eval.json").read_text())
    assert report["trained"]["metrics"]["linear_probe/encoder"]["protocol"]["epochs"] == 1
    assert report["trained"]["metrics"]["retrieval/M=1/mrr"] == first["trained"]["metrics"]["retrieval/M=1/mrr"]
    assert report["random init"]["metrics"]["knn/encoder"]["value"] == res["random init"]["metrics"]["knn/encoder"][
        "value"]
    assert not list(run.glob(".*.tmp*"))  # every file written whole, no temporary left

    # k-NN alone in a fresh folder: the plot is k-NN only and says so.
    other = tmp_path / "other"
    other.mkdir()
    (other / "latest.pt").write_bytes((run / "latest.pt").read_bytes())
    evaluate_checkpoint(other / "latest.pt", here, suites=["knn"], tensorboard=False, log=lambda s: None)
    assert titles[-1] == "top-1 on z_agg vs M_val (k-NN)"
    with pytest.raises(ValueError, match="--suite"):
        evaluate_checkpoint(run / "latest.pt", suites=["bogus"])


@pytest.mark.slow
def test_cli_rejects_an_unknown_suite_in_one_line():
    import subprocess
    import sys

    from conftest import ROOT

    r = subprocess.run([sys.executable, str(ROOT / "run.py"), "eval", "--ckpt", "x.pt", "--suite", "bogus"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2 and "--suite: unknown suite 'bogus'" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
