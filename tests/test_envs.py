"""The Gymnasium contract, for every registered world."""
import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs
import run
from envs import SequenceSource, ViewBank

WORLD_IDS = sorted(envs.WORLDS)
SMALL = {"image_size": 32}


def small_options(env_id):
    cls = envs.WORLDS[env_id]
    fields = {f for f in cls.Options.__dataclass_fields__}
    out = {k: v for k, v in SMALL.items() if k in fields}
    if cls.needs_data:  # a world over a dataset on disk: its tiny fixture tree
        out["root"] = str(data_root(env_id))
    return out


def data_root(env_id):
    """A tiny dataset for worlds with ``needs_data`` (written once per session); skip if none is known."""
    from iebench_tree import write_tree

    writers = {"seqjepa/3DIEBench-v0": write_tree}
    if env_id not in writers:
        pytest.skip(f"{env_id} needs data on disk and has no test fixture")
    if env_id not in _DATA:
        import atexit, shutil, tempfile
        folder = tempfile.mkdtemp(prefix="seqjepa-data-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _DATA[env_id] = writers[env_id](folder)
    return _DATA[env_id]


_DATA: dict = {}


@pytest.mark.parametrize("env_id", WORLD_IDS)
def test_check_env(env_id):
    env = gym.make(env_id, **small_options(env_id))
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=UserWarning)
        check_env(env.unwrapped)
    env.close()


@pytest.mark.parametrize("env_id", WORLD_IDS)
def test_same_seed_same_episode(env_id):
    def episode(seed):
        env = gym.make(env_id, **small_options(env_id))
        env.action_space.seed(seed)
        obs, info = env.reset(seed=seed)
        frames = [obs]
        for _ in range(3):
            obs, *_ = env.step(env.action_space.sample())
            frames.append(obs)
        return np.stack(frames), info["label"]

    a, b, c = episode(3), episode(3), episode(4)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("env_id", WORLD_IDS)
def test_render_returns_rgb(env_id):
    env = gym.make(env_id, render_mode="rgb_array", **small_options(env_id))
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3


