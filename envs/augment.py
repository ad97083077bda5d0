"""Augmentations: the paper's "augmentation as action" world (CIFAR-100 / Tiny ImageNet setting, §2.3).

An episode is one image; a view is that image under a crop, a colour jitter and a Gaussian blur whose
parameters are the state. The action moves those parameters; flip, grayscale, solarize and the jitter order
are re-drawn every view as nuisances the model is not told about (as in the paper and EquiMod).

Params (9 floats per view, each normalised *per feature* by a fixed affine map, never across views):

=========  =====================================  ==========================
index      raw value                              normalised
=========  =====================================  ==========================
0..3       crop top, left, height, width          the raw fractions of the image side (already in [0, 1])
4, 5       brightness, contrast in [0.6, 1.4]     (x - 0.6) / 0.8
6          saturation in [0.8, 1.2]               (x - 0.8) / 0.4
7          hue shift in [-0.1, 0.1] turns         (x + 0.1) / 0.2
8          blur sigma in {0} U [0.1, 2.0] px      x / 2.0
=========  =====================================  ==========================

Jitter not applied is (1, 1, 1, 0), i.e. (0.5, 0.5, 0.5, 0.5) normalised; no blur is sigma 0. The official code
L2-normalises each parameter across the views of a sequence, so its actions depend on the sequence length; here
an action is ``p_to - p_from`` on the chosen factors and does not.

>>> world = Augmentations(image_size=16, num_classes=3, per_class=4)
>>> g = torch.Generator().manual_seed(0)
>>> state = world.reset(5, g)
>>> world.render(state).shape, world.action_dim
(torch.Size([5, 3, 16, 16]), 9)
>>> state = world.step(state, world.sample_action(state, g), g)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange
from kornia.filters import filter2d_separable, get_gaussian_kernel1d
from torch import Tensor

from seqjepa.options import ConfigError, opt

from .base import Factor, State, World, prunes_work
from .images import (CIFAR100_MEAN, CIFAR100_STD, PROCEDURAL_MAX_CLASSES, TINY_IMAGENET_MEAN, TINY_IMAGENET_STD,
                     ImageSet, cifar100_images, digits_images, load_folder_split, procedural_images,
                     tiny_imagenet_images)

# Per-feature affine map raw -> normalised: (raw - LOW) / SCALE.
LOW = (0.0, 0.0, 0.0, 0.0, 0.6, 0.6, 0.8, -0.1, 0.0)
SCALE = (1.0, 1.0, 1.0, 1.0, 0.8, 0.8, 0.4, 0.2, 2.0)
GROUPS = {"crop": (0, 4), "jitter": (4, 8), "blur": (8, 9)}
HEADS = {"crop": "mlp", "jitter": "mlp", "blur": "linear"}  # the paper's probe per factor
ACTION_SETS = ("crop+jitter+blur", "crop", "jitter", "blur", "crop+jitter", "crop+blur", "jitter+blur")
CROP_SCALE, CROP_RATIO = (0.2, 1.0), (3 / 4, 4 / 3)
MIN_SIDE = math.sqrt(CROP_SCALE[0] * CROP_RATIO[0])  # the smallest crop side RandomResizedCrop can draw
SIGMA_RANGE = (0.1, 2.0)
GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


def blur_kernel_size(size: int) -> int:
    """EquiMod's kernel side for ``size`` px views: 2*round((S-10)/20)+1, at least 3 (3 at 32 px, 7 at 64)."""
    return max(3, 2 * round((size - 10) / 20) + 1)


def _gray(x: Tensor) -> Tensor:
    """[n, 3, h, w] -> [n, 1, h, w] luma (a weighted sum; einsum's bmm was slower on CPU)."""
    return GRAY[0] * x[:, 0:1] + GRAY[1] * x[:, 1:2] + GRAY[2] * x[:, 2:3]


