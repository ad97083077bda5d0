"""Tests of the seq-JEPA network (seqjepa/model.py) and its ResNet encoder (seqjepa/encoder.py)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from seqjepa.config import preset
from seqjepa.encoder import BasicBlock, ResNet
from seqjepa.model import ACT_CONDS, ACTION_BNS, SeqJEPA, tau_at

SMALL = dict(action_dim=4, depth=10, width=8, stem="cifar", act_dim=16, agg_layers=2, agg_heads=4,
             pred_hidden=32)  # D = 64, d_model = 80


def small(**kw) -> SeqJEPA:
    torch.manual_seed(0)
    return SeqJEPA(**{**SMALL, **kw})


def batch(B: int = 4, M: int = 3, A: int = 4, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    views = torch.randint(0, 256, (B, M + 1, 3, size, size), dtype=torch.uint8, generator=g)
    return views, torch.randn(B, M, A, generator=g)


def n_params(module: torch.nn.Module, trainable: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


# -- sizes ---------------------------------------------------------------------------------------------------


def test_paper_size_parameter_count():
    """ResNet-18 + 3-layer d=640 aggregator + 1024-wide predictor = the official model's 27.26 M trainable."""
    m = SeqJEPA(action_dim=4)
    assert n_params(m.encoder) == 11_176_512  # torchvision resnet18 without fc
    trainable = sum(n_params(getattr(m, k)) for k in ("encoder", "action_embed", "aggregator", "predictor"))
    assert trainable == 27_262_784
    assert n_params(m) == 27_262_784  # the frozen target is not counted
    assert all(not p.requires_grad for p in m.target_encoder.parameters())
    assert n_params(m.target_encoder, trainable=False) == 11_176_512
    assert m.d_model == 640


@pytest.mark.parametrize("depth,blocks", [(10, 4), (18, 8), (34, 16)])
def test_resnet_depths(depth, blocks):
    f = ResNet(depth=depth, width=4, stem="cifar")
    assert len(f.blocks()) == blocks and all(isinstance(b, BasicBlock) for b in f.blocks())
    assert f(torch.randn(2, 3, 16, 16)).shape == (2, 32)


def test_stems():
    x = torch.randn(2, 3, 32, 32)
    for stem, spatial in (("cifar", 4), ("imagenet", 1)):
        f = ResNet(depth=10, width=8, stem=stem).eval()
        trunk = f.layer4(f.layer3(f.layer2(f.layer1(f.maxpool(f.relu(f.bn1(f.conv1(x))))))))
        assert trunk.shape == (2, 64, spatial, spatial)
        assert f(x).shape == (2, 64) and f.out_dim == 64
    assert ResNet(width=4, stem="imagenet").conv1.kernel_size == (7, 7)
    assert ResNet(width=4, stem="cifar").conv1.kernel_size == (3, 3)
    assert isinstance(ResNet(width=4, stem="cifar").maxpool, torch.nn.Identity)


def test_zero_init_residual_makes_blocks_identity():
    torch.manual_seed(0)
    f = ResNet(depth=18, width=8, stem="cifar")
    x = torch.relu(torch.randn(2, 8, 8, 8))  # block inputs follow a ReLU
    for block in f.blocks():
        cin = block.conv1.in_channels
        xi = x if cin == 8 else torch.relu(torch.randn(2, cin, 8, 8))
        assert torch.count_nonzero(block.residual(xi)) == 0
    first = f.layer1[0]  # no downsample: the whole block is the identity
    assert first.downsample is None
    torch.testing.assert_close(first(x.clone()), x)
    assert ResNet(depth=10, width=8, zero_init_residual=False).layer1[0].residual(x).abs().sum() > 0


# -- forward -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("act_cond", ACT_CONDS)
@pytest.mark.parametrize("M", [1, 3])
def test_output_shapes(act_cond, M):
    m = small(act_cond=act_cond)
    views, actions = batch(M=M)
    out = m(views, actions)
    d_model = 64 if act_cond == "none" else 80
    assert m.d_model == d_model
    assert out["loss"].shape == () and torch.isfinite(out["loss"])
    assert out["z"].shape == (4, M, 64) and out["z"].requires_grad
    assert out["z_agg"].shape == (4, d_model)
    assert out["z_hat"].shape == (4, 64)
    assert out["target"].shape == (4, 64) and not out["target"].requires_grad
    assert (m.action_embed is None) == (act_cond == "none")


