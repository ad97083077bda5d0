"""Train seq-JEPA. One loop, top to bottom.

    python run.py train                                   # the cpu preset on the rotating-objects world
    python run.py train --preset smoke --set train.steps=20
    python run.py train --resume runs/NAME                # continue exactly where it stopped

Per step: render or read a batch of M+1 views, encode the M observed views, aggregate them with their actions
into z_agg, predict the target view's embedding from z_agg and the next action, and regress it onto the EMA
target encoder's embedding (1 - cos). AdamW with warm-up + cosine, τ rising from tau_base to 1. Two online
probes on detached features (a linear classifier on z_agg and an MLP on [z_1, z_2] -> the relative action)
show learning as it happens; they have their own optimizer and never touch the backbone. At every log step a
fixed held-out batch of the world's test split (drawn once, with its own generator) is run through the model in
eval mode: it scores the relative-action MLP (R², the equivariance suite's per-dimension mean) and, for a
seq-JEPA whose predictor sees the next action, measures the action use (the loss with another sequence's next
action over the loss with the true one).

Under ``torchrun --nproc_per_node=N run.py train …`` the same loop runs in N processes (seqjepa/distributed.py):
DDP-wrapped model, train.batch_size split over the ranks, metrics averaged at log time, rank 0 logs and saves.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import envs
from agents import check_agent, make_agent
from envs import SequenceSource, ViewBank

from . import checkpoint
from . import distributed as ddp
from .config import Config, ConfigError, from_dict, resume_differences, to_dict
from .metrics import r2_score
from .model import action_use, derangement, evaluating, tau_at, uses_next_action


class TrainingDiverged(RuntimeError):
    """The loss, the weights or the optimizer state became NaN or infinite."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: got {name!r}; allowed: auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: got {name!r} but CUDA is not available; use cpu or auto")
    return device


def cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            return "amx_bf16" in fh.read()
    except OSError:
        return False


def use_bf16(setting: str, device: torch.device) -> bool:
    """bf16 autocast pays off on CUDA and on CPUs with AMX; elsewhere it is slower than fp32."""
    if setting != "auto":
        return setting == "on"
    return device.type == "cuda" or cpu_has_amx()


