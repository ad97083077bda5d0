"""The run's data: its world, the cached view banks and the stream of training batches.

>>> cfg = preset("smoke")                                                 # doctest: +SKIP
>>> world = build_world(cfg, torch.device("cpu"), "train")               # doctest: +SKIP
>>> source, bank = build_source(cfg, world, torch.device("cpu"), rank=0, nproc=1, shared=False, log=print)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

import envs
from agents import make_agent
from envs import SequenceSource, ViewBank

from . import checkpoint
from . import distributed as ddp
from .config import Config
from .options import ConfigError


def build_world(cfg: Config, device: torch.device, split: str, **extra) -> envs.World:
    """The run's world on ``device``: ``cfg.world.options`` with ``split`` (and ``extra``) added.

    A bad option is named as the user set it, ``world.options.NAME`` (worlds name it as gym.make's keyword);
    messages that already name a path (``world.options.root: ...``) or several fields are left as they are.
    """
    try:
        return envs.make_world(cfg.world.env, device=str(device), **{**cfg.world.options, "split": split, **extra})
    except ConfigError as e:
        name = str(e).split(":", 1)[0]
        raise ConfigError(f"world.options.{e}" if name.isidentifier() else str(e)) from None


def free_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on ``device`` (CUDA's free memory, or the host's MemAvailable)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return None  # not Linux: no check


def view_bytes(world: envs.World) -> int:
    """Bytes of one view: uint8 [3, image_size, image_size], the World contract (no view is rendered to learn it)."""
    return 3 * world.image_size ** 2


def build_bank(cfg: Config, world: envs.World, split: str, log: Callable[[str], None]) -> ViewBank:
    name, _ = envs.world_class(cfg.world.env)
    seed = cfg.train.seed if split == "train" else cfg.train.seed + 1
    objects = cfg.world.bank_objects if split == "train" else max(1, cfg.world.bank_objects // 4)
    need, free = objects * cfg.world.bank_views * view_bytes(world), free_memory(world.device)
    if free is not None and need > free:
        raise ConfigError(f"world.bank_objects={cfg.world.bank_objects}, world.bank_views={cfg.world.bank_views}: "
                          f"the {split} view bank needs {need / 2**30:.1f} GiB and {world.device} has "
                          f"{free / 2**30:.1f} GiB free; allowed: fewer objects or views, or world.source=live "
                          "(views rendered every step, no bank)")
    return ViewBank.cached(name, world, objects, cfg.world.bank_views, seed, cfg.world.cache_dir, log=log)


def bank_device(cfg: Config, world: envs.World, device: torch.device) -> torch.device:
    """Where the training view bank lives (``world.bank_device``): the training device when the bank takes at
    most half of its free memory ("auto"), else host memory, from which each batch is copied over."""
    if cfg.world.bank_device == "cpu" or device.type != "cuda":
        return torch.device("cpu")
    need = cfg.world.bank_objects * cfg.world.bank_views * view_bytes(world)
    return device if need <= free_memory(device) // 2 else torch.device("cpu")


def resume_streams(ckpt: dict, source: SequenceSource, cfg: Config, step: int, shared: bool,
                   log: Callable[[str], None]) -> None:
    """Restore this process's data stream and torch RNG from a checkpoint, across any number of processes.

    A checkpoint holds every rank's stream and RNG state ("ranks"; a single process's are "source" and "rng").
    Resumed with as many processes, each rank continues exactly. With another number the saved streams do not map
    onto the ranks, so each rank re-seeds its stream and RNG from (train.seed, step, rank): deterministic, but the
    data from then on differ from an uninterrupted run. A single process and ``ddp_data=shared`` draw one stream,
    so a run moving between those two continues that stream exactly at any number of processes.
    """
    saved = ckpt.get("ranks") or [{"source": ckpt["source"], "rng": ckpt["rng"]}]
    rank, nproc = ddp.rank(), ddp.world_size()
    if len(saved) == nproc:
        source.load_state_dict(saved[rank]["source"])
        checkpoint.set_rng_state(saved[rank]["rng"])
        return
    one_stream = len(saved) == 1 or ckpt.get("config", {}).get("train", {}).get("ddp_data") == "shared"
    if one_stream and (nproc == 1 or shared):
        source.load_state_dict(saved[0]["source"])
    else:
        source.generator.manual_seed(ddp.stream_seed(cfg.train.seed, 0 if shared else rank, step))
        log(f"resuming a {len(saved)}-process run with {nproc}: each process's data stream was re-seeded from "
            f"(train.seed, step {step}, rank), so the data from here on differ from an uninterrupted run")
    if rank == 0:
        checkpoint.set_rng_state(saved[0]["rng"])
    else:
        torch.manual_seed(ddp.stream_seed(cfg.train.seed, rank, step))


def to_device(batch: envs.Batch, device: torch.device) -> envs.Batch:
    """Copy a batch to the training device without stalling the host: a host batch goes through pinned memory,
    so the copy is asynchronous and overlaps the previous step's GPU work. A no-op for a batch already there."""
    if batch.views.device.type == "cpu" and device.type == "cuda":
        batch = dataclasses.replace(batch, **{f.name: getattr(batch, f.name).pin_memory()
                                              for f in dataclasses.fields(batch)})
    return batch.to(device, non_blocking=True)


def build_source(cfg: Config, world: envs.World, device: torch.device, *, rank: int, nproc: int, shared: bool,
                 log: Callable[[str], None]) -> tuple[SequenceSource, ViewBank | None]:
    """The training batches' source, from a view bank (rendered and cached by rank 0 first) or live."""
    bank, data_world = None, world
    if cfg.world.source == "bank":
        where = bank_device(cfg, world, device)
        data_world = world if where == device else build_world(cfg, where, "train")  # sample where the bank is
        with ddp.main_first():  # rank 0 renders and caches the bank; the other ranks then read the cache
            bank = build_bank(cfg, data_world, "train", log)
    # train.batch_size is the global batch. Each rank draws its share from its own stream (seed offset by rank),
    # or with ddp_data=shared the whole batch from the single-process stream, keeping its slice (ddp.shard).
    source = SequenceSource(data_world, seq_len=cfg.train.seq_len,
                            batch_size=cfg.train.batch_size if shared else cfg.train.batch_size // nproc,
                            seed=ddp.stream_seed(cfg.train.seed, 0 if shared else rank), bank=bank,
                            policy=make_agent(cfg.world.agent), chunk=cfg.world.live_chunk)
    return source, bank