def shift_hue(x: Tensor, turns: Tensor) -> Tensor:
    """Rotate the hue of RGB [n, 3, h, w] in [0, 1] by ``turns`` [n] (torchvision's HSV round trip, exactly).

    Saturation and value are kept, so only each pixel's max, min and hue matter; the closed-form HSV -> RGB
    (channel = v - v*s*clamp(min(k, 4-k), 0, 1), k = (n + 6h) mod 6 with n = 5, 3, 1) needs no gather.
    """
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    delta = maxc - minc
    # Hue in sextants, with torchvision's tie order (red, then green, then blue).
    h = torch.where(maxc == r, g - b, torch.where(maxc == g, 2 * delta + b - r, 4 * delta + r - g))
    h = h / torch.where(delta > 0, delta, torch.ones_like(delta))
    h6 = (h + 6 * turns[:, None, None]).remainder(6.0)
    k = (torch.tensor([5.0, 3.0, 1.0], device=x.device).view(1, 3, 1, 1) + h6[:, None]).remainder(6.0)
    return maxc[:, None] - delta[:, None] * torch.minimum(k, 4 - k).clamp(0, 1)


def _cubic(t: Tensor) -> Tensor:
    """Weights [..., 4] of taps -1, 0, 1, 2 at fraction t (Keys, A = -0.75: PyTorch's and PIL's bicubic)."""
    A, d = -0.75, torch.stack([t + 1, t, 1 - t, 2 - t], -1)
    near = ((A + 2) * d - (A + 3)) * d * d + 1
    far = ((A * d - 5 * A) * d + 8 * A) * d - 4 * A
    return torch.where(d <= 1, near, far)


def resample_matrix(start: Tensor, length: Tensor, size: int, mode: str, flip: Tensor | None = None) -> Tensor:
    """Per-view matrices [n, size, size] that resample the window [start, start + length) (fractions) of one
    axis of a ``size``-px image to ``size`` samples, taps clamped at the border (grid_sample's "border").

    >>> m = resample_matrix(torch.tensor([0.0]), torch.tensor([1.0]), 4, "bicubic")
    >>> torch.equal(m[0], torch.eye(4))
    True

    The crop is axis-aligned, so resampling is separable: two small matmuls instead of grid_sample, whose
    bicubic mode is ~10x slower on CPU.
    """
    k = torch.arange(size, device=start.device, dtype=start.dtype)
    if flip is not None:  # a flipped view reads its pixels right to left
        k = torch.where(flip[:, None], size - 1 - k, k)
    u = (start[:, None] + length[:, None] * (k + 0.5) / size) * size - 0.5  # source pixel coordinate
    i0 = u.floor()
    t = u - i0
    if mode == "bicubic":
        taps, w = i0[..., None] + torch.arange(-1, 3, device=u.device), _cubic(t)
    else:
        taps, w = i0[..., None] + torch.arange(0, 2, device=u.device), torch.stack([1 - t, t], -1)
    m = torch.zeros(len(start), size, size, device=start.device, dtype=start.dtype)
    return m.scatter_add_(2, taps.clamp(0, size - 1).long(), w)


