"""Objects as smooth unions of superquadric parts: the parts, and their signed distance in each view's object frame.

:class:`Parts` holds up to K parts per object; :class:`Geometry` turns a batch of them into the tensors the sphere
tracer (``envs.sdf_render``) evaluates: per-part distance estimates, their smooth union, and the oriented boxes
that rays are clipped to before marching.

>>> parts = Parts.single(torch.tensor([[0.5, 0.5, 0.5]]), exps=torch.tensor([[1.0, 1.0]]))
>>> d = Geometry(parts).at(torch.tensor([[[0.0], [0.0], [0.75]]]))   # a sphere of radius 0.5, 0.25 away
>>> round(float(d), 2)
0.25
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

from .base import prunes_work
from .ray_packing import pack

__all__ = ["Parts", "Geometry", "BLEND_K", "BOX_MARGIN"]

BLEND_K = 0.035             # smooth-union radius (exponential smooth-min); widens the surface by <= K log K
BOX_MARGIN = 0.09           # covers the smooth-union bulge and the hit tolerance
_SIGNS = torch.tensor(list(itertools.product([1.0, -1.0], repeat=3)))  # [8, 3], all mirror images


@dataclass
class Parts:
    """Superquadric parts of ``n`` objects, ``K`` slots each, in the object frame.

    ``size`` holds the semi-axes (a1, a2, a3); ``exps`` the exponents (e1 shapes the z profile, e2 the xy cross
    section; 1 = round, 0.25 = boxy; keep both in [0.2, 1]); ``rot`` maps part axes to object axes; ``fold``
    [n, K, 3] (0. or 1.) mirrors the object frame on those axes (x -> |x|) before placing the part, so one part
    draws 2, 4 or 8 symmetric copies (legs, wheels); ``present`` masks unused slots.
    """
    center: Tensor   # [n, K, 3]
    size: Tensor     # [n, K, 3]
    exps: Tensor     # [n, K, 2]
    rot: Tensor      # [n, K, 3, 3]
    fold: Tensor     # [n, K, 3]
    color: Tensor    # [n, K, 3] albedo in [0, 1]
    present: Tensor  # [n, K] bool

    @staticmethod
    def single(size: Tensor, *, exps: Tensor, color: Tensor | None = None) -> "Parts":
        """One centred, axis-aligned part per object (``size`` [n, 3], ``exps`` [n, 2]); handy for tests."""
        n, dev = size.shape[0], size.device
        color = torch.full((n, 3), 0.8, device=dev) if color is None else color
        return Parts(center=torch.zeros(n, 1, 3, device=dev), size=size[:, None], exps=exps[:, None],
                     rot=torch.eye(3, device=dev).expand(n, 1, 3, 3), fold=torch.zeros(n, 1, 3, device=dev),
                     color=color[:, None], present=torch.ones(n, 1, dtype=torch.bool, device=dev))

    def __getitem__(self, idx: slice | tuple | Tensor) -> "Parts":
        return Parts(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))



class Geometry:
    """Per-view tensors for the union SDF in the *object* frame. Layout: [views, channels, rays].

    For an object-frame point p, part k's coordinates scaled to its semi-axes are
    ``q_k = R_k^T (p + fold_k * (|p| - p) - c_k) / a_k = Wlin p + Wabs |p| + b``, all parts stacked as
    channels ``(axis, part)`` so that each axis is one contiguous [n, K, r] block.
    """

    def __init__(self, parts: Parts):
        slot = torch.arange(1, parts.present.shape[1] + 1, device=parts.present.device)
        # Slots after every view's last part are dropped (reading that count is a host sync: CPU only).
        K = max(1, int((parts.present * slot).max())) if prunes_work(slot.device) else parts.present.shape[1]
        parts = parts[:, :K]
        present = parts.present[..., None]
        R, fold = parts.rot.float(), parts.fold.float()
        # Empty slots become unit spheres far away: their distance clamps to the maximum, no masking needed.
        size = torch.where(present, parts.size.float(), 1.0)
        center = torch.where(present, parts.center.float(), 50.0)
        exps = torch.where(present, parts.exps.float(), 1.0)
        M = R / size[..., None, :]                                      # [n, K, i, j]: column j scaled by 1/a_j
        self.Wlin = rearrange((1 - fold[..., None]) * M, "n k i j -> n (j k) i").contiguous()
        self.Wabs = rearrange(fold[..., None] * M, "n k i j -> n (j k) i").contiguous()
        self.has_fold = bool(fold.any()) if prunes_work(fold.device) else True
        self.b = rearrange(-torch.einsum("nki,nkij->nkj", center, M), "n k j -> n (j k) 1").contiguous()
        e1, e2 = exps[..., 0], exps[..., 1]
        self.pw = rearrange(torch.stack([2 / e2, 2 / e2, 2 / e1], -1), "n k j -> n (j k) 1").contiguous()
        self.r21, self.half_e1 = (e2 / e1)[..., None], (e1 / 2)[..., None]    # [n, K, 1]
        self.inv_a2 = rearrange(size ** -2, "n k j -> n (j k) 1").contiguous()
        self.color = parts.color.float()
        self.K = K
        # One oriented box per part copy (mirror images under fold), grown by a margin, packed per view.
        signs = _SIGNS.to(R.device)
        Mb = R / (size + BOX_MARGIN)[..., None, :]
        bb = (-torch.einsum("nki,nkij->nkj", center, Mb))[:, :, None].expand(-1, -1, 8, -1)
        Mb = signs[None, None, :, :, None] * Mb[:, :, None]            # copy S: (S p - c) M = p (S M) - c M
        ok = ((signs[None, None] > 0) | (fold[:, :, None] > 0)).all(-1) & parts.present[:, :, None]
        idx, valid = pack(rearrange(ok, "n k s -> n (k s)"))
        Mb = rearrange(Mb, "n k s i j -> n (k s) i j").gather(1, idx[..., None, None].expand(-1, -1, 3, 3))
        bb = rearrange(bb, "n k s j -> n (k s) j").gather(1, idx[..., None].expand(-1, -1, 3))
        bb = torch.where(valid[..., None], bb, torch.full_like(bb, 1e3))  # padding boxes lie far away
        if not idx.shape[1]:  # no parts at all: one box that no ray meets
            Mb, bb = torch.eye(3, device=R.device).expand(len(bb), 1, 3, 3), torch.full((len(bb), 1, 3), 1e3,
                                                                                         device=R.device)
        self.MbT = rearrange(Mb, "n b i j -> n (j b) i").contiguous()
        self.bb = rearrange(bb, "n b j -> n (j b) 1").contiguous()
        self.B = Mb.shape[1]

    def clip(self, o: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        """Ray interval [enter, exit] [n, r] through the union of part boxes; ``enter > exit`` if all missed.

        ``o`` is [n, 3, 1] (one origin per view) or [n, 3, r]; ``d`` [n, 3, r] are unit directions.
        """
        n, _, r = d.shape
        O = torch.baddbmm(self.bb, self.MbT, o)
        D = torch.bmm(self.MbT, d)
        inv = D.reciprocal_()  # +-inf where a ray is parallel to a slab: the slab test below still holds
        # Explicit outputs: eager CPU kernels that broadcast are several times slower allocating their own.
        t1 = torch.mul(inv, -1.0 - O, out=torch.empty_like(inv))
        t2 = torch.mul(inv, 1.0 - O, out=torch.empty_like(inv))
        tn = torch.minimum(t1, t2).view(n, 3, self.B, r).amax(1)
        tf = torch.maximum(t1, t2).view(n, 3, self.B, r).amin(1)
        hit = (tn < tf) & (tf > 0)
        enter = tn.masked_fill_(~hit, 1e9).amin(1).clamp_min_(0.0)
        return enter, tf.masked_fill_(~hit, -1e9).amax(1)

    def part_dist(self, q: Tensor) -> Tensor:
        """Per-part distance estimates ``[n, K, r]`` from scaled local coordinates ``q`` [n, 3K, r] (consumed)."""
        n, _, r = q.shape
        K = self.K
        X = q.abs_().clamp_min_(1e-6)
        P = torch.log(X).mul_(self.pw).exp_()                          # |x/a1|^(2/e2), |y/a2|^(2/e2), |z/a3|^(2/e1)
        g = torch.div(P, X, out=X).square_().mul_(self.inv_a2)         # squared partials, up to common factors
        Px, Py, Pz = P.view(n, 3, K, r).unbind(1)
        gx, gy, gz = g.view(n, 3, K, r).unbind(1)
        u = torch.add(Px, Py).clamp_min_(1e-30)
        uu = torch.log(u).mul_(self.r21).exp_()
        w = torch.div(uu, u).clamp_max_(1e15).square_()
        F = uu.add_(Pz).clamp_min_(1e-30)
        G = torch.log(F).mul_(self.half_e1).exp_()                    # the part's gauge: 1 on its surface
        # (G - 1) / |grad G|, not the radial distance |q| (1 - 1/G): the latter overshoots thin parts badly.
        s = torch.addcmul(gz, w, gx.add_(gy))
        d = (G - 1.0).mul_(F).div_(G.mul_(s.sqrt_()).add_(1e-12))
        return d.clamp_(-1.0, 2.0)

    def union(self, d: Tensor) -> Tensor:
        """Smooth minimum over parts, ``[n, K, r]`` -> ``[n, r]`` (d <= 2, so no overflow or denormals)."""
        if self.K == 1:
            return d[:, 0]
        return d.mul_(-1.0 / BLEND_K).exp_().sum(1).log_().mul_(-BLEND_K)

    def parts_at(self, p: Tensor) -> Tensor:
        """Per-part distances ``[n, K, r]`` at object-frame points ``p`` [n, 3, r]."""
        q = torch.baddbmm(self.b, self.Wlin, p)
        if self.has_fold:
            q = q.baddbmm_(self.Wabs, p.abs())
        return self.part_dist(q)

    def at(self, p: Tensor) -> Tensor:
        """Union distance ``[n, r]`` at object-frame points ``p`` [n, 3, r]."""
        return self.union(self.parts_at(p))
