"""A batched pure-PyTorch sphere tracer for objects made of superquadric parts, on CPU or CUDA.

Each view shows one object (a smooth union of superquadric parts, rotated by the view's rotation) above an analytic
floor, lit by a coloured spot light plus ambient light, from a fixed camera: Lambert + a little specular on the
object, the spot's pool of light and the object's soft shadow on the floor. Deterministic; runs on the inputs' device.

Speed: rays are clipped to the parts' oriented bounding boxes (most never march; the rest start at the surface);
rays move into each view's object frame once, so a step is one multiply-add per part; active rays are re-packed
every other step (rows stay views, so per-view parameters broadcast); a mirrored part (``fold``) draws 2-8 copies
for the price of one; shadows are traced at half resolution, only where a box lies between floor and light.

>>> parts = Parts.single(torch.tensor([[0.6, 0.4, 0.3]]), exps=torch.tensor([[0.5, 1.0]]))
>>> img = render(parts, torch.eye(3)[None], floor_rgb=torch.tensor([[0.2, 0.5, 0.8]]),
...              light_angles=torch.tensor([[0.3, 1.0]]), light_rgb=torch.ones(1, 3), size=32)
>>> img.shape, img.dtype
(torch.Size([1, 3, 32, 32]), torch.uint8)
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from functools import lru_cache

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from .ray_packing import pack, repack, take
from .superquadrics import Geometry, Parts

__all__ = ["render", "hsv_to_rgb", "BOUND_RADIUS"]

BOUND_RADIUS = 1.0          # objects must lie inside this sphere about the origin; the floor stays below it
FLOOR_Z = -1.05
CAM_DIST, CAM_ELEV, CAM_FOV = 3.7, math.radians(28.0), math.radians(35.0)
LIGHT_DIST = 5.0            # the spot sits at LIGHT_DIST in direction (theta, phi) and points at the origin
SPOT_INNER, SPOT_OUTER = math.cos(math.radians(22.0)), math.cos(math.radians(42.0))
AMBIENT = 0.22
SMALL_RENDER = 1 << 14      # renders of at most this many pixels run on one CPU thread
SHADOW_K = 24.0             # soft-shadow sharpness: penumbra width ~ distance / SHADOW_K
_TETRA = torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, 1.0, 1.0]])


def hsv_to_rgb(h: Tensor, s: Tensor | float, v: Tensor | float) -> Tensor:
    """Hue in [0, 1) (wraps), saturation and value in [0, 1] -> RGB ``[..., 3]`` in [0, 1]."""
    h = torch.as_tensor(h)
    s = torch.as_tensor(s, dtype=h.dtype, device=h.device).expand_as(h)
    v = torch.as_tensor(v, dtype=h.dtype, device=h.device).expand_as(h)
    k = torch.tensor([5.0, 3.0, 1.0], dtype=h.dtype, device=h.device)
    x = (k + 6.0 * h[..., None].remainder(1.0)).remainder(6.0)
    return v[..., None] * (1 - s[..., None] * torch.clamp(torch.minimum(x, 4.0 - x), 0.0, 1.0))



def _march(geo: Geometry, o: Tensor, d: Tensor, t: Tensor, t_end: Tensor, active: Tensor, *, steps: int,
           eps: float, every: int = 2) -> tuple[Tensor, Tensor]:
    """Sphere-trace object-frame rays ``o + t d`` (o [n, 3, 1], d [n, 3, r]) to a hit or ``t_end``: (t, hit)."""
    n, r = t.shape
    out_t, out_hit = t.clone(), torch.zeros_like(active)
    idx = torch.arange(r, device=t.device).expand(n, r)
    hit, active, dist = torch.zeros_like(active), active.clone(), torch.ones_like(t)
    # Along a ray the linear part of every q_k is A + t B: precomputed once, one multiply-add per step.
    A = torch.baddbmm(geo.b, geo.Wlin, o)
    B = torch.bmm(geo.Wlin, d)
    for i in range(steps):
        if i % every == 0 and i:
            packed = repack(active, idx, [(out_t, t), (out_hit, hit)], [t, t_end, active, hit, dist, d, B])
            if packed is None:
                break
            idx, (t, t_end, active, hit, dist, d, B) = packed
        tt = t[:, None]
        q = torch.addcmul(A, tt, B, out=torch.empty_like(B))
        if geo.has_fold:
            q = q.baddbmm_(geo.Wabs, torch.addcmul(o, tt, d, out=torch.empty_like(d)).abs_())
        dist = geo.union(geo.part_dist(q))
        done = active & (dist < eps * t)  # the tolerance grows with t: a fixed fraction of a pixel's footprint
        hit |= done
        active &= ~done
        t = torch.where(active, t + 0.9 * dist, t)
        active &= t < t_end
    hit |= active & (dist < 4 * eps * t)  # out of steps but close: call it a hit, not a hole
    out_t.scatter_(1, idx, t)
    out_hit.scatter_(1, idx, hit)
    return out_t, out_hit


def _soft_shadow(geo: Geometry, p: Tensor, l: Tensor, s: Tensor, s_end: Tensor, run: Tensor, *,
                 steps: int, every: int = 2) -> Tensor:
    """Light visibility in [0, 1] from object-frame points ``p`` along unit ``l`` ([n, 3, r]), with penumbra.

    ``[s, s_end]`` is the part of each ray inside the part boxes (from ``clip``); ``run`` masks real rays.
    """
    n, r = s.shape
    vis = torch.ones_like(s)
    out = vis.clone()
    idx = torch.arange(r, device=s.device).expand(n, r)
    run, prev = run.clone(), torch.full_like(s, 1e9)
    for i in range(steps):
        if i % every == 0 and i:
            packed = repack(run, idx, [(out, vis)], [p, l, s, s_end, run, vis, prev])
            if packed is None:
                break
            idx, (p, l, s, s_end, run, vis, prev) = packed
        h = geo.at(torch.addcmul(p, s[:, None], l))
        # Estimate the closest approach between this sample and the previous one (fewer bands than min(h/s)).
        y = h * h / (2 * prev)
        near = torch.sqrt((h * h - y * y).clamp_min_(0.0)) * (h > 0)  # inside the object: no light
        vis = torch.where(run, torch.minimum(vis, SHADOW_K * near / (s - y).clamp_min_(1e-3)), vis)
        prev = torch.where(run, h, prev)
        s = s + h.clamp(0.01, 0.25)
        run &= (s < s_end) & (vis > 0.0)
    out.scatter_(1, idx, vis)
    return out.clamp_(0.0, 1.0)


@lru_cache(maxsize=16)
def _camera(size: int, device: str) -> tuple[Tensor, Tensor, Tensor]:
    """The fixed camera: position [3], unit ray directions [3, size*size], and the pixels whose ray meets the
    bounding sphere (the same for every view, since the sphere is rotation-free)."""
    cam = torch.tensor([0.0, -CAM_DIST * math.cos(CAM_ELEV), CAM_DIST * math.sin(CAM_ELEV)])
    target = torch.tensor([0.0, 0.0, 0.0])  # the bounding sphere sits in the middle of the frame
    fwd = (target - cam) / (target - cam).norm()
    right = torch.linalg.cross(fwd, torch.tensor([0.0, 0.0, 1.0]))
    right = right / right.norm()
    up = torch.linalg.cross(right, fwd)
    ndc = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    y, x = torch.meshgrid(-ndc, ndc, indexing="ij")
    dirs = fwd + math.tan(CAM_FOV / 2) * (x[..., None] * right + y[..., None] * up)
    dirs = rearrange(dirs / dirs.norm(dim=-1, keepdim=True), "h w c -> c (h w)").contiguous()
    b = cam @ dirs
    cols = ((cam @ cam - b * b < BOUND_RADIUS ** 2) & (b < 0)).nonzero().squeeze(1)
    return cam.to(device), dirs.to(device), cols.to(device)


def _light_pos(angles: Tensor) -> Tensor:
    theta, phi = angles[:, 0], angles[:, 1]
    return LIGHT_DIST * torch.stack([theta.sin() * phi.cos(), theta.sin() * phi.sin(), theta.cos()], -1)


def _spot(p: Tensor, light: Tensor) -> tuple[Tensor, Tensor]:
    """Unit direction to the light [n, 3, r] and the spot cone's falloff [n, r] at world points ``p``."""
    to_light = light[:, :, None] - p
    l = _unit(to_light)
    axis = light / light.norm(dim=1, keepdim=True)                 # the spot points at the origin
    x = ((_dot(l, axis[:, :, None]) - SPOT_OUTER) / (SPOT_INNER - SPOT_OUTER)).clamp_(0.0, 1.0)
    return l, x * x * (3 - 2 * x)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Dot product over dim 1 of [n, 3, r] tensors (summing slices: reducing a size-3 dim is slow on CPU)."""
    return a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1] + a[:, 2] * b[:, 2]


def _unit(v: Tensor) -> Tensor:
    return v * _dot(v, v).clamp_min_(1e-16).rsqrt_()[:, None]


def _floor_shadow(geo: Geometry, rot_t: Tensor, light: Tensor, size: int) -> Tensor:
    """Soft shadow of the object on the floor, visibility [n, size*size] in [0, 1].

    Traced at half resolution and upsampled bilinearly: a soft shadow is smooth, so this costs a quarter of
    the shadow rays for no visible loss. Floor points are those of the floor plane, hidden or not.
    """
    n = rot_t.shape[0]
    low = max(8, size // 2)
    cam, dirs, _ = _camera(low, str(rot_t.device))
    tf = (FLOOR_Z - cam[2]) / dirs[2].clamp(max=-1e-4)
    pf = (cam[:, None] + tf * dirs).expand(n, 3, low * low)
    lf, spot = _spot(pf, light)
    # Only lit floor points whose path to the light crosses the bounding sphere can be in shadow.
    b = _dot(pf, lf)
    idx, valid = pack((spot > 0.0) & (lf[:, 2] > 0.0) & (_dot(pf, pf) - b * b < BOUND_RADIUS ** 2) & (b < 0))
    vis = torch.ones(n, low * low, device=rot_t.device)
    if idx.shape[1]:
        po, lo = rot_t @ take(pf, idx), rot_t @ take(lf, idx)  # object frame
        s0, s1 = geo.clip(po, lo)
        vis.scatter_(1, idx, _soft_shadow(geo, po, lo, s0, s1, valid & (s0 < s1), steps=20))
    if low == size:
        return vis
    return F.interpolate(vis.view(n, 1, low, low), size=(size, size), mode="bilinear",
                         align_corners=False).view(n, size * size)


def _render_chunk(parts: Parts, rot: Tensor, floor_rgb: Tensor, light_angles: Tensor, light_rgb: Tensor,
                  size: int, steps: int, shadows: bool, paint: float = 0.0) -> Tensor:
    device = parts.center.device
    n = rot.shape[0]
    cam, dirs, ray_cols = _camera(size, str(device))
    P = dirs.shape[1]
    eps = 0.4 * 2 * math.tan(CAM_FOV / 2) / size
    geo = Geometry(parts)
    rot = rot.float()
    rot_t = rot.transpose(1, 2)                                      # world -> object frame
    light = _light_pos(light_angles.float())
    floor_rgb, light_rgb = floor_rgb.float()[:, :, None], light_rgb.float()[:, :, None]

    # Primary rays, in each view's object frame, clipped to the part boxes; only rays that meet the bounding
    # sphere can see the object.
    o_obj = (rot_t @ cam)[:, :, None]                                # [n, 3, 1]
    d_obj = rot_t @ dirs[:, ray_cols]                                # [n, 3, r]
    enter, exit_ = geo.clip(o_obj, d_obj)
    cols, valid = pack(enter < exit_)
    obj_hit = torch.zeros(n, P, dtype=torch.bool, device=device)
    obj_t = torch.zeros(n, P, device=device)
    if cols.shape[1]:
        t0 = torch.where(valid, take(enter, cols), torch.zeros((), device=device))
        t, hit = _march(geo, o_obj, take(d_obj, cols), t0, take(exit_, cols), valid, steps=steps, eps=eps)
        pix = ray_cols[cols]
        obj_hit.scatter_(1, pix, hit & valid)
        obj_t.scatter_(1, pix, t)

    # The floor wherever the object is not: analytic ray-plane hit, the spot's pool of light, the soft shadow.
    tf = (FLOOR_Z - cam[2]) / dirs[2].clamp(max=-1e-4)
    pf = (cam[:, None] + tf * dirs).expand(n, 3, P)
    lf, spot_f = _spot(pf, light)
    lit_f = lf[:, 2].clamp_min(0.0) * spot_f
    if shadows:
        lit_f = lit_f * _floor_shadow(geo, rot_t, light, size)
    fade = torch.exp(-0.03 * tf.clamp_min(0.0))                     # the far floor dims a little: a depth cue
    img = floor_rgb * (AMBIENT + lit_f[:, None] * light_rgb) * fade

    # Object pixels: normals from 4 tetrahedral taps, part colours blended by soft nearest-part weights.
    hidx, hvalid = pack(obj_hit)
    m = hidx.shape[1]
    if m:
        dw = take(dirs.expand(n, 3, P), hidx)
        dh = rot_t @ dw
        ph = o_obj + take(obj_t, hidx)[:, None] * dh                # object frame
        taps = _TETRA.to(device)
        h = 0.5 * eps * CAM_DIST + 1e-3
        pts = rearrange(ph[..., None] + h * taps.T[None, :, None, :], "n c m k -> n c (m k)")
        dk = rearrange(geo.parts_at(pts), "n K (m k) -> n K m k", k=4)
        w = torch.softmax(dk.mean(-1).mul_(-1.0 / 0.02), dim=1)       # the taps' mean: the hit point's parts
        dt = geo.union(rearrange(dk, "n K m k -> n K (m k)")).view(n, m, 4)
        nrm_obj = _unit(torch.einsum("nmk,kc->ncm", dt, taps))      # object frame
        nrm = rot @ nrm_obj                                          # world frame
        albedo = torch.einsum("nkm,nkc->ncm", w, geo.color)
        if paint:
            # The surface's direction in the object's own frame as a saturated colour (a normal map of gain 1): the
            # mean colour of a view then follows the viewing direction in that frame (gain 0.5 showed pooled
            # colour statistics one Euler angle of three; gain 1 shows the other two as well, a little).
            albedo = torch.lerp(albedo, (0.5 + nrm_obj).clamp_(0.0, 1.0), paint)
        lh, spot_h = _spot(rot @ ph, light)
        diff = _dot(nrm, lh).clamp_min(0.0) * spot_h
        spec = 0.3 * _dot(nrm, _unit(lh - dw)).clamp_min(0.0) ** 24 * spot_h
        bounce = 0.25 * (-nrm[:, 2:3]).clamp_min(0.0) * floor_rgb    # light off the floor
        col = albedo * (AMBIENT + bounce + diff[:, None] * light_rgb) + spec[:, None] * light_rgb
        img.scatter_(2, hidx[:, None].expand(-1, 3, -1), torch.where(hvalid[:, None], col, take(img, hidx)))
    img = img.clamp_(0.0, 1.0).pow_(1 / 1.5)  # mild gamma: lifts the ambient-only shadows and the far floor
    return img.mul_(255.0).add_(0.5).to(torch.uint8).view(n, 3, size, size)


@contextmanager
def _one_thread_if(cond: bool):
    """Small CPU renders run on one thread (then restored): their small ops gain nothing from threads, and on an
    oversubscribed CPU every op's barrier can stall a scheduler slice (1 view at 32 px: 40 ms vs 300+ ms)."""
    old = torch.get_num_threads()
    if not cond or old == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def render(parts: Parts, rot: Tensor, *, floor_rgb: Tensor, light_angles: Tensor, light_rgb: Tensor, size: int,
           steps: int | None = None, shadows: bool = True, paint: float = 0.0, max_rays: int = 1 << 17) -> Tensor:
    """Render ``n`` views: uint8 ``[n, 3, size, size]`` on the device of ``parts``.

    ``rot`` [n, 3, 3] rotates each object (object -> world frame); ``floor_rgb`` and ``light_rgb`` [n, 3] are
    colours in [0, 1]; ``light_angles`` [n, 2] is the spot's (theta from vertical, phi azimuth) in radians.
    ``steps`` caps the march (default grows with ``size``); ``shadows`` adds the object's soft floor shadow;
    views are rendered in chunks of at most ``max_rays`` pixels to bound memory.
    """
    size = int(size)
    steps = steps or (24 if size <= 32 else 32 if size <= 64 else 40)
    n = rot.shape[0]
    if n == 0:
        return torch.zeros(0, 3, size, size, dtype=torch.uint8, device=parts.center.device)
    chunk = max(1, max_rays // (size * size))
    with _one_thread_if(parts.center.device.type == "cpu" and min(n, chunk) * size * size <= SMALL_RENDER):
        if n <= chunk:
            return _render_chunk(parts, rot, floor_rgb, light_angles, light_rgb, size, steps, shadows, paint)
        # Chunks of views with similar part counts waste less work on empty part slots.
        order = torch.argsort(parts.present.sum(1), stable=True)
        parts, rot, floor_rgb, light_angles, light_rgb = (x[order] for x in (parts, rot, floor_rgb, light_angles,
                                                                             light_rgb))
        out = torch.cat([_render_chunk(parts[i:i + chunk], rot[i:i + chunk], floor_rgb[i:i + chunk],
                                       light_angles[i:i + chunk], light_rgb[i:i + chunk], size, steps, shadows, paint)
                         for i in range(0, n, chunk)])
    return out[torch.argsort(order)]
