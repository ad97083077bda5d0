"""Procedural cluttered scenes with class labels, for the saccade world (no download).

Each scene is a smooth, faintly textured background, a handful of distractors (random forms, flat or textured)
and one class-defining object. The class fixes the object's *shape* and its *texture*; its place, scale, small
rotation and colours vary per instance. Distractors draw on the same shape family and textures, so neither cue
alone names the class, and the object spans roughly 30-55% of the scene's side: a 32-px glimpse of a 96-px scene
sees only part of it, while glimpses of clutter carry no class information. Several glimpses are needed.

Everything is drawn on the CPU from one seeded generator, so a (seed, split) pair always gives the same scenes on
every machine; the ``train``, ``test`` and ``unlabeled`` splits are different instances of the same classes.

>>> images, labels = cluttered_scenes(num_classes=4, per_class=2, size=64, seed=0, split="train")
>>> images.shape, images.dtype, labels.tolist()
(torch.Size([8, 3, 64, 64]), torch.uint8, [0, 1, 2, 3, 0, 1, 2, 3])
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from seqjepa.options import ConfigError

from .sdf_render import hsv_to_rgb

__all__ = ["cluttered_scenes", "class_object_places", "class_design", "SHAPE_NAMES", "TEXTURE_NAMES", "MAX_CLASSES"]

PI = math.pi
SPLITS = {"train": 0, "test": 1, "unlabeled": 2}

# One parametric family covers every shape, so a batch of mixed shapes is drawn in a single pass:
# inside = superellipse_norm(x/ax, y/ay; p) < (1 + amp cos(lobes phi)) / (1 + amp), and >= hole.
SHAPE_NAMES = ("disc", "square", "diamond", "ring", "star", "bar", "astroid", "frame", "triangle", "flower")
SHAPES = torch.tensor([
    # p     ax    ay    amp   lobes hole
    [2.0, 1.00, 1.00, 0.00, 0.0, 0.00],
    [8.0, 0.85, 0.85, 0.00, 0.0, 0.00],
    [1.0, 1.00, 1.00, 0.00, 0.0, 0.00],
    [2.0, 1.00, 1.00, 0.00, 0.0, 0.55],
    [2.0, 1.00, 1.00, 0.45, 5.0, 0.00],
    [2.0, 1.00, 0.42, 0.00, 0.0, 0.00],
    [0.7, 1.00, 1.00, 0.00, 0.0, 0.00],
    [8.0, 0.85, 0.85, 0.00, 0.0, 0.62],
    [2.0, 1.00, 1.00, 0.30, 3.0, 0.00],
    [2.0, 1.00, 1.00, 0.22, 8.0, 0.00],
])
# Likewise every texture: on = w . [sin 2pi f u, sin 2pi f v, sin*sin, cos 2pi f r] > threshold, with (u, v) the
# object-centred coordinates (in object radii) turned by ``angle`` in the *scene* frame, so orientation is a cue.
TEXTURE_NAMES = ("stripes", "diagonal", "checker", "dots", "rings", "fine")
TEXTURES = torch.tensor([
    # w_u  w_v  w_uv w_r  angle    periods/radius  threshold
    [1.0, 0.0, 0.0, 0.0, 0.0, 2.2, 0.0],
    [1.0, 0.0, 0.0, 0.0, PI / 4, 2.2, 0.0],
    [0.0, 0.0, 1.0, 0.0, 0.0, 1.8, 0.0],
    [0.0, 0.0, 1.0, 0.0, PI / 4, 2.0, 0.45],
    [0.0, 0.0, 0.0, 1.0, 0.0, 2.2, 0.0],
    [1.0, 0.0, 0.0, 0.0, PI / 2, 4.5, 0.0],
])
FLAT = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 1.0, -1.0])  # never above threshold -1: one colour
MAX_CLASSES = len(SHAPES) * len(TEXTURES)
DISTRACTORS, OCCLUDERS = 6, 1  # drawn below / above the class object
CLASS_RADIUS = (0.15, 0.28)    # object radii, in fractions of the scene side
DISTRACTOR_RADIUS = (0.04, 0.13)
CHUNK = 64                     # scenes drawn at once (small tensors stay in the allocator's cache); fixes noise


def class_design(c: int) -> tuple[int, int]:
    """(shape, texture) indices of class ``c``: distinct for every c < MAX_CLASSES, all shapes used first."""
    ks, kt = len(SHAPES), len(TEXTURES)
    return c % ks, (c % ks + c // ks) % kt


def cluttered_scenes(num_classes: int = 10, per_class: int = 100, size: int = 96, seed: int = 0,
                     split: str = "train", class_colours: bool = False) -> tuple[Tensor, Tensor]:
    """``num_classes * per_class`` scenes, uint8 [N, 3, size, size], and their labels, long [N] (class-cyclic).

    ``class_colours`` gives each class its own hue for its object (within +-0.04 turn), as natural categories
    have typical colours; otherwise colours are random and only shape and texture name the class. The scenes are
    otherwise the same (the same random draws).

    Cached per arguments (the tensors are shared: do not modify them in place).

    >>> a, _ = cluttered_scenes(3, 1, 32, seed=1, split="test")
    >>> b, _ = cluttered_scenes(3, 1, 32, seed=1, split="train")
    >>> bool((a != b).any())
    True
    """
    _check(num_classes, per_class, size, split)
    with _one_thread():
        return _scenes(num_classes, per_class, size, seed, split, class_colours)[:2]


def class_object_places(num_classes: int = 10, per_class: int = 100, size: int = 96, seed: int = 0,
                        split: str = "train", class_colours: bool = False) -> tuple[Tensor, Tensor]:
    """Centre (row, col) float [N, 2] and radius float [N] of each scene's class object, in fractions of the
    side: where an observer must look to see the class. The same for either ``class_colours``, which only picks
    the cached draw to read them from (that of the scenes in use).

    >>> centres, radii = class_object_places(3, 1, 32, seed=1)
    >>> centres.shape, bool(((radii >= 0.15) & (radii <= 0.28)).all())
    (torch.Size([3, 2]), True)
    """
    _check(num_classes, per_class, size, split)
    with _one_thread():
        return _scenes(num_classes, per_class, size, seed, split, class_colours)[2:]


def _check(num_classes: int, per_class: int, size: int, split: str) -> None:
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ConfigError(f"num_classes: got {num_classes}; allowed: 1..{MAX_CLASSES} (shape x texture pairs)")
    if per_class < 1 or size < 8:
        raise ConfigError(f"per_class, size: got {per_class}, {size}; allowed: per_class >= 1, size >= 8")
    if split not in SPLITS:
        raise ConfigError(f"split: got {split!r}; allowed: one of {', '.join(map(repr, SPLITS))}")


@contextmanager
def _one_thread():
    """Scene drawing is many small CPU ops, for which more threads cost more than they save (4x slower on two
    busy cores); the caller's thread count is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@lru_cache(maxsize=8)
