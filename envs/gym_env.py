"""Gymnasium faces of a world: a numpy single env (passes ``check_env``) and a vector env, numpy or torch.

Both are thin: the world does the work. Observations are the views, uint8 (H, W, 3) like other image envs.
Reward is 0; episodes end by truncation (``max_episode_steps``, 50 for the registered worlds).

**Info keys.** ``info`` carries what the model must not see but probes need: ``label`` (the class, -1 where
unlabelled), ``episode_id`` (which object or image) and ``params`` (the absolute transformation of the view). None
of them is a key the ecosystem adds itself (``episode`` of Gymnasium's ``RecordEpisodeStatistics`` and
Stable-Baselines3's ``Monitor``, ``final_obs``, ``terminal_observation``, ``TimeLimit.truncated``, ...), so those
wrappers work unchanged: see :data:`CLIENT_INFO_KEYS`.

**Reset options.** The single env takes ``options={"episode_id": k}`` (replay object or image ``k``); the vector env
takes ``options={"episode_id": [k_0, ..., k_{n-1}], "reset_mask": mask}`` (``reset_mask``: restart only the envs
where ``mask`` is true). Any other option, or a value of the wrong kind, is a ValueError naming it.

**The vector env** (``gym.make_vec(id, num_envs=N)``) returns numpy arrays by default, like every Gymnasium vector
env, so Gymnasium's vector wrappers (``RecordEpisodeStatistics``, ``DictInfoToList``, ...) work on it.
``backend="torch"`` returns torch tensors on ``device`` instead, without a host round trip: the batched GPU
renderer a training loop wants (``device="cuda"`` with the numpy backend renders on the GPU and copies the views
to the host). Autoreset is disabled (Gymnasium's ``AutoresetMode.DISABLED``): an env that reports ``truncated``
must be restarted with ``reset(options={"reset_mask": truncated})`` before it steps again;
``max_episode_steps=None`` gives sequences as long as the caller wants.

>>> import gymnasium as gym, envs
>>> env = gym.make("seqjepa/RotatingObjects-v0", image_size=32)
>>> obs, info = env.reset(seed=0, options={"episode_id": 3})
>>> obs.shape, info["episode_id"]
((32, 32, 3), 3)
>>> venv = gym.make_vec("seqjepa/RotatingObjects-v0", num_envs=4, image_size=32)
>>> obs, info = venv.reset(seed=0)
>>> type(obs).__name__, obs.shape
('ndarray', (4, 32, 32, 3))
>>> tvenv = gym.make_vec("seqjepa/RotatingObjects-v0", num_envs=4, backend="torch", device="cpu", image_size=32)
>>> obs, info = tvenv.reset(seed=0)
>>> type(obs).__name__, tuple(obs.shape)
('Tensor', (4, 32, 32, 3))
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from einops import rearrange
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from .base import State, World

# The keys this project puts in ``info``. Kept apart from the ones Gymnasium, Stable-Baselines3 and their wrappers
# add (tests/test_clients.py checks both lists), because a wrapper that finds its key taken fails or misreports.
CLIENT_INFO_KEYS = ("label", "episode_id", "params")
ECOSYSTEM_INFO_KEYS = ("episode", "_episode", "final_obs", "final_info", "_final_obs", "_final_info",
                       "terminal_observation", "TimeLimit.truncated", "is_success")

BACKENDS = ("numpy", "torch")


def spaces_of(world: World) -> tuple[spaces.Box, spaces.Box]:
    """The observation and action spaces of one env of ``world``."""
    s = world.image_size
    obs = spaces.Box(0, 255, (s, s, 3), np.uint8)
    act = spaces.Box(world.action_low.cpu().numpy().astype(np.float32),
                     world.action_high.cpu().numpy().astype(np.float32), dtype=np.float32)
    return obs, act


def _show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, so an error about a large array stays one readable line."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        size = value.numel() if isinstance(value, torch.Tensor) else value.size
        shown = f"{value.tolist()!r}, " if size <= 8 else ""
        text = f"{shown}{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _host_array(value: Any) -> np.ndarray | None:
    """``value`` (array-like or tensor) as a numpy array, or None where numpy cannot make one (ragged, odd types)."""
    try:
        return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _is_int(value: Any) -> bool:
    # bool is an int to Python, but True as an episode or a seed is a mistake worth naming.
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_seed(seed: Any) -> int | None:
    """``seed`` as a Python int (any size, like Gymnasium's own seeding), or ValueError naming it.

    >>> check_seed(2**70) == 2**70
    True
    """
    if seed is None:
        return None
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed: got {_show(seed)}; expected None or an integer >= 0")
    return int(seed)


def check_options(options: Any, allowed: Mapping[str, str]) -> dict[str, Any]:
    """``options`` as a dict whose keys are all in ``allowed`` (name -> what it takes), or ValueError naming it.

    >>> check_options({"episode_id": 3}, {"episode_id": "an integer"})
    {'episode_id': 3}
    >>> check_options({"episode": 3}, {"episode_id": "an integer"})
    Traceback (most recent call last):
    ValueError: options: unknown reset option 'episode'; allowed: 'episode_id' (an integer)
    """
    if options is None:
        return {}
    described = "; ".join(f"{k!r} ({v})" for k, v in allowed.items())
    if not isinstance(options, Mapping):
        raise ValueError(f"options: got {_show(options)}; expected None or a dict with keys among: {described}")
    for key in options:
        if key not in allowed:
            raise ValueError(f"options: unknown reset option {key!r}; allowed: {described}")
    return dict(options)


class WorldEnv(gym.Env):
    """One episode of a world at a time, numpy in and out. Reward is 0; episodes end by truncation.

    >>> import gymnasium as gym, envs
    >>> env = gym.make("seqjepa/RotatingObjects-v0", image_size=16)
    >>> obs, info = env.reset(seed=1)
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    >>> sorted(info)
    ['episode_id', 'label', 'params']
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    reset_options = {"episode_id": "an integer in [0, number of episodes): the object or image to show"}

    def __init__(self, world_cls: type[World], render_mode: str | None = None, **options):
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode: got {render_mode!r}; expected None or one of "
                             f"{self.metadata['render_modes']}")
        self.world = world_cls(device="cpu", **options)
        self.render_mode = render_mode
        self.observation_space, self.action_space = spaces_of(self.world)
        self._state: State | None = None
        self._g = torch.Generator()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        seed = check_seed(seed)
        opts = check_options(options, self.reset_options)
        episodes = None
        if "episode_id" in opts:
            k = opts["episode_id"]
            if not _is_int(k) or not 0 <= k < self.world.num_episodes:
                raise ValueError(f"options['episode_id']: got {_show(k)}; expected an integer in "
                                 f"[0, {self.world.num_episodes})")
            episodes = torch.tensor([int(k)])
        super().reset(seed=seed)
        # All randomness flows from np_random, so reset(seed=s) replays the same episode (check_env tests it).
        self._g.manual_seed(int(self.np_random.integers(0, 2**62)))
        self._state = self.world.reset(1, self._g, episodes)
        return self._obs(), self._info()

    def step(self, action):
        if self._state is None:
            raise RuntimeError("step() called before reset(); call env.reset() first")
        dim = self.action_space.shape[0]
        a = _as_float_tensor(action, "action", f"({dim},)", torch.device("cpu"))
        if a.numel() != dim:  # a (1, dim) action is the same action; anything else is not
            raise ValueError(f"action: got shape {tuple(a.shape)}; expected ({dim},) ({self.world.action_doc})")
        a = a.reshape(1, dim)
        self.world.check_finite(a, wait=True)
        self._state = self.world.step(self._state, a, self._g)
        return self._obs(), 0.0, False, False, self._info()

    def render(self):
        if self._state is None:
            return None
        return rearrange(self.world.render_frame(self._state)[0], "c h w -> h w c").cpu().numpy()

    def _obs(self) -> np.ndarray:
        return rearrange(self.world.render(self._state)[0], "c h w -> h w c").cpu().numpy()

    def _info(self) -> dict:
        return {"label": int(self._state["label"][0]), "episode_id": int(self._state["episode"][0]),
                "params": self._state["params"][0].cpu().numpy()}


