"""Uniform actions: fixations uniform over the scene's uninhibited pixels (saccades), relative rotations uniform
on SO(3) (rotating objects; with ``actions=rotation+color`` also hue shifts uniform in [-0.5, 0.5)).

Uniform rotations are wider than the paper's sampling (poses within +-90 degrees per Euler angle): every
orientation, with any axis and angle, is equally likely.

>>> import torch, envs
>>> world = envs.make_world("seqjepa/RotatingObjects-v0", image_size=32)
>>> g = torch.Generator().manual_seed(0)
>>> a = UniformPolicy()(world, world.reset(2, g), g)
>>> a.shape, bool(torch.allclose(a.norm(dim=1), torch.ones(2)))
(torch.Size([2, 4]), True)
"""

from __future__ import annotations

import torch
from torch import Tensor

from envs import rotations as rt
from envs.base import State, World
from envs.objects import RotatingObjects
from envs.saccades import Saccades
from envs.saliency import sample_fixations

from .base import on_device, unfit


class UniformPolicy:
    """Uniform fixations (with the world's inhibition of return) or uniform relative rotations."""

    def __call__(self, world: World, state: State, generator: torch.Generator) -> Tensor:
        if isinstance(world, Saccades):
            return self._fixation(world, state, on_device(generator, world))
        if isinstance(world, RotatingObjects):
            return self._rotation(world, len(state["params"]), generator)
        raise unfit("uniform", world, "a saccade or rotating-objects world")

    @staticmethod
    def _fixation(world: Saccades, state: State, g: torch.Generator) -> Tensor:
        s = world.options.scene_size
        flat = torch.ones(len(state["params"]), s, s, device=world.device)
        inhibition = state["inhibition"] if world.options.ior != "none" else None
        row, col = sample_fixations(flat, inhibition, g)
        return torch.stack([row, col], 1).float() / s - state["params"]

    @staticmethod
    def _rotation(world: RotatingObjects, n: int, g: torch.Generator) -> Tensor:
        q = rt.normalize_quat(torch.randn(n, 4, generator=g, device=world.device))  # uniform on SO(3)
        q = rt.canonical_quat(q) if world.options.canonical_quat else q
        if world.action_dim == 4:
            return q
        hues = torch.rand(n, world.action_dim - 4, generator=g, device=world.device) - 0.5
        return torch.cat([q, hues], 1)