def test_single_view_aggregator_sees_agg_and_z1_with_zero_action():
    m = small().eval()
    z, e = torch.randn(4, 1, 64), torch.randn(4, 1, 16)
    direct = m.aggregator(torch.cat([z, torch.zeros(4, 1, 16)], dim=-1))
    torch.testing.assert_close(m.aggregate(z, e), direct)
    torch.testing.assert_close(m.aggregate(z, None), direct)


def test_token_rule_per_act_cond():
    """Token i<M carries e_i (both/transformer), token M never carries an action, "predictor" zeroes them all."""
    z, e = torch.randn(4, 3, 64), torch.randn(4, 3, 16)
    e_last = e.clone()
    e_last[:, 2] += 5.0  # a_M: must not reach the tokens
    e_first = e.clone()
    e_first[:, 0] += 5.0  # a_1: reaches the tokens unless act_cond == "predictor"
    for act_cond in ("both", "transformer", "predictor"):
        m = small(act_cond=act_cond).eval()
        base = m.aggregate(z, e)
        torch.testing.assert_close(m.aggregate(z, e_last), base)
        moved = not torch.allclose(m.aggregate(z, e_first), base)
        assert moved == (act_cond != "predictor"), act_cond
    # The predictor's action slot: used by both/predictor, zeroed by transformer.
    z_agg, e_next = torch.randn(4, 80), torch.randn(4, 16)
    for act_cond in ("both", "predictor", "transformer"):
        m = small(act_cond=act_cond).eval()
        moved = not torch.allclose(m.predict(z_agg, e_next), m.predict(z_agg, torch.zeros(4, 16)))
        assert moved == (act_cond != "transformer"), act_cond


def official_forward(m: SeqJEPA, views: torch.Tensor, actions: torch.Tensor, path: str):
    """The official training forward (seq-jepa/src/models.py) written out on m's modules: SeqJEPA_Transforms with
    rel_latents ("3diebench") or without ("augmentations": actions from the absolute latents), or SeqJEPA_PLS
    ("saccades"). Returns z_agg, z_hat and the target, with m's BatchNorm buffers updated in the official order."""
    B, M, A = actions.shape
    z = m.encoder(m.prepare(views[:, :M])).reshape(B, M, -1)
    with torch.no_grad():
        target = m.target_encoder(m.prepare(views[:, M:]))
    token_rows = actions.clone()
    if path != "3diebench":  # differences of absolute latents: the last observed token's row is a zero action
        token_rows[:, -1] = 0.0
    if path == "saccades":  # PLS projects the token actions first, the target action after
        e = m.action_embed(token_rows.reshape(B * M, A)).reshape(B, M, -1)
        e_next = m.action_embed(actions[:, -1])
    else:  # Transforms projects the target action first, as a batch of its own
        e_next = m.action_embed(actions[:, -1])
        e = m.action_embed(token_rows.reshape(B * M, A)).reshape(B, M, -1)
    e = e.clone()
    e[:, -1] = 0.0  # zeroed after the projection, in every path
    x = torch.cat([m.aggregator.agg_token.expand(B, -1, -1), torch.cat([z, e], dim=-1)], dim=1)
    z_agg = m.aggregator.norm(m.aggregator.transformer(x)[:, 0])
    return z_agg, m.predictor(torch.cat([z_agg, e_next], dim=-1)), target


@pytest.mark.parametrize("path", ACTION_BNS)
def test_train_mode_action_batchnorm_matches_the_official_forward(path):
    """Same weights and inputs in train mode: the same z_agg, z_hat and BatchNorm running statistics."""
    m = small(dropout=0.0, action_bn=path).train()
    ref, old = copy.deepcopy(m), copy.deepcopy(m)
    views, actions = batch(B=8, M=3)
    out = m(views, actions)
    z_agg, z_hat, target = official_forward(ref, views, actions, path)
    torch.testing.assert_close(out["z_agg"], z_agg)
    torch.testing.assert_close(out["z_hat"], z_hat)
    torch.testing.assert_close(out["target"], target)
    for (name, ours), theirs in zip(m.named_buffers(), ref.buffers()):
        torch.testing.assert_close(ours, theirs, msg=name)
    # One batch of B·M rows with e(a_M) read from it (the former batching) predicts something else.
    e = old.embed_actions(actions)
    assert not torch.allclose(old.predict(old.aggregate(old.encode(views[:, :3]), e), e[:, -1]), z_hat, atol=1e-3)


