"""Gymnasium faces of a world: a numpy single env (passes ``check_env``) and a batched torch vector env.

Both are thin: the world does the work. Observations are the views, uint8 (H, W, 3) like other image envs;
``info`` carries what the model must not see but probes need (class, episode, absolute params).

>>> import gymnasium as gym, envs
>>> env = gym.make("seqjepa/RotatingObjects-v0", image_size=32)
>>> obs, info = env.reset(seed=0)
>>> obs.shape
(32, 32, 3)
>>> venv = gym.make_vec("seqjepa/RotatingObjects-v0", num_envs=4, device="cpu", image_size=32)
>>> obs, info = venv.reset(seed=0)
>>> tuple(obs.shape)
(4, 32, 32, 3)
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from einops import rearrange
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from .base import World


def spaces_of(world: World) -> tuple[spaces.Box, spaces.Box]:
    s = world.image_size
    obs = spaces.Box(0, 255, (s, s, 3), np.uint8)
    act = spaces.Box(world.action_low.cpu().numpy().astype(np.float32),
                     world.action_high.cpu().numpy().astype(np.float32), dtype=np.float32)
    return obs, act


class WorldEnv(gym.Env):
    """One episode of a world at a time, numpy in and out. Reward is 0; episodes end by truncation."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, world_cls: type[World], render_mode: str | None = None, **options):
        self.world = world_cls(device="cpu", **options)
        self.render_mode = render_mode
        self.observation_space, self.action_space = spaces_of(self.world)
        self._state = None
        self._g = torch.Generator()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        # All randomness flows from np_random, so reset(seed=s) replays the same episode (check_env tests it).
        self._g.manual_seed(int(self.np_random.integers(0, 2**62)))
        episodes = None if not options or "episode" not in options else torch.tensor([int(options["episode"])])
        self._state = self.world.reset(1, self._g, episodes)
        return self._obs(), self._info()

    def step(self, action):
        if self._state is None:
            raise RuntimeError("step() called before reset()")
        a = torch.as_tensor(np.asarray(action, dtype=np.float32)).reshape(1, -1)
        self._state = self.world.step(self._state, a, self._g)
        return self._obs(), 0.0, False, False, self._info()

    def render(self):
        if self._state is None:
            return None
        return rearrange(self.world.render_frame(self._state)[0], "c h w -> h w c").cpu().numpy()

    def _obs(self) -> np.ndarray:
        return rearrange(self.world.render(self._state)[0], "c h w -> h w c").cpu().numpy()

    def _info(self) -> dict:
        return {"label": int(self._state["label"][0]), "episode": int(self._state["episode"][0]),
                "params": self._state["params"][0].cpu().numpy()}


class WorldVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` episodes stepped together as torch tensors on ``device`` (no host round trip).

    Autoreset is disabled: a view sequence is as long as the caller wants; call ``reset`` to start new ones
    (``options={"reset_mask": mask}`` restarts only some).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4,
                "autoreset_mode": gym.vector.AutoresetMode.DISABLED}

    def __init__(self, world_cls: type[World], num_envs: int = 1, device: str = "cpu",
                 render_mode: str | None = None, max_episode_steps: int | None = None, **options):
        self.world = world_cls(device=device, **options)
        self.num_envs, self.device, self.render_mode = num_envs, torch.device(device), render_mode
        self.single_observation_space, self.single_action_space = spaces_of(self.world)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(0)
        self._state = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.generator.manual_seed(int(seed))
        fresh = self.world.reset(self.num_envs, self.generator)
        mask = None if not options else options.get("reset_mask")
        if mask is not None and self._state is not None:
            m = torch.as_tensor(mask, device=self.device, dtype=torch.bool)
            fresh = {k: torch.where(m.view(-1, *[1] * (v.ndim - 1)), v, self._state[k]) for k, v in fresh.items()}
        self._state = fresh
        return self._obs(), self._info()

    def step(self, actions):
        a = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
        # The Gym API names a bad action on any device (one host read per call); training's sources skip this
        # and rely on the world's asynchronous check, so the hot loop never waits for the device.
        if a.ndim == 2:
            self.world.check_finite(a, wait=True)
        self._state = self.world.step(self._state, a, self.generator)
        zeros = torch.zeros(self.num_envs, device=self.device)
        false = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return self._obs(), zeros, false, false, self._info()

    def render(self):
        return rearrange(self.world.render_frame(self._state), "n c h w -> n h w c")

    def _obs(self):
        return rearrange(self.world.render(self._state), "n c h w -> n h w c")

    def _info(self) -> dict:
        return {"label": self._state["label"], "episode": self._state["episode"], "params": self._state["params"]}
