"""Classical saliency, fixation sampling and inhibition of return (IoR), batched in torch on any device.

The paper samples saccade targets from DeepGaze IIE maps of STL-10 (a deep model we do not ship). When no
precomputed map is given, a classical bottom-up model stands in for it:

- ``"contrast"``: multi-scale centre-surround contrast of intensity and colour-opponent channels with Itti's
  map normalisation (Itti, Koch & Niebur 1998), which favours maps with few strong peaks;
- ``"spectral"``: the spectral residual of the log-amplitude spectrum (Hou & Zhang 2007).

Where the objects' places are known (the procedural scenes), ``object_saliency`` puts the mass on them instead:
people fixate objects more than bottom-up saliency predicts (Einhäuser, Spain & Perona 2008), and DeepGaze, the
paper's map, models their fixations; a bottom-up map finds clutter as salient as the object.

Maps are probability maps ``[N, H, W]`` summing to 1, with a small uniform ``floor`` so that no pixel is
unreachable. Fixations are one multinomial draw (by inverse CDF) over the pixels of ``saliency * (1 - inhibition)``.

>>> images = torch.full((1, 3, 48, 48), 100, dtype=torch.uint8)
>>> images[0, 0, 30:36, 10:16] = 255                       # a red blob
>>> sal = classical_saliency(images)
>>> row, col = divmod(int(sal[0].argmax()), 48)
>>> 26 <= row <= 40 and 6 <= col <= 20
True
>>> g = torch.Generator().manual_seed(0)
>>> r, c = sample_fixations(sal, torch.zeros(1, 48, 48, dtype=torch.bool), g)
>>> mask = inhibit(torch.zeros(1, 48, 48, dtype=torch.bool), r, c, radius=16)
>>> bool(mask[0, r[0], c[0]])
True
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from .base import prunes_work

__all__ = ["classical_saliency", "contrast_saliency", "spectral_saliency", "object_saliency", "to_probability",
           "sample_fixations", "inhibit"]

Method = Literal["contrast", "spectral"]


def classical_saliency(images: Tensor, method: Method = "contrast", floor: float = 0.02,
                       chunk: int = 256) -> Tensor:
    """Saliency probability maps float [N, H, W] of ``images`` (uint8 or float in [0, 1], [N, 3, H, W]).

    Computed in chunks of ``chunk`` images on the images' device.
    """
    fn = {"contrast": contrast_saliency, "spectral": spectral_saliency}.get(method)
    if fn is None:
        raise ValueError(f"saliency method: got {method!r}; allowed: 'contrast', 'spectral'")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images: got shape {tuple(images.shape)}; expected [N, 3, H, W]")
    parts = [to_probability(fn(_as_float(images[s:s + chunk])), floor) for s in range(0, len(images), chunk)]
    return torch.cat(parts) if parts else images.new_zeros(0, *images.shape[2:], dtype=torch.float32)


def object_saliency(centres: Tensor, radii: Tensor, size: int) -> Tensor:
    """Probability maps float [N, size, size] of a Gaussian on each object: ``centres`` [N, 2] (row, col) and
    ``radii`` [N] in fractions of the side, sigma half the radius. No uniform floor: every fixation is on or near
    the object (inhibition of return then spreads them over it; a smaller ``ior_radius`` keeps them there).

    >>> maps = object_saliency(torch.tensor([[0.25, 0.75]]), torch.tensor([0.2]), 32)
    >>> divmod(int(maps[0].argmax()), 32), round(float(maps.sum()), 4)
    ((7, 23), 1.0)
    """
    t = (torch.arange(size, device=centres.device, dtype=torch.float32) + 0.5) / size   # pixel centres
    sigma = 0.5 * radii.float()[:, None, None]
    d2 = (t[None, :, None] - centres[:, 0, None, None]) ** 2 + (t[None, None, :] - centres[:, 1, None, None]) ** 2
    return to_probability(torch.exp(-d2 / (2 * sigma ** 2)) + 1e-12)


def to_probability(maps: Tensor, floor: float = 0.0) -> Tensor:
    """Non-negative maps [N, H, W] -> probability maps summing to 1, mixed with ``floor`` of uniform mass."""
    m = maps.float().clamp_min(0)
    total = m.flatten(1).sum(1)[:, None, None]
    uniform = torch.full_like(m, 1.0 / (m.shape[-1] * m.shape[-2]))
    p = torch.where(total > 0, m / total.clamp_min(1e-30), uniform)  # an all-zero map becomes uniform
    return (1 - floor) * p + floor * uniform


def _as_float(images: Tensor) -> Tensor:
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


def _opponent(x: Tensor) -> Tensor:
    """RGB [N, 3, H, W] -> intensity, red-green and blue-yellow channels."""
    r, g, b = x.unbind(1)
    return torch.stack([(r + g + b) / 3, r - g, b - (r + g) / 2], 1)


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of [N, C, H, W] with reflected borders (no dark rim at the image edge)."""
    radius = max(1, min(int(math.ceil(3 * sigma)), min(x.shape[-2:]) - 1))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _itti_normalise(m: Tensor) -> Tensor:
    """Itti's N(.): scale each map [N, C, h, w] to max 1, then weight by (1 - mean of its other local maxima)^2."""
    m = m / m.flatten(2).amax(2).clamp_min(1e-12)[..., None, None]
    peaks = (m == F.max_pool2d(m, 3, 1, 1)) & (m > 0.05)
    mean_peak = (m * peaks).flatten(2).sum(2) / peaks.flatten(2).sum(2).clamp_min(1)
    return m * ((1 - mean_peak) ** 2)[..., None, None]


