"""What the policies share: naming a world in errors and drawing random numbers on the world's device.

>>> import envs
>>> world_id(envs.make_world("seqjepa/RotatingObjects-v0", image_size=32))
'seqjepa/RotatingObjects-v0'
"""

from __future__ import annotations

import torch

from envs.base import World, split_generator
from seqjepa.options import ConfigError


def world_id(world: World) -> str:
    """The id ``world``'s class is registered under (``seqjepa/Saccades-v0``), else its class name."""
    import envs
    return next((k for k, cls in envs.WORLDS.items() if type(world) is cls), type(world).__name__)


def unfit(agent: str, world: World, fits: str) -> ConfigError:
    """The error a policy raises on a world it does not fit: names the agent, the world and what it needs."""
    return ConfigError(f"world.agent: agent {agent!r} does not fit world {world_id(world)!r}; it needs {fits}")


def on_device(generator: torch.Generator, world: World) -> torch.Generator:
    """``generator`` if it lives on the world's device type, else one seeded from it there (as the worlds do)."""
    return generator if generator.device.type == world.device.type else split_generator(generator, world.device)