class Augmentations(World):
    """Views of images under parameterised crop, colour jitter and blur; the action moves the parameters."""

    @dataclass
    class Options:
        source: Literal["procedural", "digits", "cifar100", "tinyimagenet", "folder"] = opt(
            "procedural", "images: procedural classes (built in), sklearn digits, CIFAR-100 (python pickles), "
                          "Tiny ImageNet (tiny-imagenet-200 folder) or a folder of class folders")
        root: str = opt("", "folder of the cifar100 / tinyimagenet / folder sources (folder: root/train and "
                            "root/test (or val), or one root/<class>/<image> tree whose every 5th image per class "
                            "is the test split)")
        image_size: int = opt(32, "side of the square views (and of the stored images) in pixels", ge=8, le=512)
        num_classes: int = opt(10, "procedural classes (shape x texture x count)", ge=2,
                               le=PROCEDURAL_MAX_CLASSES)
        per_class: int = opt(100, "procedural images per class in each split", ge=1, le=100000)
        data_seed: int = opt(0, "seed of the procedural image set")
        split: Literal["train", "test"] = opt("train", "which images: the train or the test split")
        actions: str = opt("crop+jitter+blur", "factors in the action, in this order", choices=ACTION_SETS)
        interpolation: Literal["bicubic", "bilinear"] = opt("bicubic", "crop resampling (paper: bicubic)")
        flip_p: float = opt(0.5, "probability of a horizontal flip (a nuisance)", ge=0.0, le=1.0)
        jitter_p: float = opt(0.8, "probability that colour jitter is applied", ge=0.0, le=1.0)
        grayscale_p: float = opt(0.2, "probability of grayscale (a nuisance)", ge=0.0, le=1.0)
        blur_p: float = opt(1.0, "probability that blur is applied (sigma = 0 otherwise)", ge=0.0, le=1.0)
        solarize_p: float = opt(0.0, "probability of solarize at 128 (a nuisance)", ge=0.0, le=1.0)

    RENAMED = {"image_seed": "data_seed"}
    name = "hand-crafted augmentations of images (crop, colour jitter, blur) as actions, paper §2.3"
    action_bn = "augmentations"
    action_doc = ("p_to - p_from of the normalised params [top, left, height, width | brightness, contrast, "
                  "saturation, hue | sigma] restricted to the chosen factors, each in [-1, 1]")
    param_names = ("top", "left", "height", "width", "brightness", "contrast", "saturation", "hue", "sigma")

    def __init__(self, options: Options | None = None, device: str | torch.device = "cpu", **kwargs):
        opts = self.resolve_options(options, kwargs)
        self.options, self.device = opts, torch.device(device)
        data = self._load(opts)
        if len(data) == 0:
            raise ConfigError(f"source: the {opts.split} split of {opts.source!r} has no images")
        self._fingerprint = data.fingerprint
        self._images = data.images.to(self.device)  # uint8, the whole split stays on the device
        self._labels = data.labels.to(self.device)
        self.classes = data.classes
        self.num_classes, self.num_episodes = len(data.classes), len(data)
        self.image_size, self.param_dim = opts.image_size, 9
        names = opts.actions.split("+")
        self._cols = torch.cat([torch.arange(*GROUPS[k]) for k in names]).to(self.device)
        self.factors, start = {}, 0
        for k in names:
            width = GROUPS[k][1] - GROUPS[k][0]
            self.factors[k] = Factor(start, start + width, HEADS[k])
            start += width
        self.action_dim = start
        self.action_low = -torch.ones(self.action_dim, device=self.device)
        self.action_high = torch.ones(self.action_dim, device=self.device)
        self._low = torch.tensor(LOW, device=self.device)
        self._scale = torch.tensor(SCALE, device=self.device)
        self._kernel = blur_kernel_size(opts.image_size)
        if opts.source == "cifar100":
            self.pixel_mean, self.pixel_std = CIFAR100_MEAN, CIFAR100_STD
        elif opts.source == "tinyimagenet":
            self.pixel_mean, self.pixel_std = TINY_IMAGENET_MEAN, TINY_IMAGENET_STD

    @staticmethod
    def _load(o: "Augmentations.Options") -> ImageSet:
        if o.source == "procedural":
            return procedural_images(o.num_classes, o.per_class, o.image_size, o.data_seed, o.split)
        if o.source == "digits":
            return digits_images(o.image_size, o.split)
        if not o.root:
            raise ConfigError(f"root: got ''; source={o.source!r} needs the folder holding its files")
        if o.source == "cifar100":
            return cifar100_images(o.root, o.split, o.image_size)
        if o.source == "tinyimagenet":
            return tiny_imagenet_images(o.root, o.split, o.image_size)
        return load_folder_split(o.root, o.split, o.image_size)

    def data_fingerprint(self) -> str | None:
        """The files of the cifar100 / tinyimagenet / folder sources; None for generated images."""
        return self._fingerprint

    # --- parameters -------------------------------------------------------------------------------------------
    def normalise(self, raw: Tensor) -> Tensor:
        """Raw params [..., 9] (fractions, factors, turns, px) -> the normalised params the state holds."""
        return (raw - self._low) / self._scale

    def denormalise(self, params: Tensor) -> Tensor:
        """Normalised params [..., 9] -> raw values (see the module docstring)."""
        return params * self._scale + self._low

    def _sample(self, n: int, g: torch.Generator) -> State:
        """Fresh views: RandomResizedCrop-style crop, jitter, blur and the nuisances, as in EquiMod."""
        o, dev = self.options, self.device
        u = lambda *shape: torch.rand(*shape, generator=g, device=dev)  # noqa: E731
        # RandomResizedCrop: ten (area, log-ratio) tries, keep the first that fits; else the whole image.
        area = CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * u(n, 10)
        ratio = torch.exp(math.log(CROP_RATIO[0]) + math.log(CROP_RATIO[1] / CROP_RATIO[0]) * u(n, 10))
        w, h = torch.sqrt(area * ratio), torch.sqrt(area / ratio)
        fits = (w <= 1) & (h <= 1)
        first = fits.float().argmax(1, keepdim=True)
        any_fit = fits.any(1)
        w = torch.where(any_fit, w.gather(1, first).squeeze(1), torch.ones(n, device=dev))
        h = torch.where(any_fit, h.gather(1, first).squeeze(1), torch.ones(n, device=dev))
        pos = u(n, 2)
        crop = torch.stack([pos[:, 0] * (1 - h), pos[:, 1] * (1 - w), h, w], 1)
        jit = u(n, 5)
        factors = torch.stack([0.6 + 0.8 * jit[:, 0], 0.6 + 0.8 * jit[:, 1], 0.8 + 0.4 * jit[:, 2],
                               -0.1 + 0.2 * jit[:, 3]], 1)
        identity = torch.tensor([1.0, 1.0, 1.0, 0.0], device=dev)
        factors = torch.where((jit[:, 4] < o.jitter_p)[:, None], factors, identity)
        bl = u(n, 2)
        sigma = torch.where(bl[:, 1] < o.blur_p, SIGMA_RANGE[0] + (SIGMA_RANGE[1] - SIGMA_RANGE[0]) * bl[:, 0],
                            torch.zeros(n, device=dev))
        nuis = u(n, 3)
        return {"params": self.normalise(torch.cat([crop, factors, sigma[:, None]], 1)),
                "flip": nuis[:, 0] < o.flip_p, "gray": nuis[:, 1] < o.grayscale_p,
                "solarize": nuis[:, 2] < o.solarize_p, "jitter_order": u(n, 4).argsort(1)}

    def _clip(self, p: Tensor) -> Tensor:
        """Keep params valid: crop sides in [MIN_SIDE, 1], the crop inside the image, the rest in [0, 1]."""
        hw = p[:, 2:4].clamp(MIN_SIDE, 1.0)
        tl = torch.minimum(p[:, 0:2].clamp(min=0.0), 1.0 - hw)
        return torch.cat([tl, hw, p[:, 4:].clamp(0.0, 1.0)], 1)

    # --- the World interface ----------------------------------------------------------------------------------
    def reset(self, n: int, generator: torch.Generator, episodes: Tensor | None = None) -> State:
        episodes = self.episodes_for(n, generator, episodes)
        return {"episode": episodes, "label": self._labels[episodes], **self._sample(n, generator)}

    def step(self, state: State, action: Tensor, generator: torch.Generator) -> State:
        a = self.check_action(action.to(self.device, torch.float32))
        # Factors outside the action and the nuisances get fresh values every view, as in the paper.
        fresh = self._sample(len(a), generator)
        p = fresh["params"].clone()
        p[:, self._cols] = state["params"][:, self._cols] + a
        return {**state, **fresh, "params": self._clip(p)}

    def sample_action(self, state: State, generator: torch.Generator) -> Tensor:
        return self.relative(state["params"], self._sample(len(state["params"]), generator)["params"])

    def relative(self, p_from: Tensor, p_to: Tensor) -> Tensor:
        return (p_to - p_from)[..., self._cols]

    def render(self, state: State) -> Tensor:
        raw = self.denormalise(state["params"].to(self.device, torch.float32))
        n, s = len(raw), self.image_size
        false = torch.zeros(n, dtype=torch.bool, device=self.device)
        flip, gray, sol = (state.get(k, false) for k in ("flip", "gray", "solarize"))
        x = self._images[state["episode"]].float() / 255
        top, left, h, w = raw[:, :4].unbind(1)
        rows = resample_matrix(top, h, s, self.options.interpolation)
        cols = resample_matrix(left, w, s, self.options.interpolation, flip)
        # Crop + resize + flip: columns on the (c h) x w view, then rows (one bmm each, no broadcast copies).
        x = rearrange(rearrange(x, "n c h w -> n (c h) w") @ cols.transpose(1, 2), "n (c h) w -> n c h w", c=3)
        x = (rows[:, None] @ x).clamp(0, 1)
        x = self._jitter(x, raw[:, 4:8], state.get("jitter_order"))
        # Steps whose probability is 0 are skipped (a pass over the batch each); blur only when no view can
        # carry a sigma (blur_p = 0 and blur not in the action).
        o = self.options
        if o.grayscale_p > 0:
            x = torch.where(gray[:, None, None, None], _gray(x).expand(-1, 3, -1, -1), x)
        if o.blur_p > 0 or "blur" in self.factors:
            # A tiny sigma gives the exact unit-impulse kernel, i.e. the identity. kornia's gaussian_blur2d itself
            # reads sigma on the host to check it (a sync per call); its kernel and separable filter do not.
            k = get_gaussian_kernel1d(self._kernel, raw[:, 8:9].clamp(min=1e-3))
            x = filter2d_separable(x, k, k, "reflect")
        if o.solarize_p > 0:
            x = torch.where(sol[:, None, None, None] & (x >= 128 / 255), 1 - x, x)
        return (x * 255).round().clamp(0, 255).to(torch.uint8)

    def clean_views(self, episodes: Tensor) -> Tensor:
        """The images themselves (no crop, jitter, blur or nuisance), uint8 [n, 3, S, S]."""
        return self._images[episodes.to(self.device)]

    def _jitter(self, x: Tensor, f: Tensor, order: Tensor | None) -> Tensor:
        """torchvision ColorJitter with per-view factors [n, 4] applied in each view's own random order.

        Brightness, contrast and saturation are all blends ``a*x + (1-a)*ref`` (ref = 0, the mean grey, the grey
        image), so each of the 4 order slots is one fused blend for every view (an identity factor is exact:
        lerp with weight 1 returns x). Only the hue goes through an index, and views with no hue shift skip
        its HSV round trip (exact, and cheaper).
        """
        n = len(x)
        if order is None:
            order = torch.arange(4, device=x.device).expand(n, 4)
        for slot in range(4):
            op = order[:, slot]
            k = f.gather(1, op[:, None]).squeeze(1)
            gray = _gray(x)
            ref = torch.where((op == 1)[:, None, None, None], gray.mean((1, 2, 3), True), gray)
            ref = ref * (op != 0)[:, None, None, None]
            a = torch.where(op == 3, torch.ones_like(k), k)[:, None, None, None]
            x = torch.lerp(ref, x, a).clamp_(0, 1)  # a*x + (1-a)*ref in one pass
            shift = (op == 3) & (k.abs() > 1e-6)
            if not prunes_work(x.device):  # fixed size on a GPU: every view through the HSV round trip, no sync
                x = torch.where(shift[:, None, None, None], shift_hue(x, torch.where(shift, k, 0.0)), x)
                continue
            idx = shift.nonzero().squeeze(1)
            if len(idx):
                x = x.index_put((idx,), shift_hue(x[idx], k[idx]))
        return x