def _scenes(num_classes: int, per_class: int, size: int, seed: int, split: str, class_colours: bool
            ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed * 7 + SPLITS[split] + 0x5EED)
    n = num_classes * per_class
    labels = torch.arange(n) % num_classes
    design = torch.tensor([class_design(c) for c in range(num_classes)])[labels]
    obj = _class_objects(design, g, labels / num_classes if class_colours else None)
    dis = [_distractors(n, g) for _ in range(DISTRACTORS + OCCLUDERS)]
    bg = _backgrounds(n, g)
    pad = _window(CLASS_RADIUS[1], size)  # margin so that every object window lies inside the padded canvas
    out = torch.empty(n, 3, size, size, dtype=torch.uint8)
    buffer = torch.empty(min(n, CHUNK), 3, size + 2 * pad, size + 2 * pad)  # reused: big fresh tensors page-fault
    for s in range(0, n, CHUNK):
        sl = slice(s, min(s + CHUNK, n))
        canvas = buffer[:sl.stop - s]
        canvas[:, :, pad:pad + size, pad:pad + size] = _draw_background({k: v[sl] for k, v in bg.items()}, size)
        for i, d in enumerate(dis):
            if i == DISTRACTORS:
                canvas = _draw(canvas, {k: v[sl] for k, v in obj.items()}, size, pad, CLASS_RADIUS[1])
            canvas = _draw(canvas, {k: v[sl] for k, v in d.items()}, size, pad, DISTRACTOR_RADIUS[1])
        canvas = canvas[:, :, pad:pad + size, pad:pad + size]
        noise = 0.025 * torch.randn(canvas.shape, generator=g)
        out[sl] = ((canvas + noise).clamp(0, 1) * 255).round().to(torch.uint8)
    return out, labels, obj["centre"], obj["radius"]


