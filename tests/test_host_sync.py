"""The GPU hot path has no host synchronisation: shown on the CPU with a recorder of syncing torch calls.

Worlds take the fixed-size path a GPU takes (``envs.fixed_size_work``); on the CPU they may prune work by
data-dependent sizes instead, and the two paths must render the same views.
"""

import collections

import pytest
import torch

import envs
from agents import AGENTS, make_agent
from envs.sequences import SequenceSource, ViewBank
from host_sync import HostSyncs
from seqjepa.options import apply_overrides
from seqjepa.train import train

PROCEDURAL = [w for w in sorted(envs.WORLDS) if "3DIEBench" not in w]  # 3DIEBench reads JPEGs from disk
SMALL = {"seqjepa/RotatingObjects-v0": dict(image_size=16, num_classes=2, instances=4),
         "seqjepa/Augmentations-v0": dict(image_size=16, per_class=2, num_classes=2),
         "seqjepa/Saccades-v0": dict(scene_size=32, image_size=8, per_class=2, num_classes=2, ior_radius=4)}


def small_world(env_id: str) -> envs.World:
    return envs.make_world(env_id, **SMALL.get(env_id, {}))


def fits(agent: str, world: envs.World) -> bool:
    try:
        from agents import check_agent
        check_agent(agent, world)
        return True
    except (ValueError, TypeError):
        return False


@pytest.mark.parametrize("env_id", PROCEDURAL)
def test_live_batches_do_not_sync(env_id):
    world = small_world(env_id)
    for agent in [a for a in sorted(AGENTS) if fits(a, world)]:
        source = SequenceSource(world, seq_len=3, batch_size=4, seed=0, policy=make_agent(agent))
        source.next()  # first-call caches (camera rays, kernels) may sync once
        with envs.fixed_size_work(), HostSyncs() as syncs:
            source.next()
            source.next()
        assert syncs.where == [], f"{env_id} with agent {agent}: {collections.Counter(syncs.where)}"


def test_bank_sampling_does_not_sync():
    world = small_world("seqjepa/RotatingObjects-v0")
    bank = ViewBank.render(world, 4, 5, seed=0)
    g = torch.Generator().manual_seed(0)
    with HostSyncs() as syncs:
        bank.sample(world, 8, 4, g)
    assert syncs.where == []


@pytest.mark.parametrize("env_id", PROCEDURAL)
def test_fixed_size_path_renders_the_same_views(env_id):
    world = small_world(env_id)
    g = torch.Generator().manual_seed(1)
    state = world.reset(6, g)
    state = world.step(state, world.sample_action(state, g), g)
    pruned = world.render(state)
    with envs.fixed_size_work():
        fixed = world.render(state)
    assert (pruned.int() - fixed.int()).abs().max() <= 1  # the same math per pixel; uint8 rounding may differ


@pytest.mark.slow
@pytest.mark.parametrize("source", ["bank", "live"])
def test_training_syncs_only_when_it_logs(smoke_cfg, tmp_path, source):
    # Logging and checkpoints happen once, at the last step; if any step synced, twice the steps would sync more.
    counts = []
    for steps in (3, 6):
        cfg = type(smoke_cfg)(**{f: getattr(smoke_cfg, f) for f in smoke_cfg.__dataclass_fields__})
        apply_overrides(cfg, [f"train.steps={steps}", f"train.log_every={steps}", f"train.ckpt_every={steps}",
                              f"world.source={source}"])
        with envs.fixed_size_work(), HostSyncs() as syncs:
            train(cfg, tmp_path / f"{source}{steps}", log=lambda s: None)
        counts.append(collections.Counter(syncs.where))
    grew = {k: (counts[0][k], v) for k, v in counts[1].items() if v > counts[0][k]}
    assert not grew, f"syncs that grow with the number of steps (3 steps, 6 steps): {grew}"


def test_recorder_sees_each_kind_of_sync():
    x = torch.arange(4.0)
    with HostSyncs() as syncs:
        x.sum().item()
        if (x > 1).any():
            x[x > 1]
        x.nonzero()
        x.add(1)  # not a sync
    assert syncs.calls == ["item", "__bool__", "__getitem__[bool mask]", "nonzero"]
    assert syncs.where[0].startswith("item at tests/test_host_sync.py:")
