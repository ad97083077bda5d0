"""The baselines of the paper (§3.1), in the same harness as seq-JEPA: one training loop, checkpoint and evaluation.

Every method has seq-JEPA's interface (``encoder``, ``dim``, ``encode``, ``forward(views, actions) -> {loss, z}``,
``update_target``, ``param_groups``, ``hparams``) on the same ResNet encoder; only its heads and loss differ. Pick one
with ``model.method`` (or ``run.py train --method NAME``); its own settings live in ``model.method_options``, on top
of the method's preset for the run's preset (``paper`` = the published settings, ``cpu``/``smoke`` = narrower heads).

    python run.py train --method simclr                        # cpu preset, rotating-objects world
    python run.py train --method sie --preset paper            # the published settings, for a GPU
    python run.py train --method equimod --set model.method_options.temperature=0.2

>>> from seqjepa.config import preset
>>> cfg = preset("smoke"); cfg.model.method = "byol"
>>> model = build(cfg.model, action_dim=4, preset=cfg.preset)
>>> type(model).__name__, model.hparams["proj_dims"]
('BYOL', [64, 64, 64])
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence

from torch import nn

from seqjepa.config import ModelConfig
from seqjepa.options import ConfigError
from seqjepa.model import ActionBN, SeqJEPA
from seqjepa.registry import Registry

from .byol import BYOL
from .common import resolve_options
from .cond_byol import CondBYOL
from .conv_jepa import ConvJEPA
from .equimod import EquiMod
from .sen import SEN
from .sie import SIE
from .simclr import SimCLR
from .vicreg import VICReg
from .vicreg_traj import VICRegTraj

# model.method -> the class a checkpoint's ``model_hparams`` rebuild: ``METHODS[name](**hparams)``. The names are
# known here only: the config layer below cannot import the networks, so ``model.method`` is checked when a network
# is built (:func:`method_class`), and run.py fills its help from this registry.
METHODS: Registry[type[nn.Module]] = Registry("method", "model.method", {
    "seqjepa": SeqJEPA,
    "simclr": SimCLR,
    "byol": BYOL,
    "vicreg": VICReg,
    "vicreg_traj": VICRegTraj,
    "sen": SEN,
    "equimod": EquiMod,
    "sie": SIE,
    "cond_byol": CondBYOL,
    "conv_jepa": ConvJEPA,
})

def method_class(name: str) -> type[nn.Module]:
    """The class ``model.method`` names; ConfigError naming the setting and the methods if it names none.

    >>> method_class("nope")
    Traceback (most recent call last):
    ...
    seqjepa.options.ConfigError: model.method: unknown method 'nope'; allowed: seqjepa, simclr, byol, vicreg, \
vicreg_traj, sen, equimod, sie, cond_byol, conv_jepa
    """
    return METHODS[name]


def options(cfg: ModelConfig, preset: str = "paper"):
    """The resolved ``Options`` of ``cfg.method`` (None for a method without, seq-JEPA); raises ConfigError on a
    bad option."""
    cls = method_class(cfg.method)
    if cls.Options is None:
        if cfg.method_options:
            raise ConfigError(f"model.method_options: got {cfg.method_options!r}; {cfg.method} takes none (its "
                              f"settings are the model.* keys)")
        return None
    return resolve_options(cls.Options, cls.PRESETS, preset, cfg.method_options)


def build(cfg: ModelConfig, *, action_dim: int, preset: str = "paper", mean: Sequence[float] = (0.5, 0.5, 0.5),
          std: Sequence[float] = (0.25, 0.25, 0.25), action_bn: ActionBN = "3diebench") -> nn.Module:
    """The network ``cfg.method`` names, for a world with ``action_dim``-d actions, with ``preset``'s head sizes.

    ``mean``/``std`` normalise the views (the world's ``pixel_mean``/``pixel_std``); ``action_bn`` is seq-JEPA's
    action batching in training (see :class:`SeqJEPA`): the baselines have one way each, the official one.
    """
    opts = options(cfg, preset)
    cls = method_class(cfg.method)
    params = inspect.signature(cls).parameters
    kwargs = {k: getattr(cfg, k) for k in cls.model_settings if k in params}
    kwargs |= {k: v for k, v in (("action_dim", action_dim), ("action_bn", action_bn)) if k in params}
    return cls(**kwargs, **(dataclasses.asdict(opts) if opts else {}), mean=mean, std=std)


__all__ = ["BYOL", "CondBYOL", "ConvJEPA", "EquiMod", "METHODS", "SEN", "SIE", "SimCLR", "VICReg",
           "VICRegTraj", "build", "method_class", "options"]