def _u(g: torch.Generator, *shape: int, lo: float = 0.0, hi: float = 1.0) -> Tensor:
    return lo + (hi - lo) * torch.rand(*shape, generator=g)


def _colours(n: int, g: torch.Generator, hue: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Two contrasting colours per item: a saturated light one and a darker one of another hue; ``hue`` [n]
    sets the light one's hue to within +-0.04 turn (the draws are the same either way)."""
    h = _u(g, n)
    if hue is not None:
        h = hue + 0.08 * (h - 0.5)
    a = hsv_to_rgb(h, _u(g, n, lo=0.5, hi=0.95), _u(g, n, lo=0.75, hi=1.0))
    b = hsv_to_rgb(h + _u(g, n, lo=0.25, hi=0.75), _u(g, n, lo=0.3, hi=0.9), _u(g, n, lo=0.1, hi=0.45))
    return a, b


def _class_objects(design: Tensor, g: torch.Generator, hue: Tensor | None = None) -> dict[str, Tensor]:
    """Per-scene parameters of the class object, in fractions of the scene side."""
    n = len(design)
    radius = _u(g, n, lo=CLASS_RADIUS[0], hi=CLASS_RADIUS[1])
    centre = radius[:, None] * 0.8 + _u(g, n, 2) * (1 - 1.6 * radius[:, None])  # mostly inside the scene
    tex = TEXTURES[design[:, 1]].clone()
    tex[:, 4] += _u(g, n, lo=-0.2, hi=0.2)   # texture orientation jitter, small next to the 45-degree gaps
    tex[:, 5] *= _u(g, n, lo=0.8, hi=1.25)
    a, b = _colours(n, g, hue)
    # Rotation stays small: a square turned by 45 degrees would be the diamond class.
    return {"centre": centre, "radius": radius, "rot": _u(g, n, lo=-0.25, hi=0.25), "shape": SHAPES[design[:, 0]],
            "tex": tex, "a": a, "b": b}


def _distractors(n: int, g: torch.Generator) -> dict[str, Tensor]:
    """One random distractor per scene: a random member of the shape family, flat or randomly textured."""
    radius = _u(g, n, lo=DISTRACTOR_RADIUS[0], hi=DISTRACTOR_RADIUS[1])
    shape = torch.stack([_u(g, n, lo=0.8, hi=6.0), _u(g, n, lo=0.5, hi=1.0), _u(g, n, lo=0.5, hi=1.0),
                         _u(g, n, hi=0.4) * (torch.rand(n, generator=g) < 0.4),
                         torch.randint(2, 8, (n,), generator=g).float(),
                         _u(g, n, lo=0.3, hi=0.6) * (torch.rand(n, generator=g) < 0.15)], 1)
    weights = F.one_hot(torch.randint(0, 4, (n,), generator=g), 4).float()
    tex = torch.cat([weights, _u(g, n, 1, hi=PI), _u(g, n, 1, lo=1.5, hi=5.0), _u(g, n, 1, lo=-0.3, hi=0.5)], 1)
    tex = torch.where(torch.rand(n, 1, generator=g) < 0.5, tex, FLAT)
    a, b = _colours(n, g)
    return {"centre": _u(g, n, 2), "radius": radius, "rot": _u(g, n, hi=2 * PI), "shape": shape, "tex": tex,
            "a": a, "b": b}


def _backgrounds(n: int, g: torch.Generator) -> dict[str, Tensor]:
    """Muted colour fields: a grey level plus gentle colour variation, and a faint random texture."""
    grey = _u(g, n, 1, 1, 1, lo=0.25, hi=0.55)
    weights = F.one_hot(torch.randint(0, 4, (n,), generator=g), 4).float()
    tex = torch.cat([weights, _u(g, n, 1, hi=PI), _u(g, n, 1, lo=4.0, hi=12.0), torch.zeros(n, 1)], 1)
    return {"blobs": grey + _u(g, n, 3, 5, 5, lo=-0.15, hi=0.15), "tex": tex}


def _window(max_radius: float, size: int) -> int:
    """Side in pixels of a square window that holds an object of ``max_radius`` (fraction of the side)."""
    return math.ceil(2 * max_radius * size) + 2


def _grid(size: int) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates in fractions of the side, [1, size, 1] and [1, 1, size]."""
    t = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    return t[None, :, None], t[None, None, :]


def _texture(x: Tensor, y: Tensor, tex: Tensor) -> Tensor:
    """Boolean pattern of the parametric texture family at coordinates (x, y), broadcast to [B, H, W]."""
    w, angle, freq, thr = (tex[:, i, None, None] for i in (slice(0, 4), 4, 5, 6))
    c, s = angle.cos(), angle.sin()
    u, v = x * c + y * s, -x * s + y * c
    su, sv = torch.sin(2 * PI * freq * u), torch.sin(2 * PI * freq * v)
    r = torch.sqrt(x * x + y * y)
    val = w[:, 0] * su + w[:, 1] * sv + w[:, 2] * su * sv + w[:, 3] * torch.cos(2 * PI * freq * r)
    return val > thr


def _draw(canvas: Tensor, p: dict[str, Tensor], size: int, pad: int, max_radius: float) -> Tensor:
    """Paint one object per scene onto the padded ``canvas`` [B, 3, size + 2 pad, size + 2 pad] (in place).

    Only a window around each object is evaluated (gather, paint, scatter back): a distractor covers a few
    percent of the scene, and full-frame evaluation made scene generation ten times slower.
    """
    b, w, side = canvas.shape[0], _window(max_radius, size), canvas.shape[-1]
    top = (p["centre"] * size).floor().long() - w // 2                      # [B, 2] window corner, scene pixels
    idx = torch.arange(w)
    rows, cols = top[:, 0, None] + idx, top[:, 1, None] + idx               # [B, w] scene pixel indices
    yy, xx = ((rows + 0.5) / size)[:, :, None], ((cols + 0.5) / size)[:, None, :]
    cy, cx, r = p["centre"][:, 0, None, None], p["centre"][:, 1, None, None], p["radius"][:, None, None]
    dy, dx = (yy - cy) / r, (xx - cx) / r
    c, s = p["rot"].cos()[:, None, None], p["rot"].sin()[:, None, None]
    lx, ly = dx * c + dy * s, -dx * s + dy * c
    pw, ax, ay, amp, lobes, hole = (p["shape"][:, i, None, None] for i in range(6))
    norm = ((lx / ax).abs().clamp_min(1e-6) ** pw + (ly / ay).abs().clamp_min(1e-6) ** pw) ** (1 / pw)
    edge = (1 + amp * torch.cos(lobes * torch.atan2(ly, lx))) / (1 + amp)
    inside = (norm < edge) & (norm >= hole)
    colour = torch.where(_texture(dx, dy, p["tex"])[:, None], p["a"][:, :, None, None], p["b"][:, :, None, None])
    flat = ((rows + pad)[:, :, None] * side + (cols + pad)[:, None, :]).reshape(b, 1, w * w).expand(b, 3, -1)
    canvas = canvas.reshape(b, 3, side * side)
    old = canvas.gather(2, flat).reshape(b, 3, w, w)
    canvas.scatter_(2, flat, torch.where(inside[:, None], colour, old).reshape(b, 3, w * w))
    return canvas.reshape(b, 3, side, side)


def _draw_background(p: dict[str, Tensor], size: int) -> Tensor:
    """Smooth colour fields (5x5 noise through a separable Gaussian interpolation) with a faint texture."""
    knots = (torch.arange(5) + 0.5) / 5
    yy, xx = _grid(size)
    m = torch.exp(-0.5 * ((yy[0] - knots) / 0.18) ** 2)                 # [size, 5]
    m = m / m.sum(1, keepdim=True)
    base = m @ p["blobs"] @ m.T                                             # [B, 3, size, size]
    on = _texture(xx - 0.5, yy - 0.5, p["tex"])
    return (base + 0.06 * (on[:, None].float() - 0.5)).clamp(0, 1)