def test_action_batching_changes_nothing_in_eval_mode():
    views, actions = batch()
    outs = [small(action_bn=path).eval()(views, actions) for path in ACTION_BNS]
    for out in outs[1:]:
        for key in ("z_agg", "z_hat", "loss"):
            torch.testing.assert_close(out[key], outs[0][key])
    with pytest.raises(ValueError, match="action_bn: got 'sometimes'"):
        small(action_bn="sometimes")


def test_loss_is_one_minus_cosine():
    m = small()
    out = m(*batch())
    a, b = out["z_hat"].detach(), out["target"]
    ref = (1 - (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))).mean()
    torch.testing.assert_close(out["loss"].detach(), ref)
    assert out["loss"].dtype == torch.float32


def test_gradients_reach_online_modules_not_target():
    m = small()
    m(*batch())["loss"].backward()
    assert all(p.grad is None for p in m.target_encoder.parameters())
    for name in ("encoder", "action_embed", "aggregator", "predictor"):
        grads = [p.grad for p in getattr(m, name).parameters()]
        assert all(g is not None for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name
    assert m.aggregator.agg_token.grad.abs().sum() > 0


def test_without_ema_target_is_detached_online_encoder():
    m = small(ema=False).eval()
    assert m.target_encoder is None
    views, actions = batch()
    out = m(views, actions)
    torch.testing.assert_close(out["target"], m.encoder(m.prepare(views[:, -1:])))
    out["loss"].backward()
    m.update_target(0.5)  # no-op


def test_return_attention_keeps_forward_numerics():
    m = small()  # train mode: dropout on, so the RNG stream must be left untouched too
    z, e = torch.randn(4, 3, 64), torch.randn(4, 3, 16)
    torch.manual_seed(7)
    plain = m.aggregate(z, e)
    torch.manual_seed(7)
    z_agg, attn = m.aggregate(z, e, return_attention=True)
    torch.testing.assert_close(z_agg, plain, rtol=0, atol=0)
    assert attn.shape == (4, 3)
    torch.testing.assert_close(attn.sum(-1), torch.ones(4))
    assert m.aggregator.transformer.layers[-1].self_attn.training  # mode restored


# -- EMA and optimiser helpers ---------------------------------------------------------------------------------


def test_ema_update_formula():
    m = small()
    with torch.no_grad():
        for p in m.encoder.parameters():
            p.add_(torch.randn_like(p))
    online = m.encoder.conv1.weight.detach().clone()
    before = m.target_encoder.conv1.weight.detach().clone()
    assert not torch.allclose(online, before)
    m.update_target(0.9)
    torch.testing.assert_close(m.target_encoder.conv1.weight, 0.9 * before + 0.1 * online)
    torch.testing.assert_close(m.encoder.conv1.weight, online)  # the online side is untouched
    m.update_target(0.0)
    for t, o in zip(m.target_encoder.parameters(), m.encoder.parameters()):
        torch.testing.assert_close(t, o)


def test_tau_schedule():
    assert tau_at(0, 1000, 0.996) == pytest.approx(0.996)
    assert tau_at(500, 1000, 0.996) == pytest.approx(0.998)
    assert tau_at(1000, 1000, 0.996) == pytest.approx(1.0)
    assert tau_at(2000, 1000, 0.996) == pytest.approx(1.0)
    taus = [tau_at(s, 100, 0.99) for s in range(101)]
    assert all(a <= b for a, b in zip(taus, taus[1:]))
    assert tau_at(250, 1000, 0.9) == pytest.approx(1 - 0.1 * (math.cos(math.pi / 4) + 1) / 2)


def test_param_groups():
    m = small(pos_emb=True)
    decay, no_decay = m.param_groups(0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert id(m.aggregator.agg_token) in ids(no_decay["params"])
    assert id(m.aggregator.pos_emb) in ids(no_decay["params"])
    assert id(m.aggregator.norm.weight) in ids(no_decay["params"])
    assert id(m.predictor[0].weight) in ids(decay["params"])
    assert all(p.ndim >= 2 for p in decay["params"])
    assert ids(decay["params"]) | ids(no_decay["params"]) == ids(p for p in m.parameters() if p.requires_grad)
    torch.optim.AdamW(m.param_groups(0.05), lr=1e-3)


# -- construction, inputs ------------------------------------------------------------------------------------


def test_heads_must_divide_d_model():
    with pytest.raises(ValueError, match="agg_heads=3 must divide"):
        SeqJEPA(**{**SMALL, "agg_heads": 3})
    with pytest.raises(ValueError, match="act_cond"):
        SeqJEPA(**{**SMALL, "act_cond": "sometimes"})


def test_hparams_rebuild_and_build_from_the_config():
    from seqjepa.baselines import build
    m = small(pos_emb=True, act_cond="predictor", ema=False)
    rebuilt = SeqJEPA(**m.hparams)
    rebuilt.load_state_dict(m.state_dict())  # strict
    cfg = preset("smoke").model
    m2 = build(cfg, action_dim=4, mean=(0.1, 0.2, 0.3), std=(1, 1, 1))
    assert set(m2.hparams) - {"action_dim", "mean", "std", "action_bn"} == set(SeqJEPA.model_settings)
    assert m2.hparams["width"] == cfg.width and m2.hparams["act_dim"] == cfg.act_dim
    assert m2.hparams["mean"] == [0.1, 0.2, 0.3]


def test_checkpoints_without_action_bn_load_and_keep_their_normalisation():
    old = small(mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
    hparams = {k: v for k, v in old.hparams.items() if k != "action_bn"}  # written before action_bn existed
    rebuilt = SeqJEPA(**hparams)
    rebuilt.load_state_dict(old.state_dict())  # strict
    assert rebuilt.action_bn == "3diebench"
    # A run resumed under a world that now declares other constants keeps those its weights were trained with.
    resumed = small(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    resumed.load_state_dict(old.state_dict())
    assert resumed.hparams["mean"] == pytest.approx([0.1, 0.2, 0.3])
    assert resumed.hparams["std"] == pytest.approx([0.4, 0.5, 0.6])


def test_build_model_takes_normalisation_and_action_batching_from_the_world(tmp_path):
    import envs
    from seqjepa.train import build_model
    from test_augment import write_cifar
    from test_saccades import write_stl10

    cfg = preset("smoke")
    write_cifar(tmp_path / "cifar")
    (tmp_path / "stl").mkdir()
    write_stl10(tmp_path / "stl")
    cases = [(envs.make_world("seqjepa/RotatingObjects-v0", image_size=16), (0.5,) * 3, (0.25,) * 3, "3diebench"),
             (envs.Augmentations(image_size=16, num_classes=2, per_class=2), (0.5,) * 3, (0.25,) * 3,
              "augmentations"),
             (envs.Augmentations(source="cifar100", root=str(tmp_path / "cifar"), image_size=16),
              (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761), "augmentations"),
             (envs.Saccades(source="stl10", root=str(tmp_path / "stl"), scene_size=48, image_size=16,
                            fixations="uniform"),
              (0.4467, 0.4398, 0.4066), (0.2241, 0.2215, 0.2239), "saccades")]
    for world, mean, std, action_bn in cases:
        assert (world.pixel_mean, world.pixel_std) == (mean, std), type(world).__name__
        model = build_model(cfg, world)
        assert model.hparams["mean"] == pytest.approx(mean) and model.hparams["std"] == pytest.approx(std)
        torch.testing.assert_close(model.mean.flatten(), torch.tensor(mean))
        assert model.action_bn == action_bn
    cfg.model.method = "simclr"
    assert build_model(cfg, cases[2][0]).hparams["mean"] == pytest.approx(cases[2][1])


def test_prepare_normalises_and_channels_last():
    m = small(mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    views = torch.full((2, 3, 3, 8, 8), 255, dtype=torch.uint8)
    x = m.prepare(views)
    assert x.shape == (6, 3, 8, 8) and x.dtype == torch.float32
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([1.0, 3.0, 1.0]))
    m.channels_last = True
    assert m.prepare(views).is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(TypeError):
        m.prepare(views.float())


def test_bf16_autocast_step():
    m = small()
    m.channels_last = True
    m.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(*batch())
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    out["loss"].backward()
    m.update_target(0.99)
