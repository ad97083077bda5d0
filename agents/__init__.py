"""Agents: policies that choose the actions of a world, and planners that choose them with a world model.

A policy is any callable ``policy(world, state, generator) -> actions [n, action_dim]`` on the world's device.
:func:`make_agent` builds one by name for ``run.py train --agent NAME`` (= ``--set world.agent=NAME
--set world.source=live``):

=========  ================================================================  ===============================
name       what it does                                                      worlds
=========  ================================================================  ===============================
random     the world's own random relative transformation (paper sampling)   every world
saliency   next fixation from saliency x (1 - inhibition of return) (PLS)    saccades
uniform    uniform fixations (with IoR) / uniform rotations on SO(3)         saccades, rotating objects
sweep      scripted: raster scan / steady yaw sweep; deterministic           saccades, rotating objects
=========  ================================================================  ===============================

Planning with a trained model (``agents.planning``, ``agents.active_vision``, ``run.py plan``) needs the model,
so those agents are built in code, not by name.

>>> import torch, envs
>>> world = envs.make_world("seqjepa/RotatingObjects-v0", image_size=32)
>>> g = torch.Generator().manual_seed(0)
>>> make_agent("sweep")(world, world.reset(2, g), g).shape
torch.Size([2, 4])
"""

from __future__ import annotations

from typing import Callable

import torch

from envs.base import World

from seqjepa.registry import Registry

from .random_policy import RandomPolicy
from .saliency import SaliencyPolicy
from .sweep import SweepPolicy
from .uniform import UniformPolicy

# world.agent -> a factory of the policy (a class); a plug-in module may register its own.
AGENTS: Registry[Callable[[], object]] = Registry("agent", "world.agent", {
    "random": RandomPolicy, "saliency": SaliencyPolicy, "uniform": UniformPolicy, "sweep": SweepPolicy})


def make_agent(name: str):
    """A fresh policy of agent ``name``; ConfigError naming ``world.agent`` and the agents if it names none."""
    return AGENTS[name]()


def check_agent(name: str, world: World) -> None:
    """Build agent ``name`` and act once in a 1-episode ``world``: a misfit fails before training starts."""
    g = torch.Generator(device=world.device).manual_seed(0)
    make_agent(name)(world, world.reset(1, g), g)


__all__ = ["AGENTS", "RandomPolicy", "SaliencyPolicy", "SweepPolicy", "UniformPolicy", "check_agent", "make_agent"]
