"""The world interface: a batched, device-resident simulator of an observer.

A *world* holds a set of episodes (objects or images). Its state is a dict of tensors for ``n`` parallel
episodes; ``step`` applies a *relative* transformation and ``render`` returns the views. Everything is torch, on
the world's device, so a GPU produces whole training batches without touching the host.

Each world also declares how to express the change between two views as an action (``relative``), which is
how training batches, the view bank and every equivariance probe get their targets: one mechanism for all.

Implementing a world (see ``docs/plugins.md`` for a complete example)::

    class MyWorld(World):
        @dataclass
        class Options:
            image_size: int = opt(32, "side of the square views", ge=8)
            split: Literal["train", "test"] = opt("train", "which episodes")
        name = "my world"
        def __init__(self, options, device="cpu"): ...
        def reset(self, n, generator, episodes=None): ...   # -> state dict with "label", "params", "episode"
        def step(self, state, action, generator): ...       # -> new state
        def render(self, state): ...                        # -> uint8 [n, 3, H, W]
        def relative(self, p_from, p_to): ...               # -> actions [..., action_dim]
        def sample_action(self, state, generator): ...      # the default random policy
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
import dataclasses
import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

State = dict[str, Tensor]


@dataclasses.dataclass(frozen=True)
class Factor:
    """A named slice of the action vector, and the probe head the paper uses for it."""
    start: int
    stop: int
    head: str = "mlp"  # "mlp" (rotation, crop, jitter) or "linear" (colour, blur, position)

    @property
    def slice(self) -> slice:
        return slice(self.start, self.stop)


class World(abc.ABC):
    """Base class of every world. Subclasses set the class attributes and implement the abstract methods.

    State dicts always hold ``label`` (long [n], the class; -1 where unlabelled), ``episode`` (long [n], which
    object or image) and ``params`` (float [n, P], the absolute transformation of the current view, from which
    ``relative`` computes actions and probes read their targets). A world may keep more tensors in its state
    (nuisances, inhibition masks); every one has leading dimension n, so states can be masked and merged.

    Every ``generator`` argument is a ``torch.Generator`` on the world's device, and all randomness comes from
    it: the same generator state gives the same views.
    """

    Options: ClassVar[type]                      # a dataclass of the world's options, fields declared with opt()
    # Options renamed since configs and checkpoints were written with them: old name -> new name. Every world
    # names one idea alike (``image_size``, ``num_classes``, ``data_seed``); an old name still loads as the new one
    # (:meth:`rename_options`), so runs/*/config.json and the configs inside checkpoints keep working.
    RENAMED: ClassVar[dict[str, str]] = {}
    needs_data: ClassVar[bool] = False  # True: built only over a dataset on disk (`run.py envs` lists it without one)
    name: ClassVar[str] = ""                     # one line for `run.py envs`
    action_doc: ClassVar[str] = ""               # what the action means, with units
    metadata: ClassVar[dict] = {"render_fps": 4}

    options: Any
    device: torch.device
    num_classes: int
    num_episodes: int
    image_size: int          # side of the (square) view
    action_dim: int
    param_dim: int
    factors: dict[str, Factor]
    action_low: Tensor       # [action_dim], the bounds of the action space
    action_high: Tensor
    # Per-channel (R, G, B) statistics the model normalises this world's views with, after scaling them to [0, 1]
    # (the model stores them, so a checkpoint keeps them). A world over a real dataset sets that dataset's
    # constants (a class attribute, or per instance where they depend on the options), as the official code does.
    pixel_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    pixel_std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    # How the official seq-JEPA batches this kind of world's actions through its action BatchNorm in train mode
    # (seqjepa.model.SeqJEPA's action_bn): "3diebench" for relative transformations given with the views,
    # "augmentations" and "saccades" for the official code's other two paths.
    action_bn: ClassVar[str] = "3diebench"

    @abc.abstractmethod
    def reset(self, n: int, generator: torch.Generator, episodes: Tensor | None = None) -> State:
        """Start ``n`` episodes (random ones, or ``episodes``) at random initial views."""

    @abc.abstractmethod
    def step(self, state: State, action: Tensor, generator: torch.Generator) -> State:
        """Apply the relative transformations ``action`` [n, action_dim]; returns the new state."""

    @abc.abstractmethod
    def render(self, state: State) -> Tensor:
        """The current views, uint8 [n, 3, H, W] on the world's device."""

    @abc.abstractmethod
    def relative(self, p_from: Tensor, p_to: Tensor) -> Tensor:
        """The action that maps a view with params ``p_from`` to one with ``p_to`` ([..., P] -> [..., A])."""

    @abc.abstractmethod
    def sample_action(self, state: State, generator: torch.Generator) -> Tensor:
        """A random relative transformation within the world's ranges (the paper's sampling)."""

    @classmethod
    def resolve_options(cls, options: Any | None, overrides: Mapping[str, Any]) -> Any:
        """A copy of ``options`` (or the defaults) with ``overrides`` applied, every value validated; an old
        option name in ``overrides`` is read as its new one (:meth:`rename_options`).

        Raises ConfigError naming the field, the value and what is allowed (for an unknown option: every option
        the world takes).
        """
        from seqjepa.options import set_field, validate

        opts = dataclasses.replace(options) if options is not None else cls.Options()
        validate(opts)
        for key, value in cls.rename_options(overrides).items():
            set_field(opts, key, value)
        return opts

    @classmethod
    def rename_options(cls, given: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        """``given`` with every old option name of :attr:`RENAMED` replaced by its new one, in the same order.

        The one place old names are read: a world built from options (``make_world``, ``gym.make``, a run's
        ``world.options``, a checkpoint's config) goes through it, so the world, its view bank and its views are
        the same whichever name was used. Both names at once is a ConfigError (its field named after ``prefix``):
        which value was meant is unknown.

        >>> from envs import Saccades
        >>> Saccades.rename_options({"glimpse": 16, "scene_size": 48})
        {'image_size': 16, 'scene_size': 48}
        >>> Saccades.rename_options({"glimpse": 16, "image_size": 16})
        Traceback (most recent call last):
        ...
        seqjepa.options.ConfigError: glimpse: got 16 with image_size=16; allowed: one of them (glimpse is image_size's \
old name)
        """
        from seqjepa.options import ConfigError

        out: dict[str, Any] = {}
        for key, value in given.items():
            new = cls.RENAMED.get(key)
            if new is None:
                out[key] = value
            elif new in given:
                raise ConfigError(f"{prefix}{key}: got {value!r} with {new}={given[new]!r}; allowed: one of them "
                                  f"({key} is {new}'s old name)")
            else:
                out[new] = value
        return out

    def data_fingerprint(self) -> str | None:
        """A digest of the files on disk this world's views come from, or None where it reads none.

        The view bank's cache key includes it, so a bank is rendered again when its data changes. A world over
        files returns :func:`fingerprint_files` of them: names, sizes and modification times, never the contents,
        so it stays cheap on datasets of gigabytes.
        """
        return None

    def absolute(self, params: Tensor) -> dict[str, Tensor]:
        """Per-view targets for absolute probes (e.g. the rotation quaternion). Empty if none."""
        return {}

    def render_frame(self, state: State) -> Tensor:
        """What a person sees for ``render()``: by default the view itself, uint8 [n, 3, H', W']."""
        return self.render(state)

    def clean_views(self, episodes: Tensor) -> Tensor | None:
        """One canonical view of each episode that shows its class, uint8 [n, 3, H, W], or None where a world
        has no such view.

        The augmentation world gives the untransformed image (the official code's classifier reads
        ``enc(orig_img)``); the saccade world's procedural scenes, the glimpse fixating the class object. The
        ``linear_probe`` suite also probes the encoder on these views; worlds whose every view is a
        transformation of nothing in particular return None.
        """
        return None

    def check_action(self, action: Tensor) -> Tensor:
        """Validate shape and finiteness; clip to the action space. Raises ValueError naming the problem."""
        if action.ndim != 2 or action.shape[1] != self.action_dim:
            raise ValueError(f"action: got shape {tuple(action.shape)}; expected [n, {self.action_dim}] "
                             f"({self.action_doc})")
        self.check_finite(action)
        return torch.minimum(torch.maximum(action, self.action_low), self.action_high)

    def check_finite(self, action: Tensor, *, wait: bool = False) -> None:
        """Raise ValueError naming the rows of ``action`` [n, A] that hold a NaN or an inf.

        By default (what ``step`` uses) the check is an asynchronous device assert, so a GPU step never waits on
        the host for it; on the CPU it raises at once. ``wait=True`` reads the values on any device (the Gym API).
        """
        finite = torch.isfinite(action).all()
        if wait:
            if bool(finite):
                return
        else:
            try:
                torch._assert_async(finite, "action: got a non-finite value; expected finite numbers within the "
                                            "world's action space")
                return
            except RuntimeError:  # raised at once on the CPU, where the values can be named
                pass
        rows = (~torch.isfinite(action)).any(1).nonzero()[:, 0].tolist()
        raise ValueError(f"action: got a non-finite value in rows {rows} ({action[rows].tolist()}); expected finite "
                         f"numbers in [{self.action_low.tolist()}, {self.action_high.tolist()}]")

    def episodes_for(self, n: int, generator: torch.Generator, episodes: Tensor | None = None) -> Tensor:
        """``n`` random episode indices, or the caller's ``episodes`` checked (ValueError naming them if bad)."""
        if episodes is None:
            return torch.randint(0, self.num_episodes, (n,), generator=generator, device=self.device)
        episodes = torch.as_tensor(episodes, device=self.device).long().reshape(-1)
        if len(episodes) != n or (n and (episodes.min() < 0 or episodes.max() >= self.num_episodes)):
            raise ValueError(f"episodes: got {episodes.tolist()}; expected {n} indices in [0, {self.num_episodes})")
        return episodes


def fingerprint_files(files: Iterable[str | os.PathLike]) -> str:
    """A digest of the sorted names, sizes and modification times of ``files`` (a missing file counts as such).

    Rewriting a file changes its mtime (and usually its size), which is what a cache needs to notice; reading
    the contents would cost as much as loading the data.
    """
    h = hashlib.sha256()
    for name in sorted({os.fspath(f) for f in files}):
        try:
            st = os.stat(name)
            h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except (FileNotFoundError, NotADirectoryError):  # the loader that reads it names the problem
            h.update(f"{name}\0missing\n".encode())
    return h.hexdigest()[:16]


_FIXED_SIZE = contextvars.ContextVar("fixed_size_work", default=False)


def prunes_work(device: torch.device | str) -> bool:
    """Whether code on ``device`` may skip work by data-dependent sizes (ray compaction, views with nothing to do).

    On the CPU that saves time and reading a size costs nothing. On a GPU reading it would stall the device (a host
    sync), so the fixed-size path is taken. :func:`fixed_size_work` forces that path anywhere (tests use it to show
    on the CPU that the GPU path never syncs).
    """
    return torch.device(device).type == "cpu" and not _FIXED_SIZE.get()


@contextlib.contextmanager
def fixed_size_work() -> Iterator[None]:
    """Within this block every world takes the fixed-size path a GPU takes (see :func:`prunes_work`)."""
    token = _FIXED_SIZE.set(True)
    try:
        yield
    finally:
        _FIXED_SIZE.reset(token)


def split_generator(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded from ``generator``, so CPU seeding drives device-side sampling."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g
