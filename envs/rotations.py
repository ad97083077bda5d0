"""Batched rotation helpers in torch: Euler angles, rotation matrices and quaternions.

Conventions follow scipy so that numbers match the official 3DIEBench code: Euler angles are *extrinsic* "xyz"
(scipy's lowercase ``'xyz'``), i.e. ``R = Rz(c) @ Ry(b) @ Rx(a)`` for angles ``(a, b, c)``, and quaternions are
scalar-last ``(x, y, z, w)``. Every function accepts any leading dimensions and works on any device.

>>> e = torch.tensor([[0.3, -0.2, 1.0]])
>>> R = euler_to_matrix(e)
>>> torch.allclose(matrix_to_euler(R), e, atol=1e-5)
True
>>> q = matrix_to_quat(R)
>>> torch.allclose(quat_to_matrix(q), R, atol=1e-5)
True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["euler_to_matrix", "matrix_to_euler", "alternate_euler", "matrix_to_quat", "quat_to_matrix",
           "canonical_quat", "quat_multiply", "normalize_quat", "random_quat", "sample_euler", "in_euler_box"]


def euler_to_matrix(e: Tensor) -> Tensor:
    """Extrinsic "xyz" Euler angles ``[..., 3]`` (radians) -> rotation matrices ``[..., 3, 3]``."""
    a, b, c = e.unbind(-1)
    ca, sa, cb, sb, cc, sc = a.cos(), a.sin(), b.cos(), b.sin(), c.cos(), c.sin()
    # The closed form of Rz(c) @ Ry(b) @ Rx(a), written out to avoid three batched matmuls.
    rows = [
        cc * cb, cc * sb * sa - sc * ca, cc * sb * ca + sc * sa,
        sc * cb, sc * sb * sa + cc * ca, sc * sb * ca - cc * sa,
        -sb, cb * sa, cb * ca,
    ]
    return torch.stack(rows, -1).reshape(*e.shape[:-1], 3, 3)


def matrix_to_euler(R: Tensor) -> Tensor:
    """Rotation matrices ``[..., 3, 3]`` -> extrinsic "xyz" Euler angles ``[..., 3]``, principal range.

    The middle angle lies in [-pi/2, pi/2], the others in (-pi, pi]. At gimbal lock (middle angle +-pi/2) the
    first angle is set to 0, as scipy does, so the result is always finite.
    """
    r20 = R[..., 2, 0].clamp(-1.0, 1.0)
    cb = torch.sqrt(R[..., 0, 0] ** 2 + R[..., 1, 0] ** 2)
    # atan2 instead of asin keeps full precision near +-pi/2.
    b = torch.atan2(-r20, cb)
    locked = cb < 1e-6
    a = torch.where(locked, torch.zeros_like(b), torch.atan2(R[..., 2, 1], R[..., 2, 2]))
    c = torch.where(locked, torch.atan2(-R[..., 0, 1], R[..., 1, 1]), torch.atan2(R[..., 1, 0], R[..., 0, 0]))
    return torch.stack([a, b, c], -1)


def alternate_euler(e: Tensor) -> Tensor:
    """The other Euler triple of the same rotation: ``(a +- pi, +-pi - b, c +- pi)``, wrapped to (-pi, pi].

    Every rotation (away from gimbal lock) has two "xyz" triples in (-pi, pi]^3: the principal one, with the middle
    angle in [-pi/2, pi/2], and this one. A triple with all three angles inside (-pi/2, pi/2) maps to one with all
    three outside it, which is how the 3DIEBench-OOD angle range is expressed.
    """
    a, b, c = e.unbind(-1)
    pi = math.pi
    sgn = lambda x: torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))  # noqa: E731 (sign(0) = +1)
    return torch.stack([a - sgn(a) * pi, sgn(b) * pi - b, c - sgn(c) * pi], -1)


def normalize_quat(q: Tensor, eps: float = 1e-8) -> Tensor:
    """Unit quaternions ``[..., 4]`` (x, y, z, w); a (near-)zero quaternion becomes the identity."""
    norm = q.norm(dim=-1, keepdim=True)
    identity = torch.zeros_like(q)
    identity[..., 3] = 1.0
    return torch.where(norm > eps, q / norm.clamp_min(eps), identity)


def quat_to_matrix(q: Tensor) -> Tensor:
    """Quaternions ``[..., 4]`` scalar-last (normalised here; zero -> identity) -> rotation matrices."""
    x, y, z, w = normalize_quat(q).unbind(-1)
    xx, yy, zz, xy, xz, yz, wx, wy, wz = x * x, y * y, z * z, x * y, x * z, y * z, w * x, w * y, w * z
    rows = [
        1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy),
        2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx),
        2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy),
    ]
    return torch.stack(rows, -1).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quat(R: Tensor) -> Tensor:
    """Rotation matrices ``[..., 3, 3]`` -> unit quaternions (x, y, z, w), robust at 180 degrees.

    Shepperd's method: of the four algebraically equivalent formulas, use the one with the largest (best
    conditioned) denominator for each matrix. The sign is whatever that formula gives; see canonical_quat.
    """
    m = R
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    # 4*w^2, 4*x^2, 4*y^2, 4*z^2 (up to clamping); the largest one is the safest pivot.
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    d = torch.stack([1 + tr, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    s = 2 * torch.sqrt(d.clamp_min(1e-12))  # [..., 4]
    r21, r12, r02, r20, r10, r01 = m[..., 2, 1], m[..., 1, 2], m[..., 0, 2], m[..., 2, 0], m[..., 1, 0], m[..., 0, 1]
    cand = torch.stack([
        torch.stack([(r21 - r12) / s[..., 0], (r02 - r20) / s[..., 0], (r10 - r01) / s[..., 0], s[..., 0] / 4], -1),
        torch.stack([s[..., 1] / 4, (r01 + r10) / s[..., 1], (r02 + r20) / s[..., 1], (r21 - r12) / s[..., 1]], -1),
        torch.stack([(r01 + r10) / s[..., 2], s[..., 2] / 4, (r12 + r21) / s[..., 2], (r02 - r20) / s[..., 2]], -1),
        torch.stack([(r02 + r20) / s[..., 3], (r12 + r21) / s[..., 3], s[..., 3] / 4, (r10 - r01) / s[..., 3]], -1),
    ], -2)  # [..., 4 candidates, 4]
    best = d.argmax(-1, keepdim=True)[..., None].expand(*d.shape[:-1], 1, 4)
    q = cand.gather(-2, best).squeeze(-2)
    return q / q.norm(dim=-1, keepdim=True)


def canonical_quat(q: Tensor) -> Tensor:
    """Flip the sign of quaternions (x, y, z, w) so that w >= 0 (q and -q are the same rotation)."""
    return torch.where(q[..., 3:] < 0, -q, q)


def quat_multiply(p: Tensor, q: Tensor) -> Tensor:
    """Hamilton product ``p * q`` of scalar-last quaternions: the rotation ``R(p) @ R(q)``."""
    px, py, pz, pw = p.unbind(-1)
    qx, qy, qz, qw = q.unbind(-1)
    return torch.stack([
        pw * qx + px * qw + py * qz - pz * qy,
        pw * qy - px * qz + py * qw + pz * qx,
        pw * qz + px * qy - py * qx + pz * qw,
        pw * qw - px * qx - py * qy - pz * qz,
    ], -1)


def random_quat(n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> Tensor:
    """``n`` rotations uniform on SO(3), as canonical quaternions ``[n, 4]`` (a normalised Gaussian)."""
    q = torch.randn(n, 4, generator=generator, device=device)
    return canonical_quat(normalize_quat(q))


def in_euler_box(R: Tensor, half_range: float) -> Tensor:
    """True where rotation ``R`` can be written with all three "xyz" Euler angles in (-half_range, half_range).

    Both Euler triples of the rotation are checked (see :func:`alternate_euler`), so this is a property of the
    rotation, not of how its angles happen to be written.
    """
    e = matrix_to_euler(R)
    return (e.abs() < half_range).all(-1) | (alternate_euler(e).abs() < half_range).all(-1)


# A rotation outside every Euler box of half-width <= pi/2: the half turn about x, (pi, 0, 0) = (0, pi, -pi).
_HALF_TURN_X = torch.tensor([math.pi, 0.0, 0.0])


def sample_euler(n: int, generator: torch.Generator, *, half_range: float = math.pi / 2, ood: bool = False,
                 device: torch.device | str = "cpu", candidates: int = 16) -> Tensor:
    """Euler angles ``[n, 3]`` as 3DIEBench samples them: each uniform in (-half_range, half_range).

    With ``ood`` the poses are uniform on SO(3) *outside* that set: rotations that no Euler triple in the box can
    write. 3DIEBench-OOD's own rule (each angle in (pi/2, pi) U (-pi, -pi/2)) is not used because it gives the very
    same rotations as (-pi/2, pi/2)^3: Rz(c+pi) Ry(pi-b) Rx(a+pi) = Rz(c) Ry(b) Rx(a) (tested). Sampling is by
    rejection without a host sync: ``candidates`` uniform rotations per row, the first outside the box kept; the
    box holds at most a quarter of SO(3), so all miss with probability <= 4**-candidates, and such a row gets the
    half turn about x, which lies outside every box.
    """
    if not ood:
        return (2 * torch.rand(n, 3, generator=generator, device=device) - 1) * half_range
    q = random_quat(n * candidates, generator, device).view(n, candidates, 4)
    R = quat_to_matrix(q)
    e, outside = matrix_to_euler(R), ~in_euler_box(R, half_range)
    first = outside.float().argmax(1)  # index of the first True; 0 when there is none
    pick = e.gather(1, first[:, None, None].expand(-1, 1, 3)).squeeze(1)
    return torch.where(outside.any(1, keepdim=True), pick, _HALF_TURN_X.to(pick))