@pytest.mark.parametrize("env_id", WORLD_IDS)
def test_bad_actions_get_clear_errors(env_id):
    env = gym.make(env_id, **small_options(env_id))
    env.reset(seed=0)
    dim = env.action_space.shape[0]
    with pytest.raises(ValueError, match="action: got shape"):
        env.step(np.zeros(dim + 1, dtype=np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.full(dim, np.nan, dtype=np.float32))
    obs, *_ = env.step(np.full(dim, 1e6, dtype=np.float32))  # out of range: clipped, as the Box says
    assert obs.shape == env.observation_space.shape


@pytest.mark.parametrize("env_id", WORLD_IDS)
def test_vector_env_is_batched_torch_on_request(env_id):
    venv = gym.make_vec(env_id, num_envs=4, backend="torch", device="cpu", **small_options(env_id))
    obs, info = venv.reset(seed=0)
    assert isinstance(obs, torch.Tensor) and obs.dtype == torch.uint8
    assert tuple(obs.shape) == venv.observation_space.shape
    actions = torch.as_tensor(venv.action_space.sample())
    obs2, reward, term, trunc, info = venv.step(actions)
    assert tuple(obs2.shape) == tuple(obs.shape) and info["label"].shape == (4,)
    assert all(isinstance(x, torch.Tensor) for x in (reward, term, trunc, info["episode_id"], info["params"]))
    bad = actions.clone().float()
    bad[2, 0] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite value in rows \[2\]"):
        venv.step(bad)
    again, _ = gym.make_vec(env_id, num_envs=4, backend="torch", device="cpu", **small_options(env_id)).reset(seed=0)
    assert torch.equal(obs, again)


FEW = {"seqjepa/Augmentations-v0": {"per_class": 4},  # fewer, smaller images: worlds built in a fraction of a second
       "seqjepa/Saccades-v0": {"scene_size": 48, "per_class": 4}}


@pytest.mark.parametrize("env_id", WORLD_IDS)
def test_vector_env_is_numpy_by_default_and_matches_torch(env_id):
    opts = {**small_options(env_id), **FEW.get(env_id, {})}
    venv = gym.make_vec(env_id, num_envs=4, **opts)
    obs, info = venv.reset(seed=0)
    assert isinstance(obs, np.ndarray) and venv.observation_space.contains(obs)
    assert info["label"].shape == (4,) and info["episode_id"].dtype == np.int64
    tvenv = gym.make_vec(env_id, num_envs=4, backend="torch", **opts)
    tobs, _ = tvenv.reset(seed=0)
    assert np.array_equal(obs, tobs.numpy())  # one stream of randomness, two array types
    actions = venv.action_space.sample()
    obs, reward, term, trunc, info = venv.step(actions)
    tobs, *_ = tvenv.step(torch.as_tensor(actions))
    assert np.array_equal(obs, tobs.numpy()) and reward.dtype == np.float64 and trunc.dtype == bool


@pytest.mark.parametrize("env_id", WORLD_IDS)
def test_sequences_from_bank_and_live_agree_in_form(env_id, tmp_path):
    world = envs.make_world(env_id, **small_options(env_id))
    live = SequenceSource(world, seq_len=2, batch_size=3, seed=0).next()
    bank = ViewBank.cached(env_id, world, objects=4, views=3, seed=0, cache_dir=str(tmp_path))
    banked = SequenceSource(world, seq_len=2, batch_size=3, seed=0, bank=bank).next()
    for b in (live, banked):
        assert b.views.shape == (3, 3, 3, world.image_size, world.image_size) and b.views.dtype == torch.uint8
        assert b.actions.shape == (3, 2, world.action_dim)
        assert b.params.shape == (3, 3, world.param_dim)
        assert b.labels.shape == (3,)
        assert torch.isfinite(b.actions).all()


def test_live_chunks_serve_whole_batches_and_resume_inside_a_chunk():
    world = envs.make_world("seqjepa/Augmentations-v0", **small_options("seqjepa/Augmentations-v0"))
    source = SequenceSource(world, seq_len=2, batch_size=3, seed=0, chunk=4)
    first = [source.next() for _ in range(6)]  # a whole chunk, then 2 batches into the next
    assert all(b.views.shape[0] == 3 for b in first)
    assert not torch.equal(first[0].views, first[1].views)
    saved = source.state_dict()
    later = [source.next() for _ in range(4)]  # crosses into a third chunk
    resumed = SequenceSource(world, seq_len=2, batch_size=3, seed=0, chunk=4)
    resumed.load_state_dict(saved)
    for a, b in zip(later, (resumed.next() for _ in range(4))):
        assert torch.equal(a.views, b.views) and torch.equal(a.actions, b.actions)
    with pytest.raises(ValueError, match="world.live_chunk=4"):
        SequenceSource(world, seq_len=2, batch_size=3, seed=0, chunk=2).load_state_dict(saved)


def test_view_bank_cache_is_keyed_by_settings(tmp_path):
    world = envs.make_world("seqjepa/RotatingObjects-v0", image_size=16)
    a = ViewBank.cached("w", world, objects=3, views=2, seed=0, cache_dir=str(tmp_path))
    again = ViewBank.cached("w", world, objects=3, views=2, seed=0, cache_dir=str(tmp_path))
    assert torch.equal(a.views, again.views) and len(list(tmp_path.iterdir())) == 1
    other = envs.make_world("seqjepa/RotatingObjects-v0", image_size=16, rotation_range=0.5)
    ViewBank.cached("w", other, objects=3, views=2, seed=0, cache_dir=str(tmp_path))
    ViewBank.cached("w", world, objects=3, views=3, seed=0, cache_dir=str(tmp_path))
    assert len(list(tmp_path.iterdir())) == 3  # other options or sizes never reuse a bank


# Small settings per world, so that each trains in seconds (the smoke preset does the rest).
FAST = {"seqjepa/Saccades-v0": ["world.options.scene_size=48", "world.options.image_size=16",
                                "world.options.per_class=4"],
        "seqjepa/Augmentations-v0": ["world.options.per_class=4"]}


@pytest.mark.slow
# The default world (rotating objects) is trained and evaluated by the CLI test (test_cli.py), a minute's work.
@pytest.mark.parametrize("env_id", [w for w in WORLD_IDS if w != "seqjepa/RotatingObjects-v0"])
def test_every_world_trains_and_evaluates_from_the_launcher(env_id, tmp_path):
    sets = [f"train.runs_dir={tmp_path}", "train.name=w", f"world.cache_dir={tmp_path / 'cache'}", "train.progress=off",
            *FAST.get(env_id, []), *(f"world.options.{k}={v}" for k, v in small_options(env_id).items())]
    assert run.main(["train", "--preset", "smoke", "--env", env_id, *sum((["--set", s] for s in sets), [])]) == 0
    result = json.loads((tmp_path / "w" / "eval.json").read_text())
    for net in ("trained", "random init"):
        metrics = result[net]["metrics"]
        assert 0.0 <= metrics["linear_probe/z_agg/M=1"]["value"] <= 100.0
        assert any(k.startswith("equivariance/") for k in metrics), sorted(metrics)
    assert result["trained"]["step"] == 6  # the smoke preset's steps, all trained
