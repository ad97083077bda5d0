"""Compacting batches of rays: rows are views, columns rays; inactive columns are dropped between march steps.

Rows stay views, so per-view parameters keep broadcasting without gathers. Reading how many columns survive is a
host sync, so where work is not pruned (a GPU, see ``envs.prunes_work``) nothing is cut: every ray runs every
step under its mask instead.

>>> idx, valid = pack(torch.tensor([[False, True, True], [True, False, False]]))
>>> idx.tolist(), valid.tolist()
([[1, 2], [0, 1]], [[True, True], [True, False]])
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import prunes_work

__all__ = ["pack", "take", "repack"]


def pack(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Column indices putting each row's True entries first (stably), cut to the longest row: (idx [n, m], valid).

    Two cumulative sums and a scatter: linear time, unlike an argsort, and deterministic (positions are unique).
    Where work is not pruned (a GPU, see ``envs.prunes_work``) nothing is cut (m = r): no host sync.
    """
    n, r = mask.shape
    if not mask.numel():
        return torch.zeros(n, 0, dtype=torch.long, device=mask.device), mask[:, :0]
    ct = mask.cumsum(1)
    total = ct[:, -1:]
    pos = torch.where(mask, ct - 1, total + (~mask).cumsum(1) - 1)
    order = torch.empty_like(pos).scatter_(1, pos, torch.arange(r, device=mask.device).expand(n, r))
    m = int(total.max().item()) if prunes_work(mask.device) else r
    return order[:, :m], torch.arange(m, device=mask.device) < total


def take(x: Tensor, idx: Tensor) -> Tensor:
    """Gather rays ``idx`` [n, m] of ``x`` [n, r] or [n, c, r]."""
    if x.dim() == 2:
        return x.gather(1, idx)
    return x.gather(2, idx[:, None].expand(-1, x.shape[1], -1))


def repack(active: Tensor, idx: Tensor, saves: list, xs: list) -> tuple[Tensor, list] | None:
    """None once no ray is active; else ``(idx, xs)`` cut to the active rays if that drops >20% of the columns
    (fewer do not repay the gathers), after writing each ``(full_output, value)`` in ``saves`` back. Where work is
    not pruned (a GPU) every ray runs every step under its mask instead: no host sync."""
    if not prunes_work(idx.device):
        return idx, xs
    cnt = int(active.sum(1).max().item())
    if cnt == 0:
        return None
    if cnt >= 0.8 * idx.shape[1]:
        return idx, xs
    for full, value in saves:
        full.scatter_(1, idx, value)
    keep, _ = pack(active)
    return take(idx, keep), [take(x, keep) for x in xs]
