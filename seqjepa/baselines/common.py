"""What every baseline shares: the encoder and its input handling, projector MLPs, EMA targets, options, NT-Xent.

A baseline subclasses :class:`seqjepa.method.Method`, as :class:`seqjepa.model.SeqJEPA` does: the interface the
trainer, checkpoints and evaluation use. The subclass adds its heads and ``forward``.

>>> import torch
>>> head = projector(64, [128, 32])            # Linear-BN-ReLU, Linear-BN(affine=False)
>>> head(torch.randn(8, 64)).shape
torch.Size([8, 32])
>>> a, b = torch.randn(8, 32), torch.randn(8, 32)
>>> float(nt_xent(a, b, temperature=0.5)) > 0
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from seqjepa.options import set_field, validate

# -- heads ---------------------------------------------------------------------------------------------------------


def projector(in_dim: int, dims: Sequence[int], *, hidden_bias: bool = False, last_bias: bool = False,
              last_norm: bool = True) -> nn.Sequential:
    """MLP ``in_dim → dims[0] → … → dims[-1]``: (Linear, BN, ReLU) per hidden layer, then Linear [+ BN].

    The defaults are the SimCLR/BYOL/SEN/EquiMod heads of the official code (no biases, a final BatchNorm without
    affine); VICReg/SIE use ``hidden_bias=True, last_norm=False``; BYOL-style predictors ``last_bias=True,
    last_norm=False``.
    """
    if not dims:
        raise ValueError("projector: dims is empty; give at least the output width")
    layers: list[nn.Module] = []
    for d in dims[:-1]:
        layers += [nn.Linear(in_dim, d, bias=hidden_bias), nn.BatchNorm1d(d), nn.ReLU(inplace=True)]
        in_dim = d
    layers.append(nn.Linear(in_dim, dims[-1], bias=last_bias))
    if last_norm:
        layers.append(nn.BatchNorm1d(dims[-1], affine=False))
    return nn.Sequential(*layers)


def per_view(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a [N, D] → [N, K] head to [B, T, D] features as one batch of B·T rows → [B, T, K]."""
    return rearrange(head(rearrange(x, "b t d -> (b t) d")), "(b t) k -> b t k", b=x.shape[0])


def view_by_view(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a [N, D] → [N, K] head to [B, T, D] features once per view, T batches of B rows → [B, T, K].

    The official baselines call each head once per view (``projector(z1)``, ``projector(z2)``), so in train mode
    every view is normalised by its own BatchNorm statistics, and the running statistics see view 0, then view 1.
    """
    return torch.stack([head(x[:, t]) for t in range(x.shape[1])], dim=1)


def action_projector(action_dim: int, act_dim: int) -> nn.Sequential:
    """The "linear 128-d action projector" of SEN, EquiMod, Conditional BYOL and Conv-JEPA (as seq-JEPA's):
    a bias-free Linear whose output BatchNorm only standardises (no affine)."""
    return nn.Sequential(nn.Linear(action_dim, act_dim, bias=False), nn.BatchNorm1d(act_dim, affine=False))


# -- distributed-aware gathering and NT-Xent -------------------------------------------------------------------------


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` [N, …] from every process along dim 0, *with* gradients; ``x`` itself when not distributed.

    The official code gathers with plain ``dist.all_gather`` into fresh buffers, which carries no gradient, so its
    contrastive and variance/covariance terms were not trained across GPUs. The autograd-aware gather sends each
    rank its slice of the gradient back.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather
    return torch.cat(all_gather(x), dim=0)


def nt_xent(a: torch.Tensor, b: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent: (a_i, b_i) are positives, every other row of [a; b] a negative; mean over the 2N anchors.

    Rows are L2-normalised; similarities are divided by ``temperature``; computed in float32 (safe under bf16).
    """
    z = F.normalize(torch.cat([gather(a), gather(b)]).float(), dim=1)
    n = z.shape[0] // 2
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))  # no self-pairs
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, positives)


def cosine_regression(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """BYOL's normalised regression ‖p/‖p‖ − t/‖t‖‖² = 2 − 2·cos(p, t), averaged over the batch (float32)."""
    return 2.0 - 2.0 * F.cosine_similarity(p.float(), t.float(), dim=-1).mean()


# -- options -------------------------------------------------------------------------------------------------------


def resolve_options(options_cls: type, presets: dict[str, dict], preset: str, overrides: dict[str, Any]) -> Any:
    """The method's ``Options``: its defaults (the paper's settings), then ``presets[preset]``, then ``overrides``.

    Every value is checked by :func:`seqjepa.options.set_field`, so a bad one names ``model.method_options.KEY``.
    """
    opts = options_cls()
    validate(opts, "model.method_options.")
    for source in (presets.get(preset, {}), overrides or {}):
        for key, value in source.items():
            set_field(opts, key, value, "model.method_options.")
    return opts
