"""What every baseline shares: the encoder and its input handling, projector MLPs, EMA targets, options, NT-Xent.

A baseline subclasses :class:`Method`, which gives it the interface the trainer, checkpoints and evaluation use
(the same as :class:`seqjepa.model.SeqJEPA`): ``encoder``, ``dim``, ``channels_last``, ``prepare``, ``encode``,
``update_target``, ``param_groups`` and ``hparams``. The subclass adds its heads and ``forward``.

>>> import torch
>>> head = projector(64, [128, 32])            # Linear-BN-ReLU, Linear-BN(affine=False)
>>> head(torch.randn(8, 64)).shape
torch.Size([8, 32])
>>> a, b = torch.randn(8, 32), torch.randn(8, 32)
>>> float(nt_xent(a, b, temperature=0.5)) > 0
True
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from seqjepa.config import set_field, validate
from seqjepa.encoder import ResNet, prepare_views
from seqjepa.model import normalisation_from_buffers

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

    Every value is checked by :func:`seqjepa.config.set_field`, so a bad one names ``model.method_options.KEY``.
    """
    opts = options_cls()
    validate(opts, "model.method_options.")
    for source in (presets.get(preset, {}), overrides or {}):
        for key, value in source.items():
            set_field(opts, key, value, "model.method_options.")
    return opts


# -- the shared network --------------------------------------------------------------------------------------------


class Method(nn.Module):
    """Base class of the baselines: a ResNet encoder, input normalisation, EMA targets and AdamW groups.

    Subclasses call ``super().__init__`` with the encoder settings, build their heads, register EMA pairs with
    :meth:`add_target`, set ``self.hparams`` to their constructor kwargs and implement ``forward``.
    """

    def __init__(self, *, depth: int = 18, width: int = 64, stem: str = "imagenet",
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.25, 0.25, 0.25)):
        super().__init__()
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB); got {mean!r} and {std!r}")
        self.encoder = ResNet(depth=depth, width=width, stem=stem, zero_init_residual=True)
        self.dim = self.encoder.out_dim
        self.channels_last = False  # set by the trainer; prepare() then hands the encoder channels_last images
        self.ema_pairs: list[tuple[str, str]] = []  # (online, target) attribute names, updated by update_target
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, 3, 1, 1))
        self.register_load_state_dict_post_hook(normalisation_from_buffers)

    def encoder_hparams(self) -> dict:
        return dict(depth=self.encoder.depth, width=self.encoder.width, stem=self.encoder.stem,
                    mean=self.mean.flatten().tolist(), std=self.std.flatten().tolist())

    def prepare(self, views: torch.Tensor) -> torch.Tensor:
        """uint8 [B, T, 3, H, W] → normalised float [B·T, 3, H, W] on the model's device (as SeqJEPA.prepare)."""
        return prepare_views(views, self.mean, self.std, self.channels_last)

    def encode(self, views: torch.Tensor) -> torch.Tensor:
        """Online encoder: uint8 [B, T, 3, H, W] → z [B, T, D]. All B·T views form one BatchNorm batch."""
        return rearrange(self.encoder(self.prepare(views)), "(b t) d -> b t d", b=views.shape[0])

    def encode_views(self, views: torch.Tensor) -> torch.Tensor:
        """Online encoder, one call per view as the official baselines' ``encoder(x1)``, ``encoder(x2)``: uint8
        [B, T, 3, H, W] → z [B, T, D]; in train mode each view is its own BatchNorm batch of B rows."""
        return torch.stack([self.encoder(self.prepare(views[:, t:t + 1])) for t in range(views.shape[1])], dim=1)

    def add_target(self, name: str, enabled: bool = True) -> None:
        """Register an EMA copy ``target_<name>`` of module ``name`` (no gradient); ``enabled=False`` makes the
        target the online module itself — read it under no_grad, so it is still a stop-gradient target."""
        target = copy.deepcopy(getattr(self, name)).requires_grad_(False) if enabled else None
        setattr(self, f"target_{name}", target)
        if enabled:
            self.ema_pairs.append((name, f"target_{name}"))

    def target(self, name: str) -> nn.Module:
        """The target network of ``name``: its EMA copy, or the online module when EMA is off."""
        target = getattr(self, f"target_{name}", None)
        return getattr(self, name) if target is None else target

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """θ_t ← τ·θ_t + (1−τ)·θ over parameters, as SeqJEPA.update_target; no-op without EMA targets.

        BatchNorm buffers of a target stay its own (it runs in train mode on its inputs, as the official code).
        """
        for online, target in self.ema_pairs:
            t, o = list(getattr(self, target).parameters()), list(getattr(self, online).parameters())
            torch._foreach_mul_(t, tau)
            torch._foreach_add_(t, o, alpha=1.0 - tau)

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay on weight matrices/kernels only; none on biases, norms and other 1-d parameters."""
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    @staticmethod
    def check_views(views: torch.Tensor, actions: torch.Tensor, need: int, name: str) -> None:
        if views.shape[1] < need:
            raise ValueError(f"{name} needs at least {need} views per sequence (train.seq_len >= {need - 1}); "
                             f"got {views.shape[1]}")
        if actions.shape[:2] != (views.shape[0], views.shape[1] - 1):
            raise ValueError(f"actions must be [B, T-1, A] for {views.shape[1]} views; got {tuple(actions.shape)}")