def _as_float_tensor(value: Any, name: str, expected: str, device: torch.device) -> torch.Tensor:
    """``value`` (array-like or tensor) as float32 on ``device``, or ValueError naming ``name`` and ``expected``."""
    try:
        if isinstance(value, torch.Tensor):
            if value.is_complex():
                raise TypeError("complex numbers")
            return value.detach().to(device=device, dtype=torch.float32)
        return torch.as_tensor(np.asarray(value, dtype=np.float32), device=device)
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"{name}: got {_show(value)}, not numbers ({e}); expected {expected} finite floats") from None


class WorldVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` episodes stepped together: numpy arrays by default, torch tensors on ``device`` on request.

    Autoreset is disabled: an env whose episode reached ``max_episode_steps`` reports ``truncated`` and must be
    restarted with ``reset(options={"reset_mask": mask})`` (which restarts only the envs where ``mask`` is true)
    before it steps again; ``max_episode_steps=None`` never truncates.

    >>> import gymnasium as gym, numpy as np, envs
    >>> venv = gym.make_vec("seqjepa/Saccades-v0", num_envs=2, max_episode_steps=1)
    >>> obs, info = venv.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = venv.step(venv.action_space.sample())
    >>> truncated
    array([ True,  True])
    >>> obs, info = venv.reset(options={"reset_mask": np.array([True, False])})
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4,
                "autoreset_mode": gym.vector.AutoresetMode.DISABLED}
    reset_options = {"reset_mask": "num_envs booleans: restart only the envs where it is true",
                     "episode_id": "num_envs integers in [0, number of episodes): the object or image of each env"}

    def __init__(self, world_cls: type[World], num_envs: int = 1, device: str = "cpu",
                 backend: Literal["numpy", "torch"] = "numpy", render_mode: str | None = None,
                 max_episode_steps: int | None = None, **options):
        if not _is_int(num_envs) or num_envs < 1:
            raise ValueError(f"num_envs: got {_show(num_envs)}; expected an integer >= 1")
        if backend not in BACKENDS:
            raise ValueError(f"backend: got {_show(backend)}; expected one of {list(BACKENDS)} (numpy arrays, or "
                             f"torch tensors on `device`)")
        if max_episode_steps is not None and (not _is_int(max_episode_steps) or max_episode_steps < 1):
            raise ValueError(f"max_episode_steps: got {_show(max_episode_steps)}; expected None or an integer >= 1")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode: got {render_mode!r}; expected None or one of "
                             f"{self.metadata['render_modes']}")
        self.world = world_cls(device=device, **options)
        self.num_envs, self.device, self.render_mode = int(num_envs), torch.device(device), render_mode
        self.backend, self.max_episode_steps = backend, max_episode_steps
        self.single_observation_space, self.single_action_space = spaces_of(self.world)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(0)
        self._state: State | None = None
        # Step counts live on the host: the truncation flags never make a GPU step wait for the device.
        self._steps = np.zeros(self.num_envs, dtype=np.int64)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        seed = check_seed(seed)
        opts = check_options(options, self.reset_options)
        mask = self._reset_mask(opts["reset_mask"]) if opts.get("reset_mask") is not None else None
        episodes = self._episode_ids(opts["episode_id"]) if "episode_id" in opts else None
        if seed is not None:
            # As in the single env, the seed goes through Gymnasium's seeding (any integer >= 0) and a draw from
            # it seeds the torch generator, whose seed must fit in 64 bits.
            super().reset(seed=seed)
            self.generator.manual_seed(int(self.np_random.integers(0, 2**62)))
        fresh = self.world.reset(self.num_envs, self.generator, episodes)
        if mask is not None and self._state is not None:  # before the first reset every env starts
            m = torch.as_tensor(mask, device=self.device)
            fresh = {k: torch.where(m.view(-1, *[1] * (v.ndim - 1)), v, self._state[k]) for k, v in fresh.items()}
            self._steps[mask] = 0
        else:
            self._steps[:] = 0
        self._state = fresh
        return self._obs(), self._info()

    def step(self, actions):
        if self._state is None:
            raise RuntimeError("step() called before reset(); call venv.reset() first")
        done = self._truncated()
        if done.any():
            raise RuntimeError(f"step(): envs {np.flatnonzero(done).tolist()} were truncated at max_episode_steps="
                               f"{self.max_episode_steps}; restart them first with reset(options={{'reset_mask': "
                               f"truncated}}) (autoreset is disabled)")
        shape = (self.num_envs, self.single_action_space.shape[0])
        a = _as_float_tensor(actions, "actions", f"{shape}", self.device)
        if tuple(a.shape) != shape:
            raise ValueError(f"actions: got shape {tuple(a.shape)}; expected {shape} (num_envs rows of "
                             f"{shape[1]}: {self.world.action_doc})")
        # The Gym API names a bad action on any device (one host read per call); training's sources skip this
        # and rely on the world's asynchronous check, so the hot loop never waits for the device.
        self.world.check_finite(a, wait=True)
        self._state = self.world.step(self._state, a, self.generator)
        self._steps += 1
        truncated = self._truncated()
        if self.backend == "torch":
            zeros = torch.zeros(self.num_envs, device=self.device)
            false = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
            return self._obs(), zeros, false, torch.as_tensor(truncated, device=self.device), self._info()
        return (self._obs(), np.zeros(self.num_envs), np.zeros(self.num_envs, dtype=bool), truncated,
                self._info())

    def render(self):
        if self._state is None:
            return None
        return self._out(rearrange(self.world.render_frame(self._state), "n c h w -> n h w c"))

    def _truncated(self) -> np.ndarray:
        if self.max_episode_steps is None:
            return np.zeros(self.num_envs, dtype=bool)
        return self._steps >= self.max_episode_steps

    def _reset_mask(self, mask: Any) -> np.ndarray:
        """The ``reset_mask`` option as a host bool array of num_envs, or ValueError naming it."""
        value = _host_array(mask)
        if value is None or value.dtype != np.bool_ or value.shape != (self.num_envs,):
            raise ValueError(f"options['reset_mask']: got {_show(mask)}; expected {self.num_envs} booleans "
                             f"(num_envs={self.num_envs}), true where an env restarts")
        return value

    def _episode_ids(self, ids: Any) -> torch.Tensor:
        """The ``episode_id`` option as a long tensor of num_envs valid indices, or ValueError naming it."""
        value = _host_array(ids)
        n, high = self.num_envs, self.world.num_episodes
        if (value is None or value.dtype.kind not in "iu" or value.shape != (n,) or
                (n and (value.min() < 0 or value.max() >= high))):
            raise ValueError(f"options['episode_id']: got {_show(ids)}; expected {n} integers (num_envs={n}) "
                             f"in [0, {high})")
        return torch.as_tensor(value.astype(np.int64), device=self.device)

    def _out(self, x: torch.Tensor) -> torch.Tensor | np.ndarray:
        return x if self.backend == "torch" else x.cpu().numpy()

    def _obs(self):
        return self._out(rearrange(self.world.render(self._state), "n c h w -> n h w c"))

    def _info(self) -> dict:
        s = self._state
        return {"label": self._out(s["label"]), "episode_id": self._out(s["episode"]), "params": self._out(s["params"])}
