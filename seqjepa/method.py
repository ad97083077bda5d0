"""The one interface of every method, seq-JEPA and the baselines: :class:`Method` and its forward :class:`Output`.

What the trainer, checkpoints, evaluation and planners use, and nothing else:

==========================  ==========================================================================================
``encoder``, ``dim``        the ResNet f and the width D of its outputs z (the equivariant representation)
``hparams``                 the constructor's arguments, defaults filled in, recorded by :class:`Method` itself:
                            ``type(model)(**model.hparams)`` rebuilds it (a checkpoint stores them)
``prepare``, ``encode``     uint8 views [B, T, 3, H, W] → normalised images → z [B, T, D]
``encode_target``           the target encoder f̄ (EMA copy, or f under no_grad), [B, T, 3, H, W] → [B, T, D]
``forward``                 (views, actions) → :class:`Output`
``update_target``           one EMA step of every (online, target) pair registered with :meth:`Method.add_target`
``param_groups``            AdamW groups: decay on weight matrices only
``predicts``                capability: ``aggregate`` → z_agg [B, agg_dim], ``predict`` ẑ from z_agg and e(a_M),
                            ``embed_actions`` (seq-JEPA); False for encoder-only methods
``action_embed``            the action projection, or None: the method takes no actions (or ``act_cond=none``)
``agg_dim``                 width of the representation the online class probe reads (z_agg, else z)
``model_settings``          the ``model.*`` settings the constructor takes; ``Options`` its own (method_options)
==========================  ==========================================================================================

>>> import torch
>>> class Identity(Method):                          # the smallest method: a loss on the first view's z
...     def forward(self, views, actions):
...         z = self.encode(views)
...         return Output(loss=z.pow(2).mean(), z=z)
>>> m = Identity(depth=10, width=8, stem="cifar")
>>> out = m(torch.randint(0, 256, (2, 2, 3, 32, 32), dtype=torch.uint8), torch.zeros(2, 1, 4))
>>> out["z"].shape, m.predicts, m.agg_dim
(torch.Size([2, 2, 64]), False, 64)
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Sequence
from typing import ClassVar, TypedDict

import torch
from einops import rearrange
from torch import nn

from seqjepa.encoder import ResNet, prepare_views


class Output(TypedDict, total=False):
    """What ``forward`` returns. ``loss`` and ``z`` always; the rest where the method has them."""
    loss: torch.Tensor     # scalar, to minimise
    z: torch.Tensor        # [B, T, D] online encoder outputs of the views the loss used (with grad)
    z_agg: torch.Tensor    # [B, agg_dim] seq-JEPA's aggregate of the observed views
    z_hat: torch.Tensor    # [B, D] the predicted embedding of the target view
    target: torch.Tensor   # [B, D] the target encoder's embedding of the target view


def _plain(value):
    """A constructor argument as a checkpoint stores it: tuples as lists, numbers and strings as they are."""
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def normalisation_from_buffers(module: nn.Module, incompatible_keys=None) -> None:
    """load_state_dict post-hook: ``hparams`` mean/std follow the loaded buffers.

    A resumed run keeps the normalisation its weights were trained with, even where its world now declares another
    one, and the checkpoints it writes next must say so."""
    module.hparams["mean"] = [float(v) for v in module.mean.flatten().tolist()]
    module.hparams["std"] = [float(v) for v in module.std.flatten().tolist()]


class Method(nn.Module):
    """Base class of every method: a ResNet encoder, input normalisation, EMA targets and AdamW groups.

    Subclasses call ``super().__init__`` with the encoder settings, build their heads, register EMA pairs with
    :meth:`add_target` and implement ``forward``. Their constructors take keyword arguments only; once the
    outermost one returns, ``hparams`` holds its arguments (tuples as lists), so nothing lists them twice.
    """

    predicts: ClassVar[bool] = False
    no_decay: ClassVar[tuple[str, ...]] = ()  # parameter-name suffixes kept out of weight decay besides 1-d ones
    # The model.* settings (seqjepa.config.ModelConfig) this method takes, where its constructor has them; a
    # baseline's own settings are its ``Options`` dataclass (model.method_options), seq-JEPA has none.
    model_settings: ClassVar[tuple[str, ...]] = ("depth", "width", "stem", "act_dim", "ema")
    Options: ClassVar[type | None] = None
    PRESETS: ClassVar[dict[str, dict]] = {}

    def __init__(self, *, depth: int = 18, width: int = 64, stem: str = "imagenet",
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.25, 0.25, 0.25)):
        super().__init__()
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB); got {mean!r} and {std!r}")
        self.encoder = ResNet(depth=depth, width=width, stem=stem, zero_init_residual=True)
        self.dim = self.encoder.out_dim
        self.action_embed: nn.Module | None = None
        self.channels_last = False  # set by the trainer; prepare() then hands the encoder channels_last images
        self.ema_pairs: list[tuple[str, str]] = []  # (online, target) attribute names, updated by update_target
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, 3, 1, 1))
        self.register_load_state_dict_post_hook(normalisation_from_buffers)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording(self, *args, **kw):
            init(self, *args, **kw)
            if type(self).__init__ is recording:  # a subclass's constructor records its own arguments
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                self.hparams = {k: _plain(v) for k, v in list(bound.arguments.items())[1:]}

        cls.__init__ = recording

    @property
    def agg_dim(self) -> int:
        return self.dim

    def prepare(self, views: torch.Tensor) -> torch.Tensor:
        """uint8 [B, T, 3, H, W] → normalised float [B·T, 3, H, W] on the model's device."""
        return prepare_views(views, self.mean, self.std, self.channels_last)

    def encode(self, views: torch.Tensor) -> torch.Tensor:
        """Online encoder: uint8 [B, T, 3, H, W] → z [B, T, D]. All B·T views form one BatchNorm batch."""
        return rearrange(self.encoder(self.prepare(views)), "(b t) d -> b t d", b=views.shape[0])

    def encode_views(self, views: torch.Tensor) -> torch.Tensor:
        """Online encoder, one call per view as the official baselines' ``encoder(x1)``, ``encoder(x2)``: uint8
        [B, T, 3, H, W] → z [B, T, D]; in train mode each view is its own BatchNorm batch of B rows."""
        return torch.stack([self.encoder(self.prepare(views[:, t:t + 1])) for t in range(views.shape[1])], dim=1)

    @torch.no_grad()
    def encode_target(self, views: torch.Tensor) -> torch.Tensor:
        """Target encoder (the EMA copy, or the online encoder when EMA is off), no gradient: uint8
        [B, T, 3, H, W] → [B, T, D]. All B·T views form one BatchNorm batch."""
        return rearrange(self.target("encoder")(self.prepare(views)), "(b t) d -> b t d", b=views.shape[0])

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
        """θ_t ← τ·θ_t + (1−τ)·θ over parameters; no-op without EMA targets.

        BatchNorm buffers of a target stay its own (it runs in train mode on its inputs, as the official code).
        """
        for online, target in self.ema_pairs:
            t, o = list(getattr(self, target).parameters()), list(getattr(self, online).parameters())
            torch._foreach_mul_(t, tau)
            torch._foreach_add_(t, o, alpha=1.0 - tau)

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay on weight matrices/kernels only; none on biases, norms, other 1-d parameters and
        those whose names end with one of ``no_decay``."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or name.endswith(self.no_decay) else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    @staticmethod
    def check_views(views: torch.Tensor, actions: torch.Tensor, need: int, name: str) -> None:
        if views.shape[1] < need:
            raise ValueError(f"{name} needs at least {need} views per sequence (train.seq_len >= {need - 1}); "
                             f"got {views.shape[1]}")
        if actions.shape[:2] != (views.shape[0], views.shape[1] - 1):
            raise ValueError(f"actions must be [B, T-1, A] for {views.shape[1]} views; got {tuple(actions.shape)}")
