"""Saliency with inhibition of return (the paper's PLS policy): the next fixation is one draw from
``saliency * (1 - inhibition)`` of the current scene, for the saccade world.

With the world's ``fixations=saliency`` (default) this is the world's own random policy; on a world built with
``fixations=uniform`` the classical maps (``world.options.saliency``) are computed once and cached.

>>> import torch, envs
>>> world = envs.make_world("seqjepa/Saccades-v0", scene_size=48, image_size=16, num_classes=2, per_class=2)
>>> g = torch.Generator().manual_seed(0)
>>> SaliencyPolicy()(world, world.reset(3, g), g).shape
torch.Size([3, 2])
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor

from envs.base import State, World
from envs.saccades import Saccades
from envs.saliency import classical_saliency, sample_fixations

from .base import on_device, unfit

_MAPS: "weakref.WeakKeyDictionary[World, Tensor]" = weakref.WeakKeyDictionary()


def saliency_maps(world: World) -> Tensor:
    """The world's saliency probability maps [N, S, S]; ValueError naming the world if it has none."""
    if not isinstance(world, Saccades):
        raise unfit("saliency", world, "a world with saliency maps (seqjepa/Saccades-v0)")
    if world.saliency is not None:
        return world.saliency
    if world not in _MAPS:  # fixations=uniform: the world skipped its maps, compute them once
        _MAPS[world] = classical_saliency(world.images, world.options.saliency)
    return _MAPS[world]


class SaliencyPolicy:
    """Fixations drawn from the saliency map times (1 - inhibition of return), as moves from the current one."""

    def __call__(self, world: World, state: State, generator: torch.Generator) -> Tensor:
        maps = saliency_maps(world)
        inhibition = state["inhibition"] if world.options.ior != "none" else None
        row, col = sample_fixations(maps[state["episode"]], inhibition, on_device(generator, world))
        return torch.stack([row, col], 1).float() / world.options.scene_size - state["params"]
