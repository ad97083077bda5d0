"""Scripted, deterministic trajectories for inspection and tests: a steady yaw sweep of a rotating object, a
raster scan of a scene. The generator is never read, so the same state always gives the same action.

Yaw: every action is the same rotation by ``step_deg`` about the object's own z axis (up); the action multiplies
on the right (R_new = R R(a)), so the object spins steadily about one fixed axis. Raster: the scene is cut into a
G x G grid of cells (G = round(scene_size / image_size), the glimpses tile it) and the fixation moves from the cell
it lies in to the next one in row-major order, wrapping around; fixations sit on integer pixels.

>>> import torch, envs
>>> world = envs.make_world("seqjepa/Saccades-v0", scene_size=48, image_size=16, num_classes=2, per_class=2)
>>> g = torch.Generator().manual_seed(0)
>>> state = world.reset(1, g)
>>> seen = set()
>>> for _ in range(9):
...     state = world.step(state, SweepPolicy()(world, state, g), g)
...     seen.add(tuple((state["params"][0] * 48).tolist()))
>>> sorted(seen)[:3], len(seen)
([(8.0, 8.0), (8.0, 24.0), (8.0, 40.0)], 9)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from envs.base import State, World
from envs.objects import RotatingObjects
from envs.saccades import Saccades

from .base import unfit


class SweepPolicy:
    """Yaw sweep (``step_deg`` per step) for rotating objects; raster scan for saccades."""

    def __init__(self, step_deg: float = 15.0):
        self.step_deg = step_deg

    def __call__(self, world: World, state: State, generator: torch.Generator) -> Tensor:
        if isinstance(world, Saccades):
            return raster_step(world, state["params"])
        if isinstance(world, RotatingObjects):
            return self._yaw(world, len(state["params"]))
        raise unfit("sweep", world, "a saccade or rotating-objects world")

    def _yaw(self, world: RotatingObjects, n: int) -> Tensor:
        half = math.radians(self.step_deg) / 2
        a = torch.zeros(n, world.action_dim, device=world.device)
        a[:, 2], a[:, 3] = math.sin(half), math.cos(half)  # (x, y, z, w): about z; w >= 0, already canonical
        return a


def raster_cells(world: Saccades) -> Tensor:
    """The raster's fixations in scene pixels, row-major, float [G*G, 2]."""
    s, g = world.options.scene_size, world.options.image_size
    k = max(1, round(s / g))
    centres = torch.floor((torch.arange(k, device=world.device) + 0.5) * s / k)
    rows, cols = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([rows.flatten(), cols.flatten()], 1)


def raster_step(world: Saccades, params: Tensor) -> Tensor:
    """The move from each fixation ``params`` [n, 2] to the next raster cell after the one it lies in."""
    s = world.options.scene_size
    cells = raster_cells(world)
    k = math.isqrt(len(cells))
    rc = (params * k).floor().long().clamp(0, k - 1)  # the cell each fixation lies in
    nxt = (rc[:, 0] * k + rc[:, 1] + 1) % len(cells)
    return cells[nxt] / s - params
