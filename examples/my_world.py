"""A complete plug-in world: coloured shapes that translate on a 2-D canvas (see docs/plugins.md).

Train on it without touching the library::

    python run.py train --preset smoke --env examples.my_world:MyWorld-v0

Each episode is one shape (square, disc or cross: the class) in its own colour; a view shows it at a position
(x, y) in [-0.5, 0.5]^2; the action is the relative move (dx, dy) between two views.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

import envs
from envs import Factor, State, World
from seqjepa.options import opt

SHAPES = ("square", "disc", "cross")


class MyWorld(World):
    @dataclass
    class Options:
        image_size: int = opt(32, "side of the square views in pixels", ge=8, le=256)
        per_class: int = opt(20, "shapes (episodes) per class in each split", ge=1)
        split: Literal["train", "test"] = opt("train", "which episodes: train or held-out test")

    name = "example plug-in: coloured shapes translating on a canvas"
    action_doc = "relative move (dx, dy) of the shape, in canvas widths, each in [-1, 1]"

    def __init__(self, options: Options | None = None, device: str | torch.device = "cpu", **kwargs):
        # options arrive as keyword arguments (world.options.*), validated against Options
        opts = self.resolve_options(options, kwargs)
        self.options, self.device = opts, torch.device(device)
        self.num_classes = len(SHAPES)
        self.num_episodes = self.num_classes * opts.per_class
        self.image_size, self.param_dim, self.action_dim = opts.image_size, 2, 2
        self.factors = {"position": Factor(0, 2, "linear")}
        self.action_low = -torch.ones(2, device=self.device)
        self.action_high = torch.ones(2, device=self.device)
        g = torch.Generator().manual_seed(0 if opts.split == "train" else 1)   # disjoint colours per split
        self._labels = torch.arange(self.num_episodes, device=self.device) // opts.per_class
        self._colors = (torch.rand(self.num_episodes, 3, generator=g) * 0.7 + 0.3).to(self.device)

    def reset(self, n: int, generator: torch.Generator, episodes: Tensor | None = None) -> State:
        episodes = self.episodes_for(n, generator, episodes)   # random ones, or the caller's checked
        params = torch.rand(n, 2, generator=generator, device=self.device) - 0.5
        return {"episode": episodes, "label": self._labels[episodes], "params": params}

    def step(self, state: State, action: Tensor, generator: torch.Generator) -> State:
        a = self.check_action(action.to(self.device, torch.float32))   # shape, NaN and range checks
        return {**state, "params": (state["params"] + a).clamp(-0.5, 0.5)}

    def relative(self, p_from: Tensor, p_to: Tensor) -> Tensor:
        return p_to - p_from

    def sample_action(self, state: State, generator: torch.Generator) -> Tensor:
        target = torch.rand(state["params"].shape, generator=generator, device=self.device) - 0.5
        return self.relative(state["params"], target)

    def render(self, state: State) -> Tensor:
        s = self.image_size
        grid = (torch.arange(s, device=self.device) + 0.5) / s - 0.5
        y, x = torch.meshgrid(grid, grid, indexing="ij")
        dx = x - state["params"][:, 0, None, None] * 0.6     # the shape stays inside the canvas
        dy = y - state["params"][:, 1, None, None] * 0.6
        r = 0.18
        masks = torch.stack([torch.maximum(dx.abs(), dy.abs()) < r,                          # square
                             dx ** 2 + dy ** 2 < r ** 2,                                      # disc
                             (torch.minimum(dx.abs(), dy.abs()) < r / 3) & (torch.maximum(dx.abs(), dy.abs()) < r)])
        mask = masks[state["label"], torch.arange(len(state["label"]), device=self.device)]
        img = torch.where(mask[:, None], self._colors[state["episode"], :, None, None], torch.full((), 0.1))
        return (img * 255).round().to(torch.uint8)


envs.register_world("MyWorld-v0", MyWorld)