def lr_at(step: int, cfg: Config) -> float:
    o, total = cfg.optim, cfg.train.steps
    if step < o.warmup_steps:
        return o.start_lr + (o.lr - o.start_lr) * step / o.warmup_steps
    t = (step - o.warmup_steps) / max(1, total - o.warmup_steps)
    return o.final_lr + (o.lr - o.final_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "gymnasium", "numpy", "kornia", "einops", "tensorboard", "seqjepa"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


class OnlineProbes(nn.Module):
    """Detached-feature probes trained alongside the model: class from z_agg, relative action from [z_1, z_2].

    The classifier is scored on each training batch before its update (top-1 on sequences it has not fitted yet).

    The relative-action regressor is trained on each training batch and scored by :meth:`r2` at log time on the
    fixed held-out batch (:class:`HeldOutMonitor`) with the equivariance suite's metric: R² per dimension of the
    action, averaged (the paper's number), from eval-mode encoder outputs of test-split episodes the model never
    trained on, by an MLP on standardised inputs and targets. That is what the suite measures; the difference is
    that this head learns online on moving features, so it lags the suite while the encoder moves fast (Saccades,
    cpu preset, step 800 of a 12000-step schedule: 0.37 against the suite's 0.52 on the same sequences) and meets
    it once the features settle (step 800 of 800: 0.60 against 0.58).

    Inputs are standardised over the batch (the global batch under torchrun; the held-out batch when scoring) and
    targets with fixed constants (:meth:`set_action_scale`: the held-out batch's first actions, i.e. the world's
    action sampling), so every action dimension weighs alike in the loss as in the per-dimension mean (a raw
    quaternion's w varies a third as much as x, y, z). Neither normaliser has state, so the state dict keeps its
    keys and older checkpoints resume.
    """

    def __init__(self, *, agg_dim: int, z_dim: int, num_classes: int, action_dim: int, hidden: int = 512):
        super().__init__()
        self.classifier = nn.Linear(agg_dim, num_classes)
        self.regressor = nn.Sequential(nn.Linear(2 * z_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                       nn.ReLU(), nn.Linear(hidden, action_dim))
        # Batch statistics in train and eval mode alike (no running statistics, no parameters, no state-dict keys);
        # over every rank's batch under torchrun, so N processes train the probe as one does.
        self.pair_norm = ddp.GlobalBatchNorm(2 * z_dim, affine=False, track_running_stats=False)
        self.register_buffer("action_mean", torch.zeros(action_dim), persistent=False)
        self.register_buffer("action_std", torch.ones(action_dim), persistent=False)

    @torch.no_grad()
    def set_action_scale(self, actions: torch.Tensor) -> None:
        """Fix the regression targets' per-dimension mean and std (from [N, A] relative actions)."""
        actions = actions.float().to(self.action_mean.device)
        self.action_mean.copy_(actions.mean(0))
        self.action_std.copy_(actions.std(0).clamp(min=1e-6))

    def forward(self, z_agg, z_pair, labels, rel_action):
        """The probes' training loss and the classifier's top-1 on this batch (before the update)."""
        logits = self.classifier(z_agg.float())
        pred = self.regressor(self.pair_norm(z_pair.float()))
        target = (rel_action.float() - self.action_mean) / self.action_std
        # Unlabelled views (label -1, e.g. STL-10's pre-training split) train only the action probe.
        labelled = labels >= 0
        n = labelled.sum().clamp(min=1)
        loss = F.cross_entropy(logits, labels, ignore_index=-1, reduction="sum") / n + F.mse_loss(pred, target)
        acc = ((logits.argmax(1) == labels) & labelled).float().sum() / n
        return loss, acc

    @torch.no_grad()
    def r2(self, z_pair: torch.Tensor, rel_action: torch.Tensor) -> torch.Tensor:
        """R² (mean over the action's dimensions) of the regressor on held-out [z_1, z_2] -> relative action.

        Call it in eval mode (the normaliser then never talks to other ranks); nothing is updated."""
        pred = self.regressor(self.pair_norm(z_pair.float())) * self.action_std + self.action_mean
        return r2_score(rel_action.float(), pred)


def build_model(cfg: Config, world: envs.World) -> nn.Module:
    """seq-JEPA or the baseline ``cfg.model.method`` names (seqjepa.baselines.METHODS), sized by the run's preset,
    normalising views with the world's ``pixel_mean``/``pixel_std`` and batching actions as its ``action_bn`` says."""
    from .baselines import build
    return build(cfg.model, action_dim=world.action_dim, preset=cfg.preset, mean=world.pixel_mean,
                 std=world.pixel_std, action_bn=world.action_bn)


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


# -- held-out monitoring: action use and the relative-action R², at log time ---------------------------------------

HELD_OUT_MAX = 256        # sequences in the held-out batch (4 training batches when that is fewer: ~1 step's compute)
HELD_OUT_SEED = 1_000_003  # added to train.seed for the held-out batch's own generator


def probe_features(out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The online probes' inputs from a forward's output: z_agg (a baseline's first encoder output: it has no
    aggregate) and [z_1, z_2] (the encoder outputs of the first two views; with one observed view, the target's)."""
    z = out["z"].detach()
    z2 = z[:, 1] if z.shape[1] > 1 else out["target"].detach()
    z_agg = out.get("z_agg", z[:, 0]).detach()
    return z_agg, torch.cat([z[:, 0], z2], -1).float()


@torch.no_grad()
def held_out_batch(cfg: Config, device: torch.device, policy, n: int, log: Callable[[str], None]) -> envs.Batch:
    """``n`` sequences of train.seq_len + 1 views from the world's test split (episodes the model never trains
    on), drawn with their own generator seeded from train.seed: the same batch at every log step, on every rank,
    and again after a resume. With world.source=bank, from the test view bank (the one the evaluation reads,
    rendered and cached here if absent); live, a rollout of the test world under the training agent."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the training RNG stays put
        world = build_world(cfg, device, "test")
        g = torch.Generator(device=world.device).manual_seed(cfg.train.seed + HELD_OUT_SEED)
        if cfg.world.source == "bank":
            with ddp.main_first():  # rank 0 renders and caches the bank; the other ranks then read the cache
                bank = build_bank(cfg, world, "test", log)
            batch = bank.sample(world, n, cfg.train.seq_len + 1, g)
            del bank
            if device.type == "cuda":
                torch.cuda.empty_cache()  # only the batch stays on the device
        else:
            batch = envs.rollout(world, policy, n, cfg.train.seq_len + 1, g)
    return to_device(batch, device)


class HeldOutMonitor:
    """Action use and the relative-action R² on a fixed held-out batch, measured at log steps only.

    Eval mode (BatchNorm reads its running statistics and updates nothing, dropout is off), no gradient, the torch
    RNGs forked (whatever a forward draws is undone), each module's train/eval mode restored: the training that
    follows is bit-identical to one without the measurement, so resume stays exact. The batch goes through the
    model in chunks of the training batch's size (full size: slower on a CPU, where the cache is small).
    """

    def __init__(self, batch: envs.Batch, chunk: int, other: torch.Tensor):
        self.batch, self.chunk, self.other = batch, chunk, other

    @classmethod
    def build(cls, cfg: Config, device: torch.device, policy, chunk: int,
              log: Callable[[str], None]) -> "HeldOutMonitor":
        n = min(HELD_OUT_MAX, 4 * cfg.train.batch_size)
        batch = held_out_batch(cfg, device, policy, n, log)
        g = torch.Generator(device=batch.actions.device).manual_seed(cfg.train.seed + HELD_OUT_SEED)
        return cls(batch, chunk, derangement(n, g))

    def measure(self, model: nn.Module, probes: OnlineProbes) -> dict[str, float]:
        """{"r2_rel_action": R²} and, where the predictor sees the next action, {"action_use": ratio}."""
        b, device = self.batch, self.batch.views.device
        measure_use = uses_next_action(model)
        pairs, true, last = [], [], []
        with evaluating(model, probes), torch.no_grad(), \
                torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for i in range(0, b.views.shape[0], self.chunk):
                views, actions = b.views[i:i + self.chunk], b.actions[i:i + self.chunk]
                out = model(views, actions)
                pairs.append(probe_features(out)[1])
                if measure_use:  # a_M from another sequence of the whole held-out batch, not only of this chunk
                    losses = action_use(model, views, actions, b.actions[self.other[i:i + self.chunk]], out=out)
                    true.append(losses["true"])
                    last.append(losses["last shuffled"])
            result = {"r2_rel_action": float(probes.r2(torch.cat(pairs), b.actions[:, 0]))}
            if measure_use:
                result["action_use"] = float(torch.cat(last).mean() / torch.cat(true).mean())
        return result


LATEST, PREVIOUS = "latest.pt", "previous.pt"  # the newest finite state, and the one saved before it


def restore(ckpt: dict, path: Path, cfg: Config, model: nn.Module, probes: nn.Module,
            optimizer: torch.optim.Optimizer, probe_opt: torch.optim.Optimizer) -> None:
    """Load a checkpoint's weights and optimizer states, after checking that it was saved by a run of these
    settings (RESUME_FIXED) and holds finite values: a CheckpointError naming the file otherwise."""
    if "config" in ckpt:  # compared before any weight is loaded: the settings name the mismatch, tensors do not
        try:
            saved = from_dict(Config, ckpt["config"])
        except ConfigError as e:
            raise checkpoint.CheckpointError(f"checkpoint {path}: its stored config is not valid ({e})") from None
        diffs = resume_differences(saved, cfg)
        if diffs:
            key, old, new = diffs[0]
            more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
            raise checkpoint.CheckpointError(
                f"checkpoint {path}: saved with {key}={json.dumps(old)}, but this run has {key}={json.dumps(new)}"
                f"{more}; a run resumes only with the network and world it was saved with")
    bad = checkpoint.first_non_finite({k: ckpt.get(k) for k in ("model", "probes", "optimizer", "probe_optimizer")})
    if bad:  # written before checkpoints were checked, or damaged since
        earlier = path.parent / PREVIOUS
        hint = (f"continue from the one before it: python run.py train --resume {earlier}"
                if earlier.is_file() and earlier != path else "there is no earlier checkpoint to continue from")
        raise checkpoint.CheckpointError(f"checkpoint {path}: holds NaN/inf ({bad}); {hint}")
    try:
        model.load_state_dict(ckpt["model"])
        probes.load_state_dict(ckpt["probes"])
        optimizer.load_state_dict(ckpt["optimizer"])
        probe_opt.load_state_dict(ckpt["probe_optimizer"])
    except KeyError as e:
        raise checkpoint.CheckpointError(f"checkpoint {path}: no {e} entry; expected a checkpoint written by "
                                         "run.py train") from None
    except (RuntimeError, ValueError) as e:  # load_state_dict's shape and key mismatches
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        detail = next((line for line in lines if not line.startswith("Error(s) in loading")), lines[0] if lines
                      else type(e).__name__)
        raise checkpoint.CheckpointError(f"checkpoint {path}: does not fit this run's network "
                                         f"({detail[:300]})") from None


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


class Checkpointer:
    """Writes the run's checkpoints after checking them finite, and remembers the newest good one, which a
    divergence message names (``diverged``)."""

    def __init__(self, cfg: Config, run_dir: Path, model: nn.Module, probes: nn.Module,
                 optimizer: torch.optim.Optimizer, probe_opt: torch.optim.Optimizer, source: SequenceSource,
                 world: envs.World):
        self.cfg, self.run_dir, self.model, self.probes = cfg, run_dir, model, probes
        self.optimizer, self.probe_opt, self.source, self.world = optimizer, probe_opt, source, world
        self.last_good: tuple[Path, int] | None = None  # the newest checkpoint known to exist and hold finite values

    def diverged(self, what: str) -> TrainingDiverged:
        run_dir, lr = self.run_dir, self.cfg.optim.lr
        if self.last_good is None:
            return TrainingDiverged(f"{what}; stopped. No checkpoint was written before it, so there is nothing to "
                                    f"resume: start again with a lower optim.lr (now {lr:g}) or check the data")
        path, good_step = self.last_good
        latest = path == run_dir / LATEST
        older = (f"; should it diverge again, the one before it: --resume {run_dir / PREVIOUS}"
                 if latest and (run_dir / PREVIOUS).is_file() else "")
        return TrainingDiverged(f"{what}; stopped. The last good checkpoint is {path} (step {good_step}, finite); "
                                f"continue from it with a lower learning rate: python run.py train --resume "
                                f"{run_dir if latest else path} --set optim.lr=LR (now {lr:g}){older}")

    def save(self, path: Path, step: int) -> None:
        model, source, nproc = self.model, self.source, ddp.world_size()
        state = {"model": model.state_dict(), "probes": self.probes.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "probe_optimizer": self.probe_opt.state_dict()}
        # The loss is checked at every sync step, but the update after the last loss can still leave NaN/inf
        # (or the optimizer's moments overflow first): such a state would replace the last good checkpoint.
        # Every rank holds the same weights and optimizer state, so every rank raises here alike.
        bad = checkpoint.first_non_finite(state)
        if bad:
            raise self.diverged(f"{bad} became NaN/inf at step {step}")
        # Under torchrun: every rank's stream and RNG (for resume) and a digest of its parameters (all equal).
        ranks = ddp.all_gather_object({"source": source.state_dict(), "rng": checkpoint.rng_state(),
                                       "params": ddp.param_digest(model)}) if nproc > 1 else None
        if ddp.is_main():
            checkpoint.save({**state, "source": source.state_dict(), "rng": checkpoint.rng_state(), "step": step,
                             "config": to_dict(self.cfg), "method": self.cfg.model.method,
                             "model_hparams": model.hparams,
                             "world": {"num_classes": self.world.num_classes, "action_dim": self.world.action_dim},
                             **({"ranks": ranks} if ranks else {})}, path, previous=self.run_dir / PREVIOUS)
        self.last_good = (path, step)
        ddp.barrier()  # the other ranks wait for rank 0's checkpoint
        if ranks and len({r["params"] for r in ranks}) > 1:
            raise RuntimeError(f"parameters differ across ranks at step {step} (digests "
                               f"{[r['params'] for r in ranks]}); {path} holds rank 0's")


def train_step(batch: envs.Batch, *, forward: nn.Module, model: nn.Module, probes: OnlineProbes,
               optimizer: torch.optim.Optimizer, probe_opt: torch.optim.Optimizer, lr: float, tau: float,
               bf16: bool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimisation step of the model (lr, forward, backward, AdamW, EMA at ``tau``) and of the online
    probes on its detached features. Returns loss, probe top-1, the encoder outputs' and z_agg's spread, all
    on the device (no host sync)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        out = forward(batch.views, batch.actions)
    loss = out["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    model.update_target(tau)

    z_agg, z_pair = probe_features(out)  # baselines have no aggregate: probe their encoder
    probe_loss, acc = probes(z_agg, z_pair, batch.labels, batch.actions[:, 0])
    probe_opt.zero_grad(set_to_none=True)
    probe_loss.backward()
    ddp.average_gradients(probes)  # the probes sit outside DDP; this keeps them equal on every rank
    probe_opt.step()
    return loss.detach(), acc, out["z"].detach().float().std(0).mean(), z_agg.float().std(0).mean()


def log_metrics(writer, m: list[float], held: dict[str, float], *, step: int, cfg: Config, lr: float,
                views_per_s: float) -> str:
    """Write one log step's scalars to TensorBoard; return its console line."""
    for tag, v in zip(("train/loss", "probe_online/top1_z_agg", "stats/z_std", "stats/z_agg_std"), m):
        writer.add_scalar(tag, v, step)
    for key, v in held.items():
        writer.add_scalar(f"probe_online/{key}", v, step)
    writer.add_scalar("train/lr", lr, step)
    writer.add_scalar("train/tau", tau_at(step - 1, cfg.train.steps, cfg.model.tau_base), step)
    writer.add_scalar("perf/views_per_s", views_per_s, step)
    use = f"{held['action_use']:.2f}x" if "action_use" in held else "-"
    return (f"step {step}/{cfg.train.steps} loss {m[0]:.4f} probe top1 {100 * m[1]:.1f}% "
            f"r2 {held.get('r2_rel_action', float('nan')):.3f} action use {use} lr {lr:.2e} {views_per_s:.0f} views/s")


def train(cfg: Config, run_dir: Path, *, resume: bool = False, resume_from: Path | None = None,
          stop_after: int | None = None, on_end: Callable[..., None] | None = None,
          log: Callable[[str], None] = print) -> dict:
    """Train (or continue) the run in ``run_dir``. ``stop_after`` ends early after N steps (for tests).

    ``on_end(writer, model, world, cfg, step=, device=, bank=, log=)`` runs on the main process after the last
    step, before the TensorBoard writer closes: run.py passes ``eval.tensorboard.end_of_training`` (the embedding
    projector, inspection images, hparams), which lives in the evaluation layer above this one.

    ``resume`` continues from ``run_dir/latest.pt``, or from ``resume_from`` (e.g. ``run_dir/previous.pt``).
    Every checkpoint is checked finite before it is written, and the one it replaces is kept as previous.pt, so a
    divergence (TrainingDiverged) always leaves a finite checkpoint to continue from with a lower learning rate.

    Returns a summary dict: final step, last loss, seconds, and the run folder.
    """
    from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow to import

    # Under torchrun: join the process group, on cuda:LOCAL_RANK. Otherwise rank 0 of 1 and nothing changes.
    device = ddp.setup(resolve_device(cfg.train.device))
    rank, nproc, main = ddp.rank(), ddp.world_size(), ddp.is_main()
    if not main:
        log = lambda msg: None  # noqa: E731  (rank 0 speaks for every process)
    if cfg.train.batch_size % nproc or cfg.train.batch_size // nproc < 2:
        raise ConfigError(f"train.batch_size: got {cfg.train.batch_size}; it is the global batch, so it must be a "
                          f"multiple of the {nproc} processes with at least 2 sequences each")
    shared = nproc > 1 and cfg.train.ddp_data == "shared"
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    bf16 = use_bf16(cfg.train.bf16, device)
    channels_last = bf16 if cfg.train.channels_last == "auto" else cfg.train.channels_last == "on"
    torch.manual_seed(cfg.train.seed)

    world = build_world(cfg, device, "train")  # a bad world option fails here, before anything is written
    if cfg.world.source == "live":
        check_agent(cfg.world.agent, world)  # so does an agent that does not fit the world
    if cfg.world.source == "bank" and cfg.world.bank_views < cfg.train.seq_len + 1:
        raise ConfigError(f"world.bank_views: got {cfg.world.bank_views}; must be >= train.seq_len + 1 = "
                          f"{cfg.train.seq_len + 1}")
    source, bank = build_source(cfg, world, device, rank=rank, nproc=nproc, shared=shared, log=log)
    # A fixed batch of the test split for the log-time measurements (action use, relative-action R²); every rank
    # draws it, since the probes' target scale comes from it, and only rank 0 measures.
    monitor = HeldOutMonitor.build(cfg, device, source.policy, cfg.train.batch_size // nproc, log)

    model = build_model(cfg, world).to(device)
    if cfg.train.sync_batchnorm and nproc > 1:
        model = ddp.convert_sync_batchnorm(model, device)
    model.channels_last = channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    probes = OnlineProbes(agg_dim=getattr(model, "d_model", model.dim), z_dim=model.dim, num_classes=world.num_classes,
                          action_dim=world.action_dim).to(device)
    probes.set_action_scale(monitor.batch.actions[:, 0])
    optimizer = torch.optim.AdamW(model.param_groups(cfg.optim.weight_decay), lr=cfg.optim.start_lr,
                                  betas=(cfg.optim.beta1, cfg.optim.beta2), fused=device.type == "cuda")
    probe_opt = torch.optim.Adam(probes.parameters(), lr=cfg.optim.probe_lr)
    if rank:  # every rank built the same initial weights from train.seed; from here on (dropout) they differ
        torch.manual_seed(ddp.stream_seed(cfg.train.seed, rank))
    net = model
    if nproc > 1:  # gradients averaged over ranks, so every rank takes the same step and the same EMA update
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.model.method != "seqjepa")  # a baseline's optional heads may sit idle
    forward = torch.compile(net) if cfg.train.compile else net
    ckpt_writer = Checkpointer(cfg, run_dir, model, probes, optimizer, probe_opt, source, world)

    step = 0
    if main and run_dir.is_dir():
        checkpoint.remove_stale_temps(run_dir)  # left by a process killed while it saved
    if resume:
        path = Path(resume_from or run_dir / LATEST)
        ckpt = checkpoint.load(path, map_location=device)
        restore(ckpt, path, cfg, model, probes, optimizer, probe_opt)
        step = ckpt["step"]
        ckpt_writer.last_good = (path, step)
        resume_streams(ckpt, source, cfg, step, shared, log)
        log(f"resumed {run_dir} at step {step}" + ("" if path == run_dir / LATEST else f" from {path.name}"))
    elif main:
        run_dir.mkdir(parents=True, exist_ok=True)
        checkpoint.write_json(run_dir / "config.json", {**to_dict(cfg), "versions": versions(), "command": sys.argv})
        log(f"run folder: {run_dir}")

    writer = SummaryWriter(str(run_dir)) if main else ddp.Silent()
    if step == 0:
        writer.add_text("config", "```json\n" + json.dumps(to_dict(cfg), indent=2) + "\n```", 0)
    show_bar = main and (cfg.train.progress == "on" or (cfg.train.progress == "auto" and sys.stderr.isatty()))
    bar = None
    if show_bar:
        from tqdm import tqdm
        bar = tqdm(total=cfg.train.steps, initial=step, dynamic_ncols=True)

    # Metrics are summed on the device and read every log_every steps: no host sync in the hot loop.
    sums = torch.zeros(4, device=device)  # loss, probe acc, z std, z_agg std
    first_bad = torch.full((), -1, device=device, dtype=torch.long)
    views_per_step = cfg.train.batch_size * (cfg.train.seq_len + 1)
    t0, t_log, steps_logged, start_step = time.time(), time.time(), 0, step
    model.train()
    probes.train()
    while step < cfg.train.steps:
        lr = lr_at(step, cfg)
        batch = source.next()
        batch = to_device(ddp.shard(batch) if shared else batch, device)
        metrics = train_step(batch, forward=forward, model=model, probes=probes, optimizer=optimizer,
                             probe_opt=probe_opt, lr=lr, tau=tau_at(step, cfg.train.steps, cfg.model.tau_base),
                             bf16=bf16, device=device)
        bad = ~torch.isfinite(metrics[0])
        first_bad = torch.where(bad & (first_bad < 0), torch.full_like(first_bad, step), first_bad)
        sums += torch.stack([metrics[0].float(), *metrics[1:]])
        step += 1
        steps_logged += 1
        if bar is not None:
            bar.update(1)

        sync = step % cfg.train.log_every == 0 or step % cfg.train.ckpt_every == 0 or step == cfg.train.steps
        if not sync and step != stop_after:
            continue
        first_bad = ddp.earliest(first_bad)  # any rank's first bad step
        if first_bad.item() >= 0:  # checked before any save: the last good checkpoint stays as it was
            raise ckpt_writer.diverged(f"loss became NaN/inf at step {first_bad.item() + 1}")
        if step % cfg.train.log_every == 0 or step == cfg.train.steps:
            m = (ddp.all_reduce_mean(sums) / steps_logged).tolist()
            views_per_s = views_per_step * steps_logged / (time.time() - t_log)  # before the measurement below
            # On the held-out batch, in eval mode, rank 0 only (nothing it does reaches the training state).
            held = monitor.measure(model, probes) if main else {}
            msg = log_metrics(writer, m, held, step=step, cfg=cfg, lr=lr, views_per_s=views_per_s)
            if bar is not None:
                bar.set_postfix_str(msg.split(" ", 2)[2])
            elif step % (cfg.train.log_every * 4) == 0 or step == cfg.train.steps:
                log(msg)
            sums.zero_()
            steps_logged, t_log = 0, time.time()
        if step % cfg.train.ckpt_every == 0 or step == cfg.train.steps or step == stop_after:
            ckpt_writer.save(run_dir / LATEST, step)
        if step == stop_after:
            break
    if bar is not None:
        bar.close()
    if main and on_end is not None:
        on_end(writer, model, world, cfg, step=step, device=device, bank=bank, log=log)
    writer.close()
    return {"step": step, "seconds": time.time() - t0, "steps_run": step - start_step, "run_dir": str(run_dir)}
