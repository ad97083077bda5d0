"""RotatingObjects: a 3DIEBench-like world of procedural 3-D objects, rendered live, no download.

Each object is a smooth union of superquadric parts with a category-specific layout (55 categories: 24 hand-made
families such as table, chair, car, lamp, airplane, then procedural ones built from a category seed); instances
vary proportions, part shapes and colour. A view is the 7-d latent of 3DIEBench: the object's rotation as
extrinsic "xyz" Euler angles, floor hue, spot-light angles (theta, phi) and spot hue. Actions are the relative
rotation ``R_from^-1 R_to`` as a quaternion (x, y, z, w), plus the hue differences for ``rotation+color``.

>>> world = RotatingObjects(image_size=32, num_classes=4, instances=5)
>>> g = torch.Generator().manual_seed(0)
>>> state = world.reset(8, g)
>>> world.render(state).shape
torch.Size([8, 3, 32, 32])
>>> state = world.step(state, world.sample_action(state, g), g)
>>> world.relative(state["params"], state["params"])[0].round(decimals=4).tolist()
[0.0, 0.0, 0.0, 1.0]
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import torch
from torch import Tensor

from seqjepa.options import ConfigError, opt

from . import rotations as rt
from .base import Factor, State, World
from .sdf_render import hsv_to_rgb, render
from .superquadrics import Parts

PI = math.pi
FIT_RADIUS = 0.9   # objects are scaled to this radius, inside the renderer's unit bounding sphere


def P(c, a, e=(1.0, 1.0), rot=(0.0, 0.0, 0.0), fold="", mat=0) -> tuple:
    """One part: centre, semi-axes, exponents (e1, e2), Euler rotation, mirrored axes ("xy"), material 0-3."""
    return (tuple(c), tuple(a), tuple(e), tuple(rot), tuple(float(k in fold) for k in "xyz"), mat)


# Hand-made families (z is up; sizes are arbitrary, every object is re-centred and scaled to fit).
# Materials: 0 = instance colour, 1 = a second colour, 2 = dark, 3 = light.
def _table(r):
    w, d, h, t, lt = r.uniform(.7, 1), r.uniform(.45, .9), r.uniform(.45, .8), r.uniform(.03, .06), r.uniform(.035, .07)
    return [P((0, 0, h), (w, d, t), (.25, r.choice([.25, .6]))),
            P((w - 1.6 * lt, d - 1.6 * lt, h / 2), (lt, lt, h / 2), (.25, r.choice([.25, 1])), fold="xy", mat=1)]


def _chair(r):
    s, h, bh, lt = r.uniform(.4, .55), r.uniform(.4, .55), r.uniform(.35, .6), r.uniform(.03, .05)
    return [P((0, 0, h), (s, s, .05), (.3, .3)), P((0, -s + .04, h + bh), (s, .04, bh), (.3, r.choice([.3, .8]))),
            P((s - .06, s - .06, h / 2), (lt, lt, h / 2), (.25, 1), fold="xy", mat=1)]


def _sofa(r):
    w, d, hb = r.uniform(.9, 1.3), r.uniform(.4, .55), r.uniform(.25, .4)
    return [P((0, 0, .25), (w, d, .18), (.4, .4)), P((0, -d + .12, .45 + hb / 2), (w, .12, hb), (.4, .4)),
            P((w - .1, 0, .45), (.12, d, .2), (.4, .5), fold="x", mat=1)]


def _bed(r):
    w, l = r.uniform(.5, .8), r.uniform(.9, 1.1)
    return [P((0, 0, .35), (w, l, .13), (.5, .3), mat=3), P((0, 0, .18), (w + .02, l + .02, .07), (.2, .2), mat=2),
            P((0, -l, .55), (w + .02, .05, r.uniform(.3, .45)), (.3, .3)), P((0, -l + .25, .52), (w * .6, .14, .07))]


def _lamp(r):
    ph, rs, hs = r.uniform(.5, .8), r.uniform(.25, .4), r.uniform(.15, .25)
    return [P((0, 0, 0), (r.uniform(.2, .3),) * 2 + (.04,), (.2, 1), mat=2),
            P((0, 0, ph), (.025, .025, ph), (.2, 1), mat=3),
            P((0, 0, 2 * ph + .05), (rs, rs, hs), (r.choice([.25, .6]), 1))]


def _mug(r):
    rad, h = r.uniform(.3, .4), r.uniform(.3, .45)
    return [P((0, 0, 0), (rad, rad, h), (.2, 1)), P((rad + .15, 0, 0), (.04, .04, h * .55), (.3, 1), mat=1),
            P((rad + .07, 0, h * .55), (.09, .035, .035), (.5, 1), fold="z", mat=1)]


def _bottle(r):
    rad, h, nr, nh = r.uniform(.2, .3), r.uniform(.35, .6), r.uniform(.06, .1), r.uniform(.12, .25)
    return [P((0, 0, 0), (rad, rad, h), (.3, 1)), P((0, 0, h), (rad, rad, rad * .8)),
            P((0, 0, h + rad * .7 + nh), (nr, nr, nh), (.2, 1)),
            P((0, 0, h + rad * .7 + 2 * nh), (nr * 1.2,) * 2 + (.04,), (.2, 1), mat=2)]


def _car(r):
    L, W, wr = r.uniform(.8, 1.1), r.uniform(.35, .45), r.uniform(.12, .17)
    return [P((0, 0, .28), (L, W, .14), (.3, .3)),
            P((-.1 * L, 0, .5), (L * r.uniform(.4, .6), W * .85, .12), (.5, .4), mat=3),
            P((.62 * L, W, wr), (wr, wr, .06), (.2, 1), rot=(PI / 2, 0, 0), fold="xy", mat=2)]


def _airplane(r):
    sw = r.uniform(-.5, .1)
    return [P((0, 0, 0), (1, .12, .12)), P((0, .45, 0), (.2, .5, .02), (.3, .8), rot=(0, 0, sw), fold="y"),
            P((-.85, 0, .18), (.14, .02, .18), (.3, .8), mat=1), P((-.85, .18, 0), (.1, .18, .02), (.3, .8), fold="y"),
            P((.05, .4, -.12), (.16, .05, .05), (.3, 1), rot=(0, PI / 2, 0), fold="y", mat=2)]


def _bench(r):
    L = r.uniform(.9, 1.2)
    parts = [P((0, 0, .45), (L, .25, .04), (.25, .25)),
             P((L * .8, 0, .22), (.04, .22, .22), (.25, .25), fold="x", mat=1)]
    if r.random() < .6:
        parts.append(P((0, -.22, .75), (L, .03, .15), (.25, .25)))
    return parts


def _mushroom(r):
    return [P((0, 0, 0), (r.uniform(.1, .18),) * 2 + (.35,), (.5, 1), mat=3),
            P((0, 0, .35), (r.uniform(.4, .6),) * 2 + (r.uniform(.15, .3),), (.9, 1))]


def _dumbbell(r):
    L, wr = r.uniform(.5, .8), r.uniform(.2, .3)
    return [P((0, 0, 0), (.05, .05, L), (.2, 1), rot=(0, PI / 2, 0), mat=3),
            P((L * .75, 0, 0), (wr, wr, .07), (.2, r.choice([1, .25])), rot=(0, PI / 2, 0), fold="x", mat=2)]


def _snowman(r):
    a, b, c = r.uniform(.35, .45), r.uniform(.25, .32), r.uniform(.17, .22)
    head = a + 1.6 * b + c * .8
    return [P((0, 0, 0), (a, a, a), mat=3), P((0, 0, a + b * .8), (b, b, b), mat=3), P((0, 0, head), (c, c, c), mat=3),
            P((0, 0, head + .9 * c), (c * .8, c * .8, c * .5), (.2, 1), mat=2),
            P((0, -c, head), (.03, .15, .03), (.8, 1))]


def _rocket(r):
    h = r.uniform(.6, .9)
    return [P((0, 0, 0), (.18, .18, h), (.3, 1), mat=3), P((0, 0, h), (.18, .18, .35)),
            P((.2, .2, -h + .15), (.15, .02, .2), (.3, .5), rot=(0, 0, PI / 4), fold="xy")]


def _cabinet(r):
    w, d, h = r.uniform(.4, .6), r.uniform(.25, .4), r.uniform(.6, 1)
    return [P((0, 0, 0), (w, d, h), (.2, .2)), P((.08, -d, 0), (.02, .03, .12), (.5, .5), fold="x", mat=3),
            P((w - .06, d - .06, -h - .05), (.04, .04, .06), (.3, 1), fold="xy", mat=2)]


def _guitar(r):
    return [P((0, 0, -.4), (.45, .1, .42)), P((0, 0, .12), (.34, .1, .32)),
            P((0, 0, .75), (.05, .035, .45), (.3, .3), mat=1),
            P((0, 0, 1.25), (.08, .04, .1), (.3, .3), mat=2)]


def _hammer(r):
    L = r.uniform(.6, .9)
    return [P((0, 0, 0), (.05, .05, L), (.3, 1), mat=1),
            P((0, 0, L), (r.uniform(.25, .4), .09, .09), (.25, r.choice([.25, 1])), mat=3)]


def _tree(r):
    n = r.choice([1, 2, 3])
    parts = [P((0, 0, -.5), (.1, .1, .4), (.3, 1), mat=2)]
    for i in range(n):
        s = r.uniform(.45, .6) * (1 - .25 * i)
        parts.append(P((0, 0, -.05 + .35 * i), (s, s, r.uniform(.25, .4)), (r.choice([.8, 1]), 1)))
    return parts


def _house(r):
    w, d, h = r.uniform(.5, .7), r.uniform(.4, .6), r.uniform(.3, .45)
    return [P((0, 0, 0), (w, d, h), (.2, .2), mat=3),
            P((0, 0, h), (w + .05, d * .72, d * .72), (.2, .2), rot=(PI / 4, 0, 0)),
            P((w * .5, d * .4, h + .45), (.07, .07, .2), (.2, .2), mat=2)]


def _sword(r):
    L = r.uniform(.7, 1)
    return [P((0, 0, .4), (.06, .015, L), (.6, .3), mat=3), P((0, 0, .4 - L), (.28, .04, .04), (.3, .5), mat=1),
            P((0, 0, .2 - L), (.035, .035, .2), (.3, 1), mat=2), P((0, 0, -L), (.06, .06, .06), mat=1)]


def _teapot(r):
    return [P((0, 0, 0), (.45, .45, r.uniform(.3, .4))), P((.52, 0, .1), (.05, .05, .25), (.3, 1), rot=(0, .8, 0)),
            P((-.5, 0, .05), (.04, .12, .18), (.5, .5), mat=1), P((0, 0, .38), (.08, .08, .08), mat=1)]


def _pawn(r):
    return [P((0, 0, -.5), (.4, .4, .08), (.3, 1)), P((0, 0, -.15), (.22, .22, .35), (.8, 1)),
            P((0, 0, .2), (.28, .28, .04), (.3, 1)), P((0, 0, .42), (.2, .2, .2))]


def _umbrella(r):
    rad = r.uniform(.7, .9)
    return [P((0, 0, 0), (.025, .025, .7), (.2, 1), mat=2),
            P((0, 0, .62), (rad, rad, .22), (r.choice([.7, 1]), r.choice([.3, 1]))),
            P((.06, 0, -.72), (.08, .025, .025), (.6, 1), mat=2)]


def _glass(r):
    return [P((0, 0, -.6), (.25, .25, .03), (.2, 1), mat=3), P((0, 0, -.3), (.03, .03, .3), (.3, 1), mat=3),
            P((0, 0, .2), (.3, .3, r.uniform(.25, .4)), (r.choice([.5, 1]), 1))]


FAMILIES = [("table", _table), ("chair", _chair), ("sofa", _sofa), ("bed", _bed), ("lamp", _lamp), ("mug", _mug),
            ("bottle", _bottle), ("car", _car), ("airplane", _airplane), ("bench", _bench), ("mushroom", _mushroom),
            ("dumbbell", _dumbbell), ("snowman", _snowman), ("rocket", _rocket), ("cabinet", _cabinet),
            ("guitar", _guitar), ("hammer", _hammer), ("tree", _tree), ("house", _house), ("sword", _sword),
            ("teapot", _teapot), ("pawn", _pawn), ("umbrella", _umbrella), ("glass", _glass)]
NUM_CATEGORIES = 55
CATEGORY_NAMES = [name for name, _ in FAMILIES] + [f"procedural-{i}" for i in range(len(FAMILIES), NUM_CATEGORIES)]


def _procedural_template(r: random.Random) -> list[tuple]:
    """A category: a core plus 1-4 parts attached to it or to each other, in one of four layouts.

    stack: each part on top of the last; limbs: parts on the core, mirrored to 2 or 4 copies; chain: each part
    beyond the last along +x; bilateral: parts on any earlier part, mirrored in x.
    """
    layout = r.choice(["stack", "limbs", "chain", "bilateral"])
    exps = [.25, .5, .8, 1.0]
    core = [r.uniform(.25, .5) for _ in range(3)]
    parts = [P((0, 0, 0), core, (r.choice(exps), r.choice(exps)), mat=r.choice([0, 0, 1]))]
    for _ in range(r.randint(1, 4)):
        a = [r.uniform(.08, .4) for _ in range(3)]
        rot = tuple(r.choice([0.0, 0.0, PI / 4, r.uniform(-PI, PI)]) for _ in range(3))
        base, fold = parts[-1], ""
        if layout == "stack":
            v = (r.uniform(-.3, .3), r.uniform(-.3, .3), 1.0)
        elif layout == "chain":
            v = (1.0, r.uniform(-.6, .6), r.uniform(-.6, .6))
        elif layout == "limbs":
            base, fold = parts[0], r.choice(["xy", "x", "y"])
            v = (r.uniform(.3, 1), r.uniform(.3, 1), r.uniform(-1, 1))
        else:
            base, fold = r.choice(parts), "x"
            v = (r.uniform(.4, 1), r.uniform(-1, 1), r.uniform(-1, 1))
        v = [x / math.sqrt(sum(y * y for y in v)) for x in v]
        # Overlap: step out by ~80% of both parts' extents along v (their mean radius if rotated).
        reach = lambda a, rot: (sum((ai * vi) ** 2 for ai, vi in zip(a, v)) ** .5 if not any(rot)  # noqa: E731
                                else sum(a) / 3)
        dist = .8 * (reach(base[1], base[3]) + reach(a, rot))
        c = tuple(bc + dist * vi for bc, vi in zip(base[0], v))
        if layout == "bilateral" and abs(c[0]) < a[0]:
            c = (a[0] * 1.1,) + c[1:]  # keep the mirrored pair apart
        parts.append(P(c, a, (r.choice(exps), r.choice(exps)), rot, fold, mat=r.choice([0, 0, 1, 2, 3])))
    return parts


def _procedural(template: list[tuple], r: random.Random) -> list[tuple]:
    """An instance of a procedural category: jittered proportions, positions and roundness."""
    out = []
    for c, a, e, rot, fold, mat in template:
        c = tuple(x * r.uniform(.85, 1.15) for x in c)
        a = tuple(x * r.uniform(.8, 1.2) for x in a)
        e = tuple(min(1.0, max(.2, x + r.uniform(-.1, .1))) for x in e)
        out.append((c, a, e, rot, fold, mat))
    return out


@lru_cache(maxsize=4)
def build_objects(categories: int, instances: int, seed: int) -> tuple[Parts, Tensor]:
    """Parts of ``categories x instances`` objects (category-major) and their material ids, normalised to fit.

    Cached (worlds with the same shapes share them); treat the returned tensors as read-only.
    """
    specs = []
    for cat in range(categories):
        template = None if cat < len(FAMILIES) else _procedural_template(random.Random(f"{seed}/template/{cat}"))
        for i in range(instances):
            r = random.Random(f"{seed}/{cat}/{i}")  # str seeds hash with sha512: stable across runs and platforms
            specs.append(FAMILIES[cat][1](r) if template is None else _procedural(template, r))
    N, K = len(specs), max(len(s) for s in specs)
    pad = (0.0,) * 3 + (1.0,) * 5 + (0.0,) * 6  # empty slots: harmless unit spheres, masked by ``present``
    t = torch.tensor([[c + a + e + rot + fold for c, a, e, rot, fold, _ in s] + [pad] * (K - len(s)) for s in specs])
    mats = torch.tensor([[m for *_, m in s] + [0] * (K - len(s)) for s in specs])
    present = torch.tensor([[True] * len(s) + [False] * (K - len(s)) for s in specs])
    center, size, exps, euler, fold = t.split([3, 3, 2, 3, 3], -1)
    R = rt.euler_to_matrix(euler)
    # Fit: sample each part's surface, centre the object on axes no part mirrors, scale to FIT_RADIUS.
    eta, omega = torch.meshgrid(torch.linspace(-PI / 2, PI / 2, 9), torch.linspace(-PI, PI, 17), indexing="ij")
    spow = lambda x, p: x.sign() * x.abs().clamp_min(1e-9) ** p  # noqa: E731
    e1, e2 = exps[..., 0, None, None], exps[..., 1, None, None]
    q = torch.stack([size[..., 0, None, None] * spow(eta.cos(), e1) * spow(omega.cos(), e2),
                     size[..., 1, None, None] * spow(eta.cos(), e1) * spow(omega.sin(), e2),
                     size[..., 2, None, None] * spow(eta.sin(), e1).expand(N, K, *eta.shape)], -1)
    pts = torch.einsum("nkij,nkabj->nkabi", R, q) + center[:, :, None, None]
    pts = pts.flatten(1, 3)
    keep = present[:, :, None, None].expand(-1, -1, *eta.shape).flatten(1, 3)
    lo = torch.where(keep[..., None], pts, torch.full_like(pts, 1e9)).amin(1)
    hi = torch.where(keep[..., None], pts, torch.full_like(pts, -1e9)).amax(1)
    mirrored = ((fold > 0) & present[..., None]).any(1)
    shift = torch.where(mirrored, torch.zeros_like(lo), -(lo + hi) / 2)
    radius = torch.where(keep, (pts + shift[:, None]).norm(dim=-1), torch.zeros(())).amax(1)
    scale = (FIT_RADIUS / radius)[:, None, None]
    parts = Parts(center=(center + shift[:, None]) * scale, size=size * scale, exps=exps, rot=R, fold=fold,
                  color=torch.zeros(N, K, 3), present=present)
    return parts, mats


def _hue(x: Tensor) -> Tensor:
    """A hue latent in [0, 1]: kept as is when inside (so a plain difference applied by ``step`` is recovered
    exactly by ``relative``), else taken mod 1, which renders the same colour."""
    x = torch.where((x >= 0) & (x <= 1), x, x.remainder(1.0))
    return x.clamp(0.0, 1.0)  # float remainder can round up to 1.0 + ulp for tiny negative x


class RotatingObjects(World):
    """3DIEBench without the download: procedural objects rotating above a coloured floor under a coloured spot."""

    @dataclass
    class Options:
        image_size: int = opt(64, "side of the square views in pixels", ge=16, le=256)
        num_classes: int = opt(10, "object categories (the classes), the first N of 55", ge=1, le=55)
        instances: int = opt(60, "objects per category", ge=1, le=100000)
        test_fraction: float = opt(0.2, "fraction of each category's objects held out for the test split",
                                   ge=0.0, le=1.0)
        split: Literal["train", "test"] = opt("train", "which objects: the train or the held-out test split")
        actions: Literal["rotation", "rotation+color"] = opt(
            "rotation", "rotation: 4-d relative quaternion; rotation+color: plus (d floor hue, d spot hue), the plain "
                        "difference of the hue latents in [0, 1] as in the official code")
        rotation_range: float = opt(PI / 2, "half-width (radians) of each Euler angle's range for sampled poses",
                                    gt=0.0, le=PI / 2)
        ood: bool = opt(False, "out-of-distribution poses: uniform over the rotations that no Euler triple within "
                               "+-rotation_range can write (see envs.rotations.sample_euler)")
        data_seed: int = opt(0, "seed of the procedural object set (shapes and colours)")
        canonical_quat: bool = opt(True, "quaternion sign with w >= 0 (q and -q are the same rotation)")
        shadows: bool = opt(True, "soft shadow of the object on the floor (off: ~20% faster renders)")
        pose_paint: float = opt(0.0, "tint each surface by the direction it faces in the object's own frame (a "
                                     "normal map mixed into the object's colours; 0 = off, as 3DIEBench)",
                                ge=0.0, le=1.0)
        nuisances: Literal["per_view", "per_episode"] = opt(
            "per_view", "floor hue and spot light not in the action: fresh every view (3DIEBench) or drawn once "
                        "per episode (only the pose then changes between views)")

    RENAMED = {"num_categories": "num_classes", "shape_seed": "data_seed"}
    name = "3DIEBench-like procedural objects (55 categories), rendered live by an SDF sphere tracer"
    action_doc = ("relative rotation R_from^-1 R_to as a unit quaternion (x, y, z, w) in [-1, 1]; with "
                  "actions=rotation+color also (d floor hue, d spot hue): the plain difference of the hue latents "
                  "in [0, 1], so in [-1, 1] (the official code's and SIE's; not wrapped, so a linear head reads it)")
    param_names = ("rot_x", "rot_y", "rot_z", "floor_hue", "spot_theta", "spot_phi", "spot_hue")

    def __init__(self, options: Options | None = None, device: str | torch.device = "cpu", **kwargs):
        opts = self.resolve_options(options, kwargs)
        self.options, self.device = opts, torch.device(device)
        n_test = int(round(opts.instances * opts.test_fraction))
        ids = range(opts.instances - n_test, opts.instances) if opts.split == "test" else range(opts.instances - n_test)
        if len(ids) == 0:
            raise ConfigError(f"test_fraction: got {opts.test_fraction!r} with instances={opts.instances}, which "
                              f"leaves the {opts.split} split empty; allowed: a value giving both splits an object")
        parts, mats = build_objects(opts.num_classes, opts.instances, opts.data_seed)
        self._parts = Parts(*(getattr(parts, f).to(self.device) for f in Parts.__dataclass_fields__))
        objects = torch.tensor([c * opts.instances + i for c in range(opts.num_classes) for i in ids])
        self._objects = objects.to(self.device)
        self._labels = (objects // opts.instances).to(self.device)
        # Per-object colours: an instance hue, a second hue and two neutrals, all fixed by data_seed.
        g = torch.Generator().manual_seed(opts.data_seed + 7919)
        hue, hue2, sv = torch.rand(2, len(mats), generator=g).unbind(0) + (torch.rand(len(mats), 4, generator=g),)
        palette = torch.stack([hsv_to_rgb(hue, .45 + .35 * sv[:, 0], .7 + .25 * sv[:, 1]),
                               hsv_to_rgb(hue2, .35 + .3 * sv[:, 2], .6 + .3 * sv[:, 3]),
                               hsv_to_rgb(hue, torch.full_like(hue, .15), torch.full_like(hue, .25)),
                               hsv_to_rgb(hue, torch.full_like(hue, .08), torch.full_like(hue, .88))], 1)
        self._parts.color = palette.gather(1, mats[..., None].expand(-1, -1, 3)).to(self.device)
        self.num_classes = opts.num_classes
        self.num_episodes = len(objects)
        self.image_size = opts.image_size
        self.param_dim = 7
        color = opts.actions == "rotation+color"
        self.action_dim = 6 if color else 4
        self.factors = {"rotation": Factor(0, 4, "mlp")} | ({"color": Factor(4, 6, "linear")} if color else {})
        self.action_low = -torch.ones(self.action_dim, device=self.device)
        self.action_high = torch.ones(self.action_dim, device=self.device)

    # --- sampling -------------------------------------------------------------------------------------------
    def _sample_params(self, n: int, g: torch.Generator) -> Tensor:
        """Fresh absolute views: pose uniform in the (OOD) Euler range, hues and spot angles as in 3DIEBench."""
        o = self.options
        euler = rt.sample_euler(n, g, half_range=o.rotation_range, ood=o.ood, device=self.device)
        u = torch.rand(n, 4, generator=g, device=self.device)
        return torch.cat([euler, u[:, :1], u[:, 1:2] * (PI / 4), u[:, 2:3] * (2 * PI), u[:, 3:]], 1)

    def reset(self, n: int, generator: torch.Generator, episodes: Tensor | None = None) -> State:
        episodes = self.episodes_for(n, generator, episodes)
        return {"episode": episodes, "label": self._labels[episodes], "params": self._sample_params(n, generator)}

    def step(self, state: State, action: Tensor, generator: torch.Generator) -> State:
        a = self.check_action(action.to(self.device, torch.float32))
        p = state["params"]
        R = rt.euler_to_matrix(p[:, :3]) @ rt.quat_to_matrix(a[:, :4])  # quat_to_matrix: normalises, 0 -> identity
        euler = rt.matrix_to_euler(R)
        # Nuisance factors not in the action get fresh values every view, as in 3DIEBench (or keep the episode's).
        fresh = self._sample_params(len(p), generator) if self.options.nuisances == "per_view" else p
        hues = _hue(p[:, [3, 6]] + a[:, 4:6]) if self.action_dim == 6 else fresh[:, [3, 6]]
        params = torch.cat([euler, hues[:, :1], fresh[:, 4:6], hues[:, 1:]], 1)
        return {**state, "params": params}

    def sample_action(self, state: State, generator: torch.Generator) -> Tensor:
        return self.relative(state["params"], self._sample_params(len(state["params"]), generator))

    # --- actions and targets --------------------------------------------------------------------------------
    def relative(self, p_from: Tensor, p_to: Tensor) -> Tensor:
        R = rt.euler_to_matrix(p_from[..., :3]).transpose(-1, -2) @ rt.euler_to_matrix(p_to[..., :3])
        q = rt.matrix_to_quat(R)
        q = rt.canonical_quat(q) if self.options.canonical_quat else q
        if self.action_dim == 4:
            return q
        return torch.cat([q, p_to[..., [3, 6]] - p_from[..., [3, 6]]], -1)

    def absolute(self, params: Tensor) -> dict[str, Tensor]:
        return {"rotation": rt.canonical_quat(rt.matrix_to_quat(rt.euler_to_matrix(params[..., :3])))}

    # --- rendering ------------------------------------------------------------------------------------------
    def render(self, state: State) -> Tensor:
        p = state["params"]
        parts = self._parts[self._objects[state["episode"]]]
        return render(parts, rt.euler_to_matrix(p[:, :3]), floor_rgb=hsv_to_rgb(p[:, 3], .6, .8),
                      light_angles=p[:, 4:6], light_rgb=hsv_to_rgb(p[:, 6], .45, 1.0), size=self.image_size,
                      shadows=self.options.shadows, paint=self.options.pose_paint)
