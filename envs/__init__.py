"""Worlds: Gymnasium environments that simulate an observer, plus the registry that names them.

Every world is registered once with :func:`register_world`, which makes it available three ways:
``gym.make(id)`` (numpy, one episode), ``gym.make_vec(id, num_envs=N)`` (numpy batches, like any Gymnasium vector
env; ``backend="torch", device=...`` gives torch batches on that device, see :mod:`envs.gym_env`) and
:func:`make_world` (the batched core the trainer uses). A plug-in module calls ``register_world`` at import;
``run.py train --env mymodule:MyWorld-v0`` imports ``mymodule`` first (Gymnasium's ``module:id`` form).

>>> import envs
>>> world = envs.make_world("seqjepa/RotatingObjects-v0", image_size=32)
>>> world.action_dim
4
"""

from __future__ import annotations

import importlib
from functools import partial

import gymnasium as gym

from seqjepa.options import ConfigError
from seqjepa.registry import Registry

from .base import Factor, State, World, fixed_size_work, prunes_work
from .gym_env import WorldEnv, WorldVectorEnv
from .sequences import Batch, SequenceSource, ViewBank, rollout

WORLDS: Registry[type[World]] = Registry("world", "world.env")


def register_world(env_id: str, world_cls: type[World], *, max_episode_steps: int = 50) -> None:
    """Register ``world_cls`` under ``env_id`` with Gymnasium (single and vector entry points) and here.

    ``max_episode_steps`` is where both envs truncate an episode (the single env through Gymnasium's TimeLimit).
    """
    if not isinstance(world_cls, type) or not issubclass(world_cls, World):
        raise TypeError(f"register_world({env_id!r}): expected a subclass of envs.World, got {world_cls!r}")
    WORLDS.register(env_id, world_cls)
    if env_id in gym.registry:
        del gym.registry[env_id]
    gym.register(env_id, entry_point=partial(WorldEnv, world_cls), max_episode_steps=max_episode_steps,
                 vector_entry_point=partial(WorldVectorEnv, world_cls))


def world_class(env_id: str) -> tuple[str, type[World]]:
    """Resolve ``id`` or ``module:id`` to (id, class), importing the plug-in module if named.

    >>> world_class("seqjepa/Nope-v0")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    seqjepa.options.ConfigError: world.env: unknown world 'seqjepa/Nope-v0'; allowed: seqjepa/RotatingObjects-v0, ...
    """
    name = env_id
    if ":" in env_id:
        module, name = env_id.split(":", 1)
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(f"world.env: cannot import plug-in module {module!r} ({e})") from None
    return name, WORLDS[name]


def make_world(env_id: str, device: str = "cpu", **options) -> World:
    """The batched torch core of a registered world, with options validated by the world."""
    _, cls = world_class(env_id)
    return cls(device=device, **options)


from .objects import RotatingObjects  # noqa: E402  (registration needs the functions above)

register_world("seqjepa/RotatingObjects-v0", RotatingObjects)

__all__ = ["Batch", "Factor", "RotatingObjects", "SequenceSource", "State", "ViewBank", "WORLDS", "World",
           "WorldEnv", "WorldVectorEnv", "fixed_size_work", "make_world", "prunes_work", "register_world", "rollout",
           "world_class"]

from .augment import Augmentations  # noqa: E402

register_world("seqjepa/Augmentations-v0", Augmentations)
__all__ += ["Augmentations"]

from .saccades import Saccades  # noqa: E402

register_world("seqjepa/Saccades-v0", Saccades)
__all__ += ["Saccades"]

from .iebench import IEBench  # noqa: E402  (needs the dataset: world.options.root or $SEQJEPA_3DIEBENCH)

register_world("seqjepa/3DIEBench-v0", IEBench)
__all__ += ["IEBench"]