def contrast_saliency(x: Tensor) -> Tensor:
    """Centre-surround contrast saliency (unnormalised) of float images [N, 3, H, W] -> [N, H, W]."""
    h, w = x.shape[-2:]
    feat = _opponent(x)
    level = lambda k: F.interpolate(feat, size=(max(1, h >> k), max(1, w >> k)), mode="area")  # noqa: E731
    pyramid = {k: level(k) for k in (1, 2, 3, 4)}
    out = (max(1, h >> 2), max(1, w >> 2))  # maps are compared at a quarter of the resolution: cheap, smooth
    up = lambda t: F.interpolate(t, size=out, mode="bilinear", align_corners=False)  # noqa: E731
    cs = sum(_itti_normalise((up(pyramid[c]) - up(pyramid[s])).abs()) for c, s in ((1, 3), (1, 4), (2, 3), (2, 4)))
    intensity, colour = cs[:, :1], cs[:, 1:].sum(1, keepdim=True)
    sal = _itti_normalise(intensity) + _itti_normalise(colour)
    sal = _gaussian_blur(sal, sigma=max(out) / 24)
    return F.interpolate(sal, size=(h, w), mode="bilinear", align_corners=False)[:, 0]


def spectral_saliency(x: Tensor, size: int = 64) -> Tensor:
    """Spectral-residual saliency (unnormalised) of float images [N, 3, H, W] -> [N, H, W]."""
    h, w = x.shape[-2:]
    feat = F.interpolate(_opponent(x), size=(size, size), mode="area")
    spec = torch.fft.fft2(feat)
    log_amp = torch.log(spec.abs() + 1e-8)
    residual = log_amp - F.avg_pool2d(log_amp, 3, 1, 1, count_include_pad=False)
    sal = torch.fft.ifft2(torch.exp(torch.complex(residual, spec.angle()))).abs() ** 2
    sal = _gaussian_blur(sal.sum(1, keepdim=True), sigma=size / 24)
    return F.interpolate(sal, size=(h, w), mode="bilinear", align_corners=False)[:, 0]


def sample_fixations(saliency: Tensor, inhibition: Tensor | None, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """One fixation per map from ``saliency * (1 - inhibition)`` ([N, H, W] each); returns (row, col), long [N].

    Where inhibition leaves no salient mass, the draw is uniform over the uninhibited pixels; where everything is
    inhibited, from the saliency alone (IoR memory exhausted), and for an all-zero map, uniform.
    """
    n, h, w = saliency.shape
    sal = rearrange(saliency, "n h w -> n (h w)").float()
    allowed = torch.ones_like(sal, dtype=torch.bool) if inhibition is None else \
        ~rearrange(inhibition.bool(), "n h w -> n (h w)")
    zero = torch.zeros((), device=sal.device)
    weights = torch.where(allowed & (sal > 0), sal, zero)
    cdf = weights.cumsum(1)
    empty = cdf[:, -1] <= 0
    # Rare (IoR covered all salient pixels): redo those rows with the fallbacks. A GPU always runs this (cheap)
    # rather than read ``empty`` on the host.
    if not prunes_work(sal.device) or bool(empty.any()):
        for fallback in (allowed.float(), torch.where(sal > 0, sal, zero), torch.ones_like(sal)):
            weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, fallback)
        cdf = weights.cumsum(1)
    # Inverse-CDF draw: the same multinomial, ~40x faster than torch.multinomial over 9216 pixels on a CPU.
    # u lies in (0, total], so the first pixel whose running sum reaches u always has positive weight.
    u = (1 - torch.rand(n, 1, generator=generator, device=cdf.device)) * cdf[:, -1:]
    idx = torch.searchsorted(cdf, u)[:, 0].clamp_(max=h * w - 1)
    return idx // w, idx % w


def inhibit(mask: Tensor, row: Tensor, col: Tensor, radius: float = 16,
            shape: Literal["circle", "square", "none"] = "circle") -> Tensor:
    """``mask`` (bool [N, H, W]) with the region around pixel (row, col) [N] marked: IoR after a fixation.

    ``circle``: pixels within Euclidean distance ``radius`` (the paper); ``square``: within ``radius`` along both
    axes, a (2 radius + 1)-pixel box (the official code); ``none``: unchanged. Positions may be fractional.
    """
    if shape == "none":
        return mask
    h, w = mask.shape[-2:]
    dr = torch.arange(h, device=mask.device)[None, :, None] - row.to(mask.device, torch.float32)[:, None, None]
    dc = torch.arange(w, device=mask.device)[None, None, :] - col.to(mask.device, torch.float32)[:, None, None]
    if shape == "circle":
        hit = dr * dr + dc * dc <= radius * radius
    elif shape == "square":
        hit = (dr.abs() <= radius) & (dc.abs() <= radius)
    else:
        raise ValueError(f"ior shape: got {shape!r}; allowed: 'circle', 'square', 'none'")
    return mask | hit
