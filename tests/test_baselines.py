"""Baselines: losses against slow references, EMA and stop-gradients, presets, and every method through the harness."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import math

import pytest
import torch
import torch.nn.functional as F

from seqjepa import checkpoint
from seqjepa.baselines import BYOL, METHODS, SIE, CondBYOL, ConvJEPA, build, options
from seqjepa.baselines.common import cosine_regression, nt_xent
from seqjepa.baselines.conv_jepa import moves_to_last, pairwise_loss
from seqjepa.baselines.sie import equivariance_term
from seqjepa.baselines.vicreg import covariance_term, variance_term, vicreg_loss
from seqjepa.baselines.vicreg_traj import trajectory_term
from seqjepa.config import preset
from seqjepa.options import ConfigError, apply_overrides

TINY = dict(depth=10, width=4, stem="cifar")  # 32-d encoder


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models


def views(B=8, T=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (B, T, 3, size, size), dtype=torch.uint8, generator=g)


# -- losses against slow references --------------------------------------------------------------------------------
def nt_xent_reference(a, b, t):
    z = torch.cat([a, b]).double()
    n, total = len(a), 0.0
    for i in range(2 * n):
        sims = [F.cosine_similarity(z[i], z[k], dim=0) / t for k in range(2 * n)]
        den = sum(math.exp(s) for k, s in enumerate(sims) if k != i)
        total += -math.log(math.exp(sims[(i + n) % (2 * n)]) / den)
    return total / (2 * n)


def test_nt_xent_matches_loops():
    a, b = torch.randn(5, 7), torch.randn(5, 7)
    for t in (0.5, 0.1):
        assert nt_xent(a, b, temperature=t).item() == pytest.approx(nt_xent_reference(a, b, t), rel=1e-5)


def test_vicreg_terms_match_loops():
    y1, y2 = torch.randn(9, 6) * 0.7, torch.randn(9, 6) * 1.5
    N, K = y1.shape

    def var_ref(y):
        means = [sum(y[n, j].item() for n in range(N)) / N for j in range(K)]
        var = [sum((y[n, j].item() - means[j]) ** 2 for n in range(N)) / (N - 1) for j in range(K)]
        return sum(max(0.0, 1 - math.sqrt(v + 1e-4)) for v in var) / K

    def cov_ref(y):
        m = [sum(y[n, j].item() for n in range(N)) / N for j in range(K)]
        cov = lambda i, j: sum((y[n, i].item() - m[i]) * (y[n, j].item() - m[j]) for n in range(N)) / (N - 1)  # noqa
        return sum(cov(i, j) ** 2 for i in range(K) for j in range(K) if i != j) / K

    inv = sum((y1[n, j].item() - y2[n, j].item()) ** 2 for n in range(N) for j in range(K)) / (N * K)
    var, cov = (var_ref(y1) + var_ref(y2)) / 2, cov_ref(y1) + cov_ref(y2)
    assert variance_term(y1).item() == pytest.approx(var_ref(y1), rel=1e-5)
    assert covariance_term(y2).item() == pytest.approx(cov_ref(y2), rel=1e-5)
    loss, terms = vicreg_loss(y1, y2, inv_weight=10, var_weight=10, cov_weight=1)
    assert [terms[k].item() for k in ("inv", "var", "cov")] == pytest.approx([inv, var, cov], rel=1e-5)
    assert loss.item() == pytest.approx(10 * inv + 10 * var + cov, rel=1e-5)


def test_sie_equivariance_term_is_hypernetwork_matrix_times_projection():
    m = SIE(action_dim=3, proj_dims=[8, 5], **TINY)
    y, a, target = torch.randn(4, 5), torch.randn(4, 3), torch.randn(4, 5)
    pred = m.predictor(y, a)
    L = m.predictor.hypernet.weight  # [P·P, A]
    sq = 0.0
    for b in range(4):
        W = (L @ a[b]).reshape(5, 5)  # row-major: W[o, i]
        p = [sum(W[o, i].item() * y[b, i].item() for i in range(5)) for o in range(5)]
        assert pred[b].tolist() == pytest.approx(p, abs=1e-5)
        sq += sum((p[o] - target[b, o].item()) ** 2 for o in range(5))
    assert equivariance_term(pred, target).item() == pytest.approx(sq / 20, rel=1e-5)
    terms = m.losses(torch.randn(4, 2, 5), torch.stack([y, target], 1), a)
    assert terms["equi"].item() == pytest.approx(sq / 20, rel=1e-5)


def test_byol_normalised_regression_and_symmetric_pairing():
    p, t = torch.randn(6, 4), torch.randn(6, 4) * 3
    ref = sum(((p[i] / p[i].norm() - t[i] / t[i].norm()) ** 2).sum().item() for i in range(6)) / 6
    assert cosine_regression(p, t).item() == pytest.approx(ref, rel=1e-5)
    torch.manual_seed(0)
    m, v = BYOL(proj_dims=[16, 8], pred_hidden=8, **TINY), views(T=2)
    loss = m(v, torch.zeros(8, 1, 4))["loss"]
    q = torch.stack([m.predictor(m.projector(m.encoder(m.prepare(v[:, i:i + 1])))) for i in range(2)], 1)
    t = torch.stack([m.target_projector(m.target_encoder(m.prepare(v[:, i:i + 1]))) for i in range(2)], 1)
    ref = cosine_regression(q[:, 0], t[:, 1]) + cosine_regression(q[:, 1], t[:, 0])
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


def test_trajectory_term_uses_a_true_tangent_projection():
    y_l, y_c, y_r = torch.randn(3, 5, 6).unbind(0)
    total = 0.0
    for b in range(5):
        n = y_c[b] / y_c[b].norm()
        u1 = (y_c[b] - y_l[b]) - ((y_c[b] - y_l[b]) @ n) * n
        u2 = (y_r[b] - y_c[b]) - ((y_r[b] - y_c[b]) @ n) * n
        assert abs((u1 @ y_c[b]).item()) < 1e-5  # tangent: orthogonal to y_c
        total += (u1 @ u2 / (u1.norm() * u2.norm())).item()
    assert trajectory_term(y_l, y_c, y_r).item() == pytest.approx(-total / 5, rel=1e-5)
    # Scale-free, unlike the official v - (v·y_c) y_c with an un-normalised y_c.
    assert trajectory_term(3 * y_l, 3 * y_c, 3 * y_r).item() == pytest.approx(-total / 5, rel=1e-5)


def test_conv_jepa_moves_and_pairwise_loss():
    import envs
    world = envs.make_world("seqjepa/Saccades-v0", scene_size=48, image_size=16, num_classes=2, per_class=2)
    batch = envs.rollout(world, lambda w, s, g: w.sample_action(s, g), 3, 5, torch.Generator().manual_seed(0))
    assert torch.allclose(moves_to_last(batch.actions), batch.params[:, 4:] - batch.params[:, :4], atol=1e-6)
    y_hat, target = torch.randn(3, 4, 6), torch.randn(3, 6)
    per_pair = [sum(1 - F.cosine_similarity(y_hat[b, i], target[b], dim=0).item() for b in range(3)) / 3
                for i in range(4)]
    assert pairwise_loss(y_hat, target).item() == pytest.approx(sum(per_pair) / 4, rel=1e-5)
    assert pairwise_loss(y_hat, target, "sum").item() == pytest.approx(sum(per_pair), rel=1e-5)


def _gather_worker(rank, world_size, init, out):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world_size)
    g = torch.Generator().manual_seed(0)
    rows = slice(4 * rank, 4 * rank + 4)
    a_r, b_r, y_r = (torch.randn(8, 5, generator=g)[rows].requires_grad_(True) for _ in range(3))
    loss = nt_xent(a_r, b_r, temperature=0.5) + variance_term(y_r)
    loss.backward()
    torch.save({"loss": loss.detach(), "ga": a_r.grad, "gy": y_r.grad}, f"{out}/{rank}.pt")
    dist.destroy_process_group()


def test_gather_carries_gradients_across_processes(tmp_path):
    import torch.multiprocessing as mp
    # fork, not spawn (which re-imports torch: ~10 s here); the tensors are below torch's parallel grain size.
    mp.start_processes(_gather_worker, args=(2, f"file://{tmp_path}/pg", str(tmp_path)), nprocs=2,
                       start_method="fork")
    g = torch.Generator().manual_seed(0)
    a, b, y = (torch.randn(8, 5, generator=g).requires_grad_(True) for _ in range(3))
    (full := nt_xent(a, b, temperature=0.5) + variance_term(y)).backward()
    for rank, r in enumerate(torch.load(tmp_path / f"{rank}.pt") for rank in range(2)):
        rows = slice(4 * rank, 4 * rank + 4)
        assert r["loss"].item() == pytest.approx(full.item(), rel=1e-5)
        # Each rank computes the whole loss, so its slice gets world_size x the single-process gradient (DDP's
        # averaging divides it back); the official plain all_gather gives none.
        assert torch.allclose(r["ga"], 2 * a.grad[rows], atol=1e-6) and torch.allclose(r["gy"], 2 * y.grad[rows])


# -- EMA targets and stop-gradients ------------------------------------------------------------------------------
EMA_METHODS = [(BYOL, {}), (CondBYOL, {"action_dim": 4, "act_dim": 8}), (ConvJEPA, {"action_dim": 4, "act_dim": 8})]


@pytest.mark.parametrize("ema", [True, False])
@pytest.mark.parametrize("cls, extra", EMA_METHODS, ids=lambda x: getattr(x, "__name__", ""))
def test_ema_targets_update_and_stop_gradients(cls, extra, ema):
    torch.manual_seed(0)
    m, v = cls(proj_dims=[16, 8], pred_hidden=8, ema=ema, **extra, **TINY), views(T=3)
    z_t, y_t = m.targets(v[:, 1:2] if cls is not ConvJEPA else v[:, 1])
    assert not (z_t.requires_grad or y_t.requires_grad)  # a stop-gradient target, with or without EMA
    m(v, torch.randn(8, 2, 4))["loss"].backward()
    if not ema:  # the official Conv-IJEPA without --ema back-propagates through its target; here it is detached
        assert m.target("encoder") is m.encoder and not m.ema_pairs
        return m.update_target(0.5)  # a no-op
    targets = [n for n in dict(m.named_children()) if n.startswith("target_")]
    assert sorted(targets) == ["target_encoder", "target_projector"]
    for name in targets:
        assert all(not p.requires_grad and p.grad is None for p in getattr(m, name).parameters())
    trained = {id(p) for g in m.param_groups(0.1) for p in g["params"]}
    assert not trained & {id(p) for p in m.target_encoder.parameters()}
    torch.optim.SGD(m.parameters(), lr=0.5).step()
    before = {n: [p.clone() for p in getattr(m, n).parameters()] for n in targets}
    m.update_target(0.9)
    for name in targets:
        online = getattr(m, name.removeprefix("target_")).parameters()
        for old, new, o in zip(before[name], getattr(m, name).parameters(), online):
            assert torch.allclose(new, 0.9 * old + 0.1 * o, atol=1e-6)
    assert any(not torch.equal(o, n) for o, n in zip(before["target_encoder"], m.target_encoder.parameters()))
    frozen = [p.clone() for p in m.target_encoder.parameters()]
    m.update_target(1.0)  # the end of the τ schedule: the target stops moving
    assert all(torch.equal(a, b) for a, b in zip(frozen, m.target_encoder.parameters()))


# -- train-mode BatchNorm batching, against the official forwards ----------------------------------------------------
def official_loss(name, m, v, a):
    """The official baseline's training forward (seq-jepa/src/models.py), written out on m's modules and loss
    helpers: the two-view methods call every network once per view (``encoder(x1)``, ``encoder(x2)``,
    ``projector(z1)``, ...), so each view is its own BatchNorm batch; VICReg_Traj passes its three views as one
    batch; Conv_IJEPA encodes and projects all observed patches at once and runs the action projector and the
    predictor once per patch."""
    enc = lambda f, x: f(m.prepare(x[:, None]))  # noqa: E731  one view per sequence: [B, 3, H, W] -> [B, D]
    x1, x2, a1 = v[:, 0], v[:, 1], a[:, 0]
    if name in ("simclr", "vicreg", "sen", "equimod", "sie"):
        z1, z2 = enc(m.encoder, x1), enc(m.encoder, x2)
    if name == "simclr":
        return nt_xent(m.projector(z1), m.projector(z2), temperature=m.temperature)
    if name == "vicreg":
        return vicreg_loss(m.projector(z1), m.projector(z2), **m.weights)[0]
    if name == "sen":
        y1, y2 = m.projector(z1), m.projector(z2)
        y2_hat = m.predictor(torch.cat([m.action_embed(a1), y1], -1))
        return nt_xent(y2_hat, y2, temperature=m.temperature)
    if name == "equimod":
        i1, i2 = m.projector_inv(z1), m.projector_inv(z2)
        q1, q2 = m.projector_equi(z1), m.projector_equi(z2)
        q2_hat = m.predictor(torch.cat([m.action_embed(a1), q1], -1))
        return (nt_xent(i1, i2, temperature=m.temperature)
                + m.equi_weight * nt_xent(q2_hat, q2, temperature=m.temperature))
    if name == "sie":
        k = m.split
        y_inv = torch.stack([m.projector_inv(z1[:, :k]), m.projector_inv(z2[:, :k])], 1)
        y_equi = torch.stack([m.projector_equi(z1[:, k:]), m.projector_equi(z2[:, k:])], 1)
        return sum(m.weights[key] * term for key, term in m.losses(y_inv, y_equi, a1).items())
    if name == "byol":
        z1, z2 = enc(m.encoder, x1), enc(m.encoder, x2)
        y1, y2 = m.projector(z1), m.projector(z2)
        p1, p2 = m.predictor(y1), m.predictor(y2)
        with torch.no_grad():
            t1, t2 = enc(m.target("encoder"), x1), enc(m.target("encoder"), x2)
            t1, t2 = m.target("projector")(t1), m.target("projector")(t2)
        return cosine_regression(p1, t2) + cosine_regression(p2, t1)
    if name == "cond_byol":
        y2_hat = m.predictor(torch.cat([m.action_embed(a1), m.projector(enc(m.encoder, x1))], -1))
        with torch.no_grad():
            t2 = m.target("projector")(enc(m.target("encoder"), x2))
        return cosine_regression(y2_hat, t2)
    B = v.shape[0]
    if name == "vicreg_traj":
        y = m.projector(m.encoder(m.prepare(v[:, :3]))).reshape(B, 3, -1)
        return (vicreg_loss(y[:, 0], y[:, 1], **m.weights)[0]
                + m.traj_weight * trajectory_term(y[:, 0], y[:, 1], y[:, 2]))
    assert name == "conv_jepa"
    M = v.shape[1] - 1
    y = m.projector(m.encoder(m.prepare(v[:, :M]))).reshape(B, M, -1)
    with torch.no_grad():
        target = m.target("projector")(enc(m.target("encoder"), v[:, M]))
    moves = moves_to_last(a)
    y_hat = [m.predictor(torch.cat([m.action_embed(moves[:, i]), y[:, i]], -1)) for i in range(M)]
    return pairwise_loss(torch.stack(y_hat, 1), target, m.pair_reduction)


@pytest.mark.parametrize("name", [n for n in METHODS if n != "seqjepa"])
def test_train_mode_batching_matches_the_official_forward(name):
    """Same weights and inputs, train mode: equal loss and equal BatchNorm running statistics afterwards."""
    cfg = preset("smoke")
    apply_overrides(cfg, [f"model.method={name}", "model.width=4"])
    torch.manual_seed(0)
    m = build(cfg.model, action_dim=4, preset="smoke").train()
    ref = copy.deepcopy(m)
    g = torch.Generator().manual_seed(3)
    v, a = views(B=8, T=4), torch.randn(8, 3, 4, generator=g)
    torch.testing.assert_close(m(v, a)["loss"], official_loss(name, ref, v, a))
    for (key, ours), theirs in zip(m.named_buffers(), ref.buffers()):
        torch.testing.assert_close(ours, theirs, msg=f"{name}: {key}")


# -- registry, presets, interface ----------------------------------------------------------------------------------
VIC = dict(inv_weight=10, var_weight=10, cov_weight=1)
PAPER = {"simclr": dict(proj_dims=[2048] * 3, temperature=0.5), "byol": dict(proj_dims=[2048] * 3, pred_hidden=512),
         "vicreg": dict(proj_dims=[2048] * 3, **VIC),
         "vicreg_traj": dict(proj_dims=[2048] * 3, **VIC, traj_weight=0.01),
         "sen": dict(proj_dims=[2048] * 3, temperature=0.5),
         "equimod": dict(proj_dims=[1024, 1024, 128], temperature=0.1, equi_weight=1),
         "sie": dict(proj_dims=[1024] * 3, inv_weight=10, equi_weight=4.5, var_weight=10, cov_weight=1),
         "cond_byol": dict(proj_dims=[2048] * 3, pred_hidden=512),
         "conv_jepa": dict(proj_dims=[2048, 128], pred_hidden=1024, pair_reduction="mean")}


def test_registry_presets_and_constructor_defaults():
    cfg = preset("paper")
    for name, published in PAPER.items():
        cfg.model.method = name
        opts = dataclasses.asdict(options(cfg.model, "paper"))
        assert opts == published, name
        params = inspect.signature(METHODS[name]).parameters
        assert all(params[k].kind is inspect.Parameter.KEYWORD_ONLY for k in params), name
        assert {k: list(v) if isinstance(v, tuple) else v for k, v in
                ((k, params[k].default) for k in opts)} == published, f"{name}: constructor defaults != paper"
    cfg.model.method, cfg.model.method_options = "sie", {"inv_weight": 25}  # preset, then the run's own options
    assert dataclasses.asdict(options(cfg.model, "smoke")) == {**PAPER["sie"], "proj_dims": [64] * 3, "inv_weight": 25}
    cfg.model.method_options = {"temperature": 0.1}
    with pytest.raises(ConfigError, match="model.method_options.temperature: unknown key"):
        options(cfg.model, "smoke")
    cfg.model.method, cfg.model.method_options = "seqjepa", {"x": 1}
    with pytest.raises(ConfigError, match="seqjepa takes none"):
        options(cfg.model)


def test_cli_method_shortcut():
    import run
    cfg = run.build_config(run.parser().parse_args(["train", "--preset", "smoke", "--method", "vicreg_traj"]))
    assert cfg.model.method == "vicreg_traj"
    with pytest.raises(ConfigError, match="model.method: unknown method 'nope'"):
        run.build_config(run.parser().parse_args(["train", "--method", "nope"]))


@pytest.mark.parametrize("name", [n for n in METHODS if n != "seqjepa"])
def test_interface_and_hparams_rebuild(name):
    cfg = preset("smoke")
    apply_overrides(cfg, [f"model.method={name}", "model.width=4"])
    m, v = build(cfg.model, action_dim=4, preset="smoke"), views(B=6, T=4)
    # hparams are the outermost constructor's arguments, every one of them (CondBYOL's too, not BYOL's)
    assert list(m.hparams) == list(inspect.signature(type(m)).parameters)
    assert m.hparams["width"] == 4 and m.hparams["mean"] == [0.5, 0.5, 0.5]
    assert type(m)(**json.loads(json.dumps(m.hparams))).state_dict().keys() == m.state_dict().keys()
    assert m.dim == m.encoder.out_dim == 32 and m.encode(v).shape == (6, 4, 32)
    out = m(v, torch.randn(6, 3, 4))
    assert out["loss"].ndim == 0 and out["z"].requires_grad and out["z"].shape[0] == 6
    assert out["z"].shape[1] > 1 or out["target"].shape == (6, 32)  # the online probe's second view


# -- through the harness: train, checkpoint, resume, evaluate ---------------------------------------------------------
@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # one view bank per world for the whole module


def method_cfg(name, tmp_path, cache, steps=2):
    cfg = preset("smoke")
    apply_overrides(cfg, [f"train.runs_dir={tmp_path}", f"world.cache_dir={cache}", "train.progress=off",
                          f"train.steps={steps}", f"model.method={name}", "eval.random_init_baseline=false",
                          "eval.m_val=[1]", "train.threads=1"])
    if name == "conv_jepa":
        cfg.world.env = "seqjepa/Saccades-v0"
        cfg.world.options = {"scene_size": 48, "image_size": 16, "num_classes": 3, "per_class": 8}
    return cfg


@pytest.mark.parametrize("name", [n for n in METHODS if n != "seqjepa"])
def test_every_method_trains_and_evaluates(name, tmp_path, cache):
    from eval.from_checkpoint import evaluate_checkpoint
    from seqjepa.train import train
    train(method_cfg(name, tmp_path, cache), tmp_path / name, log=lambda s: None)
    ckpt = checkpoint.load(tmp_path / name / "latest.pt")
    assert ckpt["method"] == name and ckpt["step"] == 2
    res = evaluate_checkpoint(tmp_path / name / "latest.pt", trusted=True, log=lambda s: None)["trained"]["metrics"]
    assert not any(k.startswith("linear_probe/z_agg") for k in res)  # baselines: encoder probes only
    factor = "position" if name == "conv_jepa" else "rotation"
    assert {"linear_probe/encoder", f"equivariance/{factor}"} <= set(res)
    assert all(math.isfinite(v["value"]) for v in res.values())


def test_resume_is_exact_for_an_ema_baseline(tmp_path, cache):
    from seqjepa.train import train
    cfg = method_cfg("byol", tmp_path, cache, steps=4)  # EMA target, predictor, BN buffers, optimiser, RNG
    train(cfg, tmp_path / "straight", log=lambda s: None)
    train(cfg, tmp_path / "split", stop_after=2, log=lambda s: None)
    train(cfg, tmp_path / "split", resume=True, log=lambda s: None)
    a, b = checkpoint.load(tmp_path / "straight" / "latest.pt"), checkpoint.load(tmp_path / "split" / "latest.pt")
    assert a["step"] == b["step"] == 4 and a["model"].keys() == b["model"].keys()
    assert any(k.startswith("target_encoder.") for k in a["model"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
