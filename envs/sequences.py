"""Training sequences from a world: a pre-rendered view bank, or live rendering driven by an agent.

Both sources yield the same :class:`Batch`. Actions are always ``world.relative`` of consecutive views' params,
so a sequence read from the bank and one produced live by an agent carry the same kind of action.

>>> from envs import make_world
>>> world = make_world("seqjepa/RotatingObjects-v0", image_size=32)
>>> source = SequenceSource(world, seq_len=3, batch_size=8, seed=0)
>>> batch = source.next()
>>> batch.views.shape, batch.actions.shape
(torch.Size([8, 4, 3, 32, 32]), torch.Size([8, 3, 4]))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from seqjepa import files
from seqjepa.options import ConfigError, DataError

from .base import State, World

BANK_FORMAT = 4  # bump when the bank's contents or the renderers change, so old caches are not reused
STALE_TEMP_SECONDS = 600  # a save keeps writing its temp file, so one untouched this long has no live writer
# What torch.load raises on an intact zip archive that is not a saved bank (a foreign pickle, other members).
_UNREADABLE = (RuntimeError, pickle.UnpicklingError, LookupError, ValueError)


@dataclasses.dataclass
class Batch:
    """A batch of sequences of M+1 views; the last view is the prediction target."""
    views: Tensor     # uint8 [B, T, 3, H, W]
    actions: Tensor   # float [B, T-1, A]: actions[:, i] maps view i to view i+1
    params: Tensor    # float [B, T, P]: each view's absolute transformation (probe targets)
    labels: Tensor    # long [B]
    episodes: Tensor  # long [B]: which object / image

    def tensors(self) -> list[Tensor]:
        """The fields in order, not copied (``dataclasses.astuple`` would deep-copy every tensor)."""
        return [getattr(self, f.name) for f in dataclasses.fields(self)]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in self.tensors()))

    def take(self, steps: int) -> "Batch":
        """The first ``steps`` views (and the actions between them)."""
        return Batch(self.views[:, :steps], self.actions[:, :steps - 1], self.params[:, :steps], self.labels,
                     self.episodes)


Policy = Callable[[World, State, torch.Generator], Tensor]


def rollout(world: World, policy: Policy, n: int, steps: int, generator: torch.Generator,
            episodes: Tensor | None = None) -> Batch:
    """Run ``policy`` for ``steps`` views in ``n`` parallel episodes and return the sequence."""
    state = world.reset(n, generator, episodes)
    views, params = [world.render(state)], [state["params"]]
    for _ in range(steps - 1):
        state = world.step(state, policy(world, state, generator), generator)
        views.append(world.render(state))
        params.append(state["params"])
    p = torch.stack(params, 1)
    return Batch(torch.stack(views, 1), world.relative(p[:, :-1], p[:, 1:]), p, state["label"], state["episode"])


def random_policy(world: World, state: State, generator: torch.Generator) -> Tensor:
    return world.sample_action(state, generator)


class ViewBank:
    """N episodes x V views rendered once (like 3DIEBench's 50 views per object) and cached as uint8.

    The cache file name is a hash of everything that determines its contents (world id and resolved options,
    the world's data fingerprint where it reads files, N, V, seed, format version), so a bank is never reused for
    other settings or changed data. The file is torch's zip archive, whose directory records every member's size
    and CRC-32, so a damaged file is found before it is unpickled.
    """

    def __init__(self, views: Tensor, params: Tensor, labels: Tensor, episodes: Tensor):
        self.views, self.params, self.labels, self.episodes = views, params, labels, episodes

    @property
    def num_views(self) -> int:
        return self.views.shape[1]

    def to(self, device: torch.device | str) -> "ViewBank":
        return ViewBank(self.views.to(device), self.params.to(device), self.labels.to(device),
                        self.episodes.to(device))

    @staticmethod
    def key(world_id: str, world: World, objects: int, views: int, seed: int) -> str:
        spec = {"world": world_id, "options": dataclasses.asdict(world.options), "objects": objects,
                "views": views, "seed": seed, "format": BANK_FORMAT}
        data = world.data_fingerprint()
        if data is not None:  # only worlds over files add it: the others keep the keys their caches have
            spec["data"] = data
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def render(cls, world: World, objects: int, views: int, seed: int, chunk: int = 256,
               log: Callable[[str], None] | None = None) -> "ViewBank":
        """Render ``views`` views per episode by a random-policy rollout (for the rotating objects: independent
        random poses, like 3DIEBench; for saccades: the saliency + inhibition-of-return path)."""
        g = torch.Generator(device=world.device)
        g.manual_seed(seed)
        # A random order over the episodes (then repeated), so that a bank smaller than the world still
        # covers every class: episodes are numbered class by class.
        order = torch.randperm(world.num_episodes, generator=g, device=world.device)
        episodes = order[torch.arange(objects, device=world.device) % world.num_episodes]
        parts = []
        for start in range(0, objects, chunk):
            parts.append(rollout(world, random_policy, len(episodes[start:start + chunk]), views, g,
                                 episodes[start:start + chunk]))
            if log:
                log(f"view bank: {min(start + chunk, objects)}/{objects} episodes x {views} views")
        return cls(torch.cat([b.views for b in parts]), torch.cat([b.params for b in parts]),
                   torch.cat([b.labels for b in parts]), episodes)

    @classmethod
    def cached(cls, world_id: str, world: World, objects: int, views: int, seed: int, cache_dir: str,
               log: Callable[[str], None] | None = None) -> "ViewBank":
        """Load the bank for these settings from ``cache_dir``, rendering and saving it first if absent.

        A cached file that is not an intact zip archive (cut short, emptied, overwritten: its CRC-32s or directory
        do not match) or not a bank of these settings is named in a one-line warning (``log``, else ``warnings``),
        moved aside to ``bank-KEY.pt.corrupt`` and rendered again; it is only ever loaded with
        ``weights_only=True``. Temp files of this key left by a killed save are removed first.
        """
        folder = _cache_folder(cache_dir)
        key = cls.key(world_id, world, objects, views, seed)
        path = folder / f"bank-{key}.pt"
        files.remove_stale_temps(folder, target=lambda name: name == path.name, max_age=STALE_TEMP_SECONDS)
        if path.exists():
            try:
                return cls._load(path, world, objects, views)
            except _DamagedBank as e:
                aside = path.with_name(path.name + ".corrupt")
                os.replace(path, aside)
                (log or _warn)(f"warning: view bank {path} is damaged ({e}); moved to {aside.name}, rendering again")
        if not os.access(folder, os.W_OK | os.X_OK):  # checked before rendering, which can take hours
            raise DataError(f"world.cache_dir: {folder} is not writable; expected a folder where view banks "
                             f"can be saved")
        bank = cls.render(world, objects, views, seed, log=log)
        bank._save(path)
        return bank

    @classmethod
    def _load(cls, path: Path, world: World, objects: int, views: int) -> "ViewBank":
        """The bank in ``path``, checked as a zip archive (directory, sizes, CRC-32s: torch.save computes them)
        and against the shapes these settings give; raises _DamagedBank saying what is wrong."""
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, EOFError) as e:
            raise _DamagedBank(f"not a complete zip archive: {e}") from None
        if bad is not None:
            raise _DamagedBank(f"the CRC-32 of its member {bad} does not match its data")
        try:
            data = torch.load(path, map_location=world.device, weights_only=True)
        except _UNREADABLE as e:  # an intact archive of something else: never retried without weights_only
            raise _DamagedBank(f"not a view bank: {type(e).__name__}") from None
        _check_contents(data, world, objects, views)
        return cls(data["views"], data["params"], data["labels"], data["episodes"])

    def _save(self, path: Path) -> None:
        """Write the bank atomically: a kill never leaves a half-written file under its real name, only a temp
        file that the next build of this key removes."""
        with files.atomic_write(path, "wb") as fh:
            torch.save({"views": self.views.cpu(), "params": self.params.cpu(), "labels": self.labels.cpu(),
                        "episodes": self.episodes.cpu()}, fh)

    def sample(self, world: World, n: int, steps: int, generator: torch.Generator) -> Batch:
        """``n`` sequences of ``steps`` distinct views of random episodes, in random order."""
        if steps > self.num_views:
            raise ConfigError(f"seq_len: a sequence of {steps} views needs a bank with at least that many views "
                             f"per object; the bank has {self.num_views} (raise world.bank_views)")
        dev = self.views.device
        rows = torch.randint(0, self.views.shape[0], (n,), generator=generator, device=dev)
        idx = torch.rand(n, self.num_views, generator=generator, device=dev).argsort(1)[:, :steps]
        views = self.views[rows[:, None], idx]
        params = self.params[rows[:, None], idx]
        return Batch(views, world.relative(params[:, :-1], params[:, 1:]), params, self.labels[rows],
                     self.episodes[rows])


class _DamagedBank(Exception):
    """A cached bank file that cannot be used; the message says why."""


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def _cache_folder(cache_dir: str) -> Path:
    """``cache_dir`` as an existing folder; DataError naming it when it is a file or cannot be created."""
    folder = Path(os.path.expanduser(cache_dir))
    if folder.exists() and not folder.is_dir():
        raise DataError(f"world.cache_dir: {folder} is a file; expected a folder for the view-bank caches "
                         f"(or a path where one can be created)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"world.cache_dir: cannot create {folder} ({e.strerror}); expected a folder for the "
                         f"view-bank caches (or a path where one can be created)") from None
    return folder


def _check_contents(data: object, world: World, objects: int, views: int) -> None:
    """Raise _DamagedBank unless ``data`` holds a bank of ``objects`` x ``views`` views of ``world``."""
    s = world.image_size
    shapes = {"views": (objects, views, 3, s, s), "params": (objects, views, world.param_dim),
              "labels": (objects,), "episodes": (objects,)}
    if not isinstance(data, dict) or set(data) != set(shapes):
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise _DamagedBank(f"holds {found}; expected a dict of {', '.join(shapes)}")
    for name, shape in shapes.items():
        t = data[name]
        if not isinstance(t, Tensor) or tuple(t.shape) != shape:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise _DamagedBank(f"{name} is {got}; expected a tensor of shape {shape}")
    if data["views"].dtype != torch.uint8:
        raise _DamagedBank(f"views are {data['views'].dtype}; expected torch.uint8")


class SequenceSource:
    """Yields training batches of ``seq_len + 1`` views, from a bank or live; resumable via state_dict.

    Live, ``chunk`` batches are rolled out in one call and served one per ``next()``: a world's cost per call
    (kernel launches, small ops) is paid once per chunk. The chunk is a function of the generator's state at its
    start, so ``state_dict`` saves that state and the position in the chunk, and a resumed source renders the
    same chunk again and continues where it stopped.
    """

    def __init__(self, world: World, *, seq_len: int, batch_size: int, seed: int, bank: ViewBank | None = None,
                 policy: Policy = random_policy, chunk: int = 1):
        if chunk < 1:
            raise ConfigError(f"chunk: got {chunk}; must be >= 1 (batches rendered per world call)")
        self.world, self.seq_len, self.batch_size = world, seq_len, batch_size
        self.bank, self.policy = bank, policy
        self.chunk = 1 if bank is not None else chunk
        device = bank.views.device if bank is not None else world.device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self._buffer: Batch | None = None
        self._pos = 0                       # batches of the buffer already served
        self._chunk_start: Tensor | None = None  # generator state the buffer was rendered from

    def next(self) -> Batch:
        if self.bank is not None:
            return self.bank.sample(self.world, self.batch_size, self.seq_len + 1, self.generator)
        if self._buffer is None or self._pos == self.chunk:
            self._render_chunk()
        b, i = self.batch_size, self._pos
        self._pos += 1
        if self.chunk == 1:
            return self._buffer
        return Batch(*(t[i * b:(i + 1) * b] for t in self._buffer.tensors()))

    def _render_chunk(self) -> None:
        self._chunk_start = self.generator.get_state()
        self._buffer = rollout(self.world, self.policy, self.batch_size * self.chunk, self.seq_len + 1,
                               self.generator)
        self._pos = 0

    def state_dict(self) -> dict:
        if self._buffer is None or self._pos == self.chunk:
            return {"generator": self.generator.get_state()}
        return {"generator": self._chunk_start, "chunk": self.chunk, "served": self._pos}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"].cpu())
        self._buffer, self._pos = None, 0
        if state.get("served"):
            if state["chunk"] != self.chunk:
                raise ConfigError(f"world.live_chunk: the checkpoint was saved with {state['chunk']} and stopped "
                                 f"inside a chunk; resume with world.live_chunk={state['chunk']}")
            self._render_chunk()
            self._pos = state["served"]
