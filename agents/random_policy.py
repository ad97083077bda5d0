"""The random policy: relative transformations drawn within the world's ranges (the paper's sampling).

>>> import torch, envs
>>> world = envs.make_world("seqjepa/RotatingObjects-v0", image_size=32)
>>> g = torch.Generator().manual_seed(0)
>>> state = world.reset(2, g)
>>> RandomPolicy()(world, state, g).shape
torch.Size([2, 4])
"""

from __future__ import annotations

import torch
from torch import Tensor

from envs.base import State, World


class RandomPolicy:
    """Delegates to ``world.sample_action``: every world defines its own random relative transformation."""

    def __call__(self, world: World, state: State, generator: torch.Generator) -> Tensor:
        return world.sample_action(state, generator)
