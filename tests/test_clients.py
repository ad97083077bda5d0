"""Third-party clients on every world: Gymnasium's RecordEpisodeStatistics (single and vector), Stable-Baselines3's
PPO through its own ``make_vec_env``, a table of bad inputs to both envs, and a seeded fuzz of both envs.

The SB3 test is skipped, with the reason, where Stable-Baselines3 is not installed (``pip install -e ".[clients]"``;
CI installs it). Run: ``python -m pytest tests/test_clients.py -q``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers import RecordEpisodeStatistics
from gymnasium.wrappers.vector import DictInfoToList
from gymnasium.wrappers.vector import RecordEpisodeStatistics as VectorRecordEpisodeStatistics

import envs
from envs.gym_env import CLIENT_INFO_KEYS, ECOSYSTEM_INFO_KEYS
from test_envs import small_options

pytestmark = pytest.mark.usefixtures("single_thread")

WORLD_IDS = sorted(envs.WORLDS)
PROCEDURAL_IDS = [i for i in WORLD_IDS if not envs.WORLDS[i].needs_data]

# Small, fast settings per world (views of 16 px, few images), for everything but SB3.
FAST = {"seqjepa/RotatingObjects-v0": {"image_size": 16},
        "seqjepa/Augmentations-v0": {"image_size": 16, "per_class": 2},
        "seqjepa/Saccades-v0": {"scene_size": 48, "image_size": 16, "per_class": 2}}

# SB3's CnnPolicy (NatureCNN) needs views of at least 36 px; Augmentations' and Saccades' defaults are 32 px (the
# paper's CIFAR and glimpse sizes), so the size is passed as SB3 users would, through env_kwargs (README).
SB3_KWARGS = {"seqjepa/RotatingObjects-v0": {"image_size": 36},
              "seqjepa/Augmentations-v0": {"image_size": 36, "per_class": 4},
              "seqjepa/Saccades-v0": {"scene_size": 64, "image_size": 36, "per_class": 4}}


def options(env_id: str) -> dict:
    return {**small_options(env_id), **FAST.get(env_id, {})}


def test_project_info_keys_never_collide_with_the_ecosystem():
    assert not set(CLIENT_INFO_KEYS) & set(ECOSYSTEM_INFO_KEYS)


@pytest.mark.parametrize("env_id", WORLD_IDS)
def test_record_episode_statistics_single(env_id):
    env = RecordEpisodeStatistics(gym.make(env_id, max_episode_steps=3, **options(env_id)))
    env.action_space.seed(0)
    for episode in range(2):
        _, info = env.reset(seed=episode)
        assert set(CLIENT_INFO_KEYS) <= set(info) and "episode" not in info
        for t in range(3):
            _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert truncated and not terminated
        assert info["episode"]["l"] == 3 and info["episode"]["r"] == 0.0
        assert isinstance(info["episode_id"], int)
    assert list(env.length_queue) == [3, 3]


@pytest.mark.parametrize("env_id", WORLD_IDS)
def test_record_episode_statistics_vector(env_id):
    venv = VectorRecordEpisodeStatistics(gym.make_vec(env_id, num_envs=2, max_episode_steps=3, **options(env_id)))
    _, info = venv.reset(seed=0)
    assert isinstance(info["episode_id"], np.ndarray) and info["episode_id"].shape == (2,)
    for t in range(3):
        obs, reward, terminated, truncated, info = venv.step(venv.action_space.sample())
    assert venv.observation_space.contains(obs)
    assert truncated.all() and not terminated.any() and info["_episode"].all()
    assert (info["episode"]["l"] == 3).all() and (info["episode"]["r"] == 0).all()
    venv.reset(options={"reset_mask": truncated})  # autoreset is disabled: the caller restarts truncated envs
    venv.step(venv.action_space.sample())
    assert list(venv.length_queue) == [3, 3]
    # Another of Gymnasium's vector wrappers that reads the info dict.
    listed = DictInfoToList(gym.make_vec(env_id, num_envs=2, **options(env_id)))
    _, infos = listed.reset(seed=0)
    assert len(infos) == 2 and set(CLIENT_INFO_KEYS) <= set(infos[1])


@pytest.mark.slow
@pytest.mark.parametrize("env_id", PROCEDURAL_IDS)
def test_stable_baselines3_ppo_trains_through_its_own_make_vec_env(env_id):
    pytest.importorskip("stable_baselines3", reason="Stable-Baselines3 is not installed (pip install -e '.[clients]')")
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env(env_id, n_envs=2, seed=0, env_kwargs=SB3_KWARGS[env_id])
    # Small rollouts, so that 512 steps are 4 updates with a log dump each (where episode statistics are read).
    model = PPO("CnnPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu", verbose=0)
    model.learn(total_timesteps=512, log_interval=1)
    assert model.num_timesteps >= 512
    lengths = [ep["l"] for ep in model.ep_info_buffer]
    assert lengths and all(n == gym.spec(env_id).max_episode_steps for n in lengths)
    venv.close()


# ---- Bad inputs: each must raise its error type, in one line, naming the field. -----------------------------

@dataclass
class Worlds:
    """Envs of one world for the bad-input table, built once: reset single and vector envs, and factories."""
    env_id: str
    cache: dict = field(default_factory=dict)

    def make_single(self, **kw):
        return gym.make(self.env_id, **options(self.env_id), **kw)

    def make_vector(self, **kw):
        return gym.make_vec(self.env_id, **{"num_envs": 3, **options(self.env_id), **kw})

    def _reset_once(self, key: str, make):
        if key not in self.cache:
            self.cache[key] = make()
            self.cache[key].reset(seed=0)
        return self.cache[key]

    @property
    def single(self):
        return self._reset_once("single", self.make_single)

    @property
    def vector(self):
        return self._reset_once("vector", self.make_vector)

    @property
    def dim(self) -> int:
        return self.single.action_space.shape[0]


def _truncated_vector(w: Worlds):
    venv = w.make_vector(max_episode_steps=1)
    venv.reset(seed=0)
    venv.step(venv.action_space.sample())
    venv.step(venv.action_space.sample())


BAD = [  # (name, call, error type, what the message must name)
    # (gym.make's OrderEnforcing wrapper refuses this first, with Gymnasium's own ResetNeeded; the env itself too.)
    ("single: step before reset", lambda w: w.make_single().unwrapped.step(np.zeros(w.dim)), RuntimeError, "reset"),
    ("single: seed < 0", lambda w: w.single.reset(seed=-1), ValueError, "seed"),
    ("single: seed float", lambda w: w.single.reset(seed=1.5), ValueError, "seed"),
    ("single: seed str", lambda w: w.single.reset(seed="0"), ValueError, "seed"),
    ("single: options not a dict", lambda w: w.single.reset(options=[1]), ValueError, "options"),
    ("single: unknown option", lambda w: w.single.reset(options={"colour": 1}), ValueError, "'colour'"),
    ("single: the old 'episode' option", lambda w: w.single.reset(options={"episode": 1}), ValueError, "'episode'"),
    ("single: episode_id float", lambda w: w.single.reset(options={"episode_id": 1.7}), ValueError, "episode_id"),
    ("single: episode_id bool", lambda w: w.single.reset(options={"episode_id": True}), ValueError, "episode_id"),
    ("single: episode_id < 0", lambda w: w.single.reset(options={"episode_id": -1}), ValueError, "episode_id"),
    ("single: episode_id too big", lambda w: w.single.reset(options={"episode_id": 10**9}), ValueError, "episode_id"),
    ("single: action too long", lambda w: w.single.step(np.zeros(w.dim + 1)), ValueError, "action"),
    ("single: action scalar", lambda w: w.single.step(0.0), ValueError, "action"),
    ("single: action nan", lambda w: w.single.step(np.full(w.dim, np.nan)), ValueError, "action"),
    ("single: action inf", lambda w: w.single.step(np.full(w.dim, -np.inf)), ValueError, "action"),
    ("single: action text", lambda w: w.single.step("left"), ValueError, "action"),
    ("single: action ragged", lambda w: w.single.step([[0.0], [0.0, 1.0]]), ValueError, "action"),
    ("single: render_mode", lambda w: w.make_single(render_mode="human"), ValueError, "render_mode"),
    ("vector: step before reset", lambda w: w.make_vector().step(np.zeros((3, w.dim))), RuntimeError, "reset"),
    ("vector: num_envs=0", lambda w: w.make_vector(num_envs=0), ValueError, "num_envs"),
    ("vector: num_envs=-1", lambda w: w.make_vector(num_envs=-1), ValueError, "num_envs"),
    ("vector: num_envs float", lambda w: w.make_vector(num_envs=2.5), ValueError, "num_envs"),
    ("vector: backend", lambda w: w.make_vector(backend="jax"), ValueError, "backend"),
    ("vector: max_episode_steps=0", lambda w: w.make_vector(max_episode_steps=0), ValueError, "max_episode_steps"),
    ("vector: render_mode", lambda w: w.make_vector(render_mode="human"), ValueError, "render_mode"),
    ("vector: too few action rows", lambda w: w.vector.step(np.zeros((2, w.dim))), ValueError, "actions"),
    ("vector: too many action rows", lambda w: w.vector.step(np.zeros((4, w.dim))), ValueError, "actions"),
    ("vector: one action for all", lambda w: w.vector.step(np.zeros(w.dim)), ValueError, "actions"),
    ("vector: action columns", lambda w: w.vector.step(np.zeros((3, w.dim + 1))), ValueError, "actions"),
    ("vector: action nan", lambda w: w.vector.step(np.full((3, w.dim), np.nan)), ValueError, "action"),
    ("vector: action text", lambda w: w.vector.step("left"), ValueError, "actions"),
    ("vector: seed < 0", lambda w: w.vector.reset(seed=-1), ValueError, "seed"),
    ("vector: seed list", lambda w: w.vector.reset(seed=[0, 1, 2]), ValueError, "seed"),
    ("vector: options not a dict", lambda w: w.vector.reset(options="all"), ValueError, "options"),
    ("vector: unknown option", lambda w: w.vector.reset(options={"mask": [True] * 3}), ValueError, "'mask'"),
    ("vector: reset_mask short", lambda w: w.vector.reset(options={"reset_mask": np.ones(2, bool)}), ValueError,
     "reset_mask"),
    ("vector: reset_mask long", lambda w: w.vector.reset(options={"reset_mask": np.ones(4, bool)}), ValueError,
     "reset_mask"),
    ("vector: reset_mask floats", lambda w: w.vector.reset(options={"reset_mask": np.ones(3)}), ValueError,
     "reset_mask"),
    ("vector: reset_mask ragged", lambda w: w.vector.reset(options={"reset_mask": [[True], [True, False]]}),
     ValueError, "reset_mask"),
    ("vector: episode_id floats", lambda w: w.vector.reset(options={"episode_id": [0.5, 1.0, 2.0]}), ValueError,
     "episode_id"),
    ("vector: episode_id length", lambda w: w.vector.reset(options={"episode_id": [0, 1]}), ValueError,
     "episode_id"),
    ("vector: episode_id range", lambda w: w.vector.reset(options={"episode_id": [0, 1, 10**9]}), ValueError,
     "episode_id"),
    ("vector: step after truncation", _truncated_vector, RuntimeError, "reset_mask"),
]


@pytest.fixture(scope="module")
def worlds():
    return {env_id: Worlds(env_id) for env_id in PROCEDURAL_IDS}


@pytest.mark.parametrize("env_id", PROCEDURAL_IDS)
@pytest.mark.parametrize("name,call,error,names", BAD, ids=[case[0] for case in BAD])
def test_bad_inputs_get_one_clear_line(worlds, env_id, name, call, error, names):
    with pytest.raises(error) as raised:
        call(worlds[env_id])
    message = str(raised.value)
    assert names in message and "\n" not in message, message


@pytest.mark.parametrize("env_id", PROCEDURAL_IDS)
def test_huge_seeds_are_accepted_by_both_envs_alike(env_id):
    env, venv = gym.make(env_id, **options(env_id)), gym.make_vec(env_id, num_envs=2, **options(env_id))
    for seed in (2**70, np.int64(5)):
        a, _ = env.reset(seed=seed)
        b, _ = env.reset(seed=seed)
        assert np.array_equal(a, b)
        c, _ = venv.reset(seed=seed)
        d, _ = venv.reset(seed=seed)
        assert np.array_equal(c, d)
    obs, info = venv.reset(options={"episode_id": np.array([1, 0])})
    assert info["episode_id"].tolist() == [1, 0]
    obs, info = env.reset(options={"episode_id": 1})
    assert info["episode_id"] == 1


# ---- Seeded fuzz: random calls to both envs of every world; each returns valid outputs or raises a clear error. --

CLEAR = (ValueError, RuntimeError, TypeError)


def _junk(rng: np.random.Generator, shape: tuple[int, ...], space: gym.spaces.Box, *, torch_ok: bool):
    """A random action: valid, out of range, non-finite, of the wrong shape or of the wrong kind."""
    kind = rng.integers(12)
    good = space.sample().astype(np.float32)
    if kind == 0:
        with np.errstate(over="ignore"):  # 1e40 overflows float32 to inf on purpose
            return (good * rng.choice([1e3, -1e6, 1e40])).astype(np.float32)
    if kind == 1:
        bad = good.copy()
        bad.flat[rng.integers(bad.size)] = rng.choice([np.nan, np.inf, -np.inf])
        return bad
    if kind == 2:
        return np.zeros(tuple(int(s) + int(rng.integers(-1, 2)) for s in shape), np.float32)
    if kind == 3:
        return rng.choice(np.array([None, "x", {"a": 1}, 0.0, [], 10**400], dtype=object))
    if kind == 4:
        return good.astype(np.int64)
    if kind == 5 and torch_ok:
        return torch.as_tensor(good)
    if kind == 6:
        return good.tolist()
    return good


def _junk_seed(rng: np.random.Generator):
    return [None, int(rng.integers(0, 2**63)), 2**70, -1, 1.5, "7", True][rng.integers(7)]


def _check_outputs(env, out, n: int | None, num_episodes: int):
    obs, info = (out[0], out[-1])
    assert env.observation_space.contains(np.asarray(obs)), (getattr(obs, "shape", None), env.observation_space)
    ids = np.atleast_1d(np.asarray(info["episode_id"]))
    assert ((0 <= ids) & (ids < num_episodes)).all() and np.isfinite(np.asarray(info["params"])).all()
    if len(out) == 5:
        assert np.all(np.asarray(out[1]) == 0) and not np.any(out[2])
    assert n is None or len(ids) == n


def _fuzz(env, calls: int, rng: np.random.Generator, vector: bool, num_episodes: int) -> dict[str, int]:
    counts = {"ok": 0, "refused": 0}
    n = env.num_envs if vector else None
    shape = env.action_space.shape
    space = env.action_space
    for _ in range(calls):
        op = rng.integers(10)
        try:
            if op < 3:
                opts = [None, {}, {"episode_id": rng.integers(-2, num_episodes + 2, n if vector else None)},
                        {"episode_id": float(rng.random())}, {"colour": 1}, "all",
                        {"reset_mask": rng.random(n or 1) < 0.5}, {"reset_mask": rng.random(int(rng.integers(5)))}]
                option = opts[rng.integers(len(opts))]
                if not vector and isinstance(option, dict) and "episode_id" in option and rng.random() < 0.5:
                    option = {"episode_id": int(rng.integers(-1, num_episodes + 1))}
                out = env.reset(seed=_junk_seed(rng), options=option)
            elif op < 9:
                out = env.step(_junk(rng, shape, space, torch_ok=vector))
            else:
                env.render()
                continue
        except CLEAR as e:
            assert str(e) and "\n" not in str(e), repr(e)
            counts["refused"] += 1
            continue
        _check_outputs(env, out, n, num_episodes)
        counts["ok"] += 1
    return counts


@pytest.mark.parametrize("env_id", WORLD_IDS)
def test_seeded_fuzz_of_single_and_vector_env(env_id):
    start = time.perf_counter()
    rng = np.random.default_rng(sum(map(ord, env_id)))
    env = gym.make(env_id, render_mode="rgb_array", max_episode_steps=10**6, **options(env_id))
    venv = gym.make_vec(env_id, num_envs=3, max_episode_steps=4, render_mode="rgb_array", **options(env_id))
    num_episodes = env.unwrapped.world.num_episodes
    env.reset(seed=0)  # gym.make's OrderEnforcing refuses a step before the first reset with an error of its own
    single = _fuzz(env, 150, rng, False, num_episodes)
    vector = _fuzz(venv, 150, rng, True, num_episodes)
    # Both outcomes must occur, or the fuzz is not probing what it should.
    assert min(single.values()) > 10 and min(vector.values()) > 10, (single, vector)
    assert math.isfinite(time.perf_counter() - start)
