"""Saccades: a full image explored through foveal glimpses, the paper's PLS setting (§2.4), live on the device.

The observer fixates a pixel of a ``scene_size`` image and sees an ``image_size``-pixel glimpse centred on it. The
absolute parameters are the fixation ``(row, col) / scene_size`` in [0, 1); an action is the relative move
``(d row, d col)`` in the same units, so ``relative`` is a plain difference and induces 2-d position equivariance.
The random policy is the paper's: the next fixation is drawn from ``saliency * (1 - inhibition)``, where
inhibition of return (IoR) blocks a disc of radius 16 around every earlier fixation.

Deliberately unlike the official code (see docs of ``render`` and the tests): the glimpse is centred on (row, col),
not on the transposed point; IoR is a circle (the square box is ``ior="square"``); IoR also applies to uniform
fixations unless ``ior="none"``; and ``scene_size`` / ``image_size`` are honoured for every source.

>>> world = Saccades(num_classes=3, per_class=2, scene_size=48, image_size=16)
>>> g = torch.Generator().manual_seed(0)
>>> state = world.reset(4, g)
>>> world.render(state).shape
torch.Size([4, 3, 16, 16])
>>> action = world.sample_action(state, g)
>>> new = world.step(state, action, g)
>>> torch.allclose(world.relative(state["params"], new["params"]), action)
True
>>> world.render_frame(new).shape
torch.Size([4, 3, 48, 48])
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from seqjepa.options import ConfigError, DataError, opt

from .base import Factor, State, World, fingerprint_files, split_generator
from .saliency import classical_saliency, inhibit, object_saliency, sample_fixations, to_probability
from .scenes import MAX_CLASSES, class_object_places, cluttered_scenes

PATH_LEN = 16  # fixations remembered for render_frame
LINE, DOT, CURRENT = (255, 220, 0), (255, 40, 40), (40, 255, 40)


class Saccades(World):
    """Foveal glimpses of procedural cluttered scenes, STL-10 or an image folder, with saliency-driven saccades."""

    @dataclass
    class Options:
        source: Literal["scenes", "stl10", "folder"] = opt(
            "scenes", "scenes: procedural cluttered scenes (no download); stl10: the STL-10 binary release under "
                      "root; folder: an image folder under root (class sub-folders)")
        root: str = opt("", "stl10: the stl10_binary folder; folder: root/train, root/test (or val), "
                            "root/unlabeled, or one root/<class>/<image> tree whose every 5th image per class is "
                            "the test split")
        split: Literal["train", "test", "unlabeled"] = opt(
            "train", "which images; unlabeled = STL-10's 100k pre-training images (labels -1), or a third "
                     "disjoint set of procedural scenes")
        scene_size: int = opt(96, "side of the full scene in pixels (images are resized to it)", ge=16, le=1024)
        image_size: int = opt(32, "side of the foveal glimpse, the view the model sees, in pixels", ge=4, le=1024)
        num_classes: int = opt(10, "scenes: number of classes", ge=2, le=MAX_CLASSES)
        per_class: int = opt(100, "scenes: scenes per class in each split", ge=1, le=100000)
        data_seed: int = opt(0, "scenes: seed of the procedural scenes (splits are disjoint for any seed)")
        class_colours: bool = opt(False, "scenes: each class's object has its own hue, as natural categories have "
                                         "typical colours (off: only shape and texture name the class)")
        max_images: int = opt(0, "stl10/folder: use only the first N images (0 = all)", ge=0)
        fixations: Literal["saliency", "uniform"] = opt(
            "saliency", "how the random policy picks fixations: from the saliency map, or uniformly")
        saliency: Literal["contrast", "spectral", "object"] = opt(
            "contrast", "saliency computed when saliency_maps is empty: centre-surround contrast or spectral "
                        "residual (classical, bottom-up); object (scenes only): a Gaussian on the class object, "
                        "as people (and DeepGaze, which models them) fixate objects more than clutter")
        saliency_maps: str = opt("", "a .npy of precomputed maps (N, 1, H, W), e.g. the paper's DeepGaze "
                                     "saliency_{split}.npy; '{split}' is replaced by the split")
        ior: Literal["circle", "square", "none"] = opt(
            "circle", "inhibition of return: a disc (paper), a square box (official code), or none")
        ior_radius: float = opt(16.0, "IoR radius in scene pixels", ge=0.0)
        inside: bool = opt(False, "the random policy fixates only where the whole glimpse lies inside the scene "
                                  "(off, as in the paper: glimpses near the edge show black padding)")

    RENAMED = {"glimpse": "image_size", "seed": "data_seed"}
    name = "saccades: foveal glimpses of a scene chosen by saliency and inhibition of return (PLS, paper 2.4)"
    action_bn = "saccades"
    action_doc = ("relative fixation move (d row, d col) in fractions of the scene side, in [-1, 1]; the new "
                  "fixation is clipped into the scene")
    param_names = ("row", "col")

    def __init__(self, options: Options | None = None, device: str | torch.device = "cpu", **kwargs):
        opts = self.resolve_options(options, kwargs)
        if opts.image_size > opts.scene_size:
            raise ConfigError(f"image_size: got {opts.image_size}; allowed: <= scene_size ({opts.scene_size})")
        if opts.source != "scenes" and not opts.root:
            raise ConfigError(f"root: got ''; source={opts.source!r} needs root, the folder holding the images")
        if opts.source != "scenes" and opts.saliency == "object":
            raise ConfigError(f"saliency: got 'object' with source={opts.source!r}; allowed: 'contrast' or "
                              f"'spectral' (object needs the procedural scenes, whose objects' places are known)")
        self.options, self.device = opts, torch.device(device)
        self._fingerprints: list[str] = []  # of the files read: images (stl10, folder), saliency maps
        if opts.source == "scenes":
            self.images, self.labels, self.saliency, self._object_centres = _scene_data(
                opts.num_classes, opts.per_class, opts.scene_size, opts.data_seed, opts.split, opts.class_colours,
                opts.saliency if opts.fixations == "saliency" and not opts.saliency_maps else "", str(self.device))
            self.num_classes = opts.num_classes
        else:
            self._object_centres = None  # an image's objects' places are unknown
            images, labels, self.num_classes, fingerprint = _load_images(opts)
            self._fingerprints.append(fingerprint)
            self.images, self.labels = images.to(self.device), labels.to(self.device)
            self.saliency = None
            if opts.fixations == "saliency" and not opts.saliency_maps:
                self.saliency = classical_saliency(self.images, opts.saliency)
        if opts.fixations == "saliency" and opts.saliency_maps:
            self._fingerprints.append(fingerprint_files([_maps_path(opts)]))  # before reading, as for images
            self.saliency = _load_maps(opts, len(self.images)).to(self.device)
        self.num_episodes = len(self.images)
        self.image_size = opts.image_size
        if opts.source == "stl10":
            from .stl10 import STL10_MEAN, STL10_STD
            self.pixel_mean, self.pixel_std = STL10_MEAN, STL10_STD
        self.param_dim = self.action_dim = 2
        self.factors = {"position": Factor(0, 2, "linear")}
        self.action_low = -torch.ones(2, device=self.device)
        self.action_high = torch.ones(2, device=self.device)
        g = opts.image_size
        self._offsets = torch.arange(g, device=self.device, dtype=torch.float32) - g // 2
        # Fixations whose glimpse (fixation - g//2 .. fixation + g-1 - g//2) stays inside the scene.
        span = torch.arange(opts.scene_size, device=self.device)
        ok = (span >= g // 2) & (span <= opts.scene_size - g + g // 2)
        self._region = (ok[:, None] & ok[None, :]) if opts.inside else None
        self._channels = torch.arange(3, device=self.device)

    def data_fingerprint(self) -> str | None:
        """The image files (stl10, folder) and saliency maps read; None for procedural scenes with computed maps."""
        return "+".join(self._fingerprints) or None

    # --- episodes and fixations ------------------------------------------------------------------------------
    def _gen(self, generator: torch.Generator) -> torch.Generator:
        """The caller's generator if it lives on our device, else one seeded from it there."""
        return generator if generator.device.type == self.device.type else split_generator(generator, self.device)

    def _draw(self, episodes: Tensor, inhibition: Tensor | None, g: torch.Generator) -> Tensor:
        """Next fixations in scene pixels, float [n, 2], from saliency (or uniform) times (1 - inhibition)."""
        s = self.options.scene_size
        weights = (self.saliency[episodes] if self.saliency is not None
                   else torch.ones(len(episodes), s, s, device=self.device))
        if self._region is not None:  # outside the region counts as inhibited, and has no saliency to fall back on
            weights = weights * self._region
            inhibition = ~self._region if inhibition is None else inhibition | ~self._region
            inhibition = inhibition.expand(len(episodes), s, s)
        row, col = sample_fixations(weights, inhibition, g)
        return torch.stack([row, col], 1).float()

    def _inhibit(self, mask: Tensor, pix: Tensor) -> Tensor:
        o = self.options
        return inhibit(mask, pix[:, 0], pix[:, 1], o.ior_radius, o.ior)

    def reset(self, n: int, generator: torch.Generator, episodes: Tensor | None = None) -> State:
        g, s = self._gen(generator), self.options.scene_size
        episodes = self.episodes_for(n, g, episodes)
        pix = self._draw(episodes, None, g)
        params = pix / s
        path = torch.full((n, PATH_LEN, 2), -1.0, device=self.device)
        path[:, -1] = params
        return {"episode": episodes, "label": self.labels[episodes], "params": params,
                "inhibition": self._inhibit(torch.zeros(n, s, s, dtype=torch.bool, device=self.device), pix),
                "path": path}

    def step(self, state: State, action: Tensor, generator: torch.Generator) -> State:
        s = self.options.scene_size
        a = self.check_action(action.to(self.device, torch.float32))
        pix = (state["params"] + a) * s
        # Moves computed as differences of pixel-grid fixations lose a few ulps; snapping back keeps such
        # glimpses exact copies of the scene instead of bilinear blends.
        pix = torch.where((pix - pix.round()).abs() < 1e-3, pix.round(), pix).clamp(0, s - 1)
        inh = state["inhibition"]
        exhausted = rearrange(inh, "n h w -> n (h w)").all(1)   # IoR covered the scene: start a fresh memory
        inh = self._inhibit(inh & ~exhausted[:, None, None], pix)
        params = pix / s
        path = torch.cat([state["path"][:, 1:], params[:, None]], 1)
        return {**state, "params": params, "inhibition": inh, "path": path}

    def sample_action(self, state: State, generator: torch.Generator) -> Tensor:
        inh = state["inhibition"] if self.options.ior != "none" else None
        target = self._draw(state["episode"], inh, self._gen(generator)) / self.options.scene_size
        return target - state["params"]

    def relative(self, p_from: Tensor, p_to: Tensor) -> Tensor:
        return p_to - p_from

    # --- rendering ------------------------------------------------------------------------------------------
    def render(self, state: State) -> Tensor:
        """Glimpses uint8 [n, 3, g, g] by one bilinear ``grid_sample``; pixel (g//2, g//2) is the fixation.

        Sample points sit on the scene's pixel grid around the fixation (offsets -g//2 .. g - 1 - g//2), so an
        integer fixation gives an exact copy of scene pixels; outside the scene is zero (black), as in the paper.
        Only the (g+1)-pixel window that bilinear sampling can touch is gathered and converted to float, which
        is 10x faster than sampling from whole scenes and gives the same values.
        """
        s, g = self.options.scene_size, self.options.image_size
        pix = state["params"] * s
        top = pix.floor() - g // 2                                            # [n, 2] window corner
        idx = top.long()[:, :, None] + torch.arange(g + 1, device=self.device)  # [n, 2, g+1] scene rows, cols
        inside = (idx >= 0) & (idx < s)
        rows, cols = idx.clamp(0, s - 1).unbind(1)
        plane = state["episode"][:, None] * 3 + self._channels                  # [n, 3] image planes
        flat = (plane[:, :, None, None] * s + rows[:, None, :, None]) * s + cols[:, None, None, :]
        keep = inside[:, 0, None, :, None] & inside[:, 1, None, None, :]
        window = torch.take(self.images, flat).float() * keep                   # zero padding outside the scene
        # align_corners=False: window pixel i has normalised coordinate (2i + 1) / (g + 1) - 1; grid is (x, y).
        local = (2 * ((pix - top)[:, :, None] + self._offsets) + 1) / (g + 1) - 1  # [n, 2, g]
        grid = torch.stack([local[:, None, 1, :].expand(-1, g, -1), local[:, 0, :, None].expand(-1, -1, g)], -1)
        out = F.grid_sample(window, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.round_().clamp_(0, 255).to(torch.uint8)

    def clean_views(self, episodes: Tensor) -> Tensor | None:
        """The glimpse fixating each procedural scene's class object, uint8 [n, 3, g, g]; None for image sources,
        whose objects' places are unknown.

        A saliency-drawn first glimpse often lands on clutter, which shows no class; this view tells an encoder
        that does not know the class from one that was not shown it.
        """
        if self._object_centres is None:
            return None
        s, episodes = self.options.scene_size, episodes.to(self.device)
        pix = (self._object_centres[episodes] * s).floor()  # the pixel holding the centre: on the pixel grid
        return self.render({"episode": episodes, "params": pix / s})

    def render_frame(self, state: State) -> Tensor:
        """The whole scene with the fixation path (yellow lines, red dots), the current glimpse box and fixation
        (green), uint8 [n, 3, S, S]."""
        s, g = self.options.scene_size, self.options.image_size
        frame = rearrange(self.images[state["episode"]], "n c h w -> n (h w) c").clone()
        path, valid = state["path"] * s, state["path"][..., 0] >= 0
        lo = state["params"] * s - g // 2
        hi = lo + g - 1
        corners = torch.stack([lo, torch.stack([lo[:, 0], hi[:, 1]], 1), hi, torch.stack([hi[:, 0], lo[:, 1]], 1)], 1)
        layers = [  # (points [n, A, B, 2], which of the A items exist [n, A] or None, colour)
            (_segments(path[:, :-1], path[:, 1:], 2 * s), valid[:, :-1] & valid[:, 1:], LINE),
            (_segments(corners, corners.roll(-1, 1), 2 * g), None, CURRENT),
            (path[:, :, None] + _square_offsets(1, self.device), valid, DOT),
            ((state["params"] * s)[:, None, None] + _square_offsets(2, self.device), None, CURRENT),
        ]
        for pts, ok, colour in layers:
            if ok is not None:
                ok = rearrange(ok[:, :, None].expand(-1, -1, pts.shape[2]), "n a b -> n (a b)")
            _paint(frame, rearrange(pts, "n a b k -> n (a b) k"), ok, colour, s)
        return rearrange(frame, "n (h w) c -> n c h w", h=s)


def _square_offsets(radius: int, device: torch.device) -> Tensor:
    """[1, 1, (2r+1)^2, 2] pixel offsets of a filled square (a dot)."""
    t = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    return torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(1, 1, -1, 2)


def _segments(a: Tensor, b: Tensor, steps: int) -> Tensor:
    """Points along segments a -> b ([n, L, 2] each): [n, L, steps, 2]."""
    t = torch.linspace(0, 1, steps, device=a.device)[None, None, :, None]
    return a[:, :, None] + (b - a)[:, :, None] * t


def _paint(frame: Tensor, pts: Tensor, ok: Tensor | None, colour: tuple[int, int, int], size: int) -> None:
    """Set pixels ``pts`` [n, P, 2] (where ``ok``, inside the image) of ``frame`` [n, H*W, 3] to ``colour``."""
    rc = pts.round().long()
    inside = ((rc >= 0) & (rc < size)).all(-1)
    ok = inside if ok is None else ok & inside
    batch = torch.arange(len(frame), device=frame.device)[:, None].expand_as(ok)
    flat = rc[..., 0] * size + rc[..., 1]
    frame[batch[ok], flat[ok]] = torch.tensor(colour, dtype=frame.dtype, device=frame.device)


@lru_cache(maxsize=4)
def _scene_data(num_classes: int, per_class: int, size: int, seed: int, split: str, class_colours: bool,
                saliency: str, device: str) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """Procedural scenes, labels, saliency (classical or on the class objects; None for "") and the class
    objects' centres, on ``device``; cached: worlds are rebuilt often (every gym.make, every split) and the maps
    are the costly part."""
    images, labels = cluttered_scenes(num_classes, per_class, size, seed, split, class_colours)
    centres, radii = (t.to(device) for t in class_object_places(num_classes, per_class, size, seed, split,
                                                                class_colours))
    images, labels = images.to(device), labels.to(device)
    if saliency == "object":
        maps = object_saliency(centres, radii, size)
    else:
        maps = classical_saliency(images, saliency) if saliency else None
    return images, labels, maps, centres


def _resize(images: Tensor, size: int, chunk: int = 1024) -> Tensor:
    """uint8 [N, 3, H, W] -> uint8 [N, 3, size, size], antialiased bilinear, in chunks to bound memory."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = [F.interpolate(images[i:i + chunk].float(), size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
           for i in range(0, len(images), chunk)]
    return torch.cat(out)


def _load_images(opts: Saccades.Options) -> tuple[Tensor, Tensor, int, str]:
    """(images uint8 [N, 3, S, S], labels long [N], number of classes, fingerprint of the files) of an STL-10 or
    folder source; a folder is split by the rule every folder source shares (envs.images.load_folder_split)."""
    limit = opts.max_images or None
    if opts.source == "stl10":
        from .stl10 import load_stl10
        root = Path(os.path.expanduser(opts.root))
        fingerprint = fingerprint_files([root / f"{opts.split}_X.bin", root / f"{opts.split}_y.bin"])
        images, labels = load_stl10(opts.root, opts.split, limit)
        return _resize(images, opts.scene_size), labels, 10, fingerprint
    from .images import load_folder_split  # a sibling module, imported only when this source is used
    data = load_folder_split(opts.root, opts.split, opts.scene_size)
    images, labels = data.images[:limit], data.labels[:limit]
    return _resize(images, opts.scene_size), labels, max(len(data.classes), 1), data.fingerprint


def _maps_path(opts: Saccades.Options) -> str:
    return os.path.expanduser(opts.saliency_maps.replace("{split}", opts.split))


def _load_maps(opts: Saccades.Options, count: int) -> Tensor:
    """Precomputed saliency maps for the first ``count`` images, resized to the scene and renormalised."""
    from .stl10 import load_saliency_maps
    path = _maps_path(opts)
    maps = load_saliency_maps(path, expected=None if opts.max_images else count, limit=count)
    if len(maps) < count:
        raise DataError(f"saliency maps: {path} holds {len(maps)} maps for {count} images; expected one per image")
    if maps.shape[-1] != opts.scene_size or maps.shape[-2] != opts.scene_size:
        maps = F.interpolate(maps[:, None], size=(opts.scene_size,) * 2, mode="bilinear", align_corners=False)[:, 0]
    return to_probability(maps)
