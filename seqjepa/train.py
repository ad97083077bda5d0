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
from torch import nn

import envs
from agents import check_agent
from envs import SequenceSource, ViewBank

from . import checkpoint, files
from . import distributed as ddp
from .config import Config, resume_differences
from .options import ConfigError, from_dict, to_dict
from .data import build_source, build_world, resume_streams, to_device
from .device import resolve_device, use_bf16, use_channels_last
from .model import tau_at
from .monitor import HeldOutMonitor, OnlineProbes, probe_features
from .progress import wants_bar


class TrainingDiverged(RuntimeError):
    """The loss, the weights or the optimizer state became NaN or infinite."""


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


def build_model(cfg: Config, world: envs.World) -> nn.Module:
    """seq-JEPA or the baseline ``cfg.model.method`` names (seqjepa.baselines.METHODS), sized by the run's preset,
    normalising views with the world's ``pixel_mean``/``pixel_std`` and batching actions as its ``action_bn`` says."""
    from .baselines import build
    return build(cfg.model, action_dim=world.action_dim, preset=cfg.preset, mean=world.pixel_mean,
                 std=world.pixel_std, action_bn=world.action_bn)


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


METRICS = ("loss", "probe_top1", "z_std", "z_agg_std")  # what train_step returns, in the order they are summed
TAGS = {"loss": "train/loss", "probe_top1": "probe_online/top1_z_agg", "z_std": "stats/z_std",
        "z_agg_std": "stats/z_agg_std"}


def train_step(batch: envs.Batch, *, forward: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer,
               lr: float, tau: float, bf16: bool, device: torch.device, probes: OnlineProbes | None = None,
               probe_opt: torch.optim.Optimizer | None = None) -> dict[str, torch.Tensor]:
    """One optimisation step of the model (lr, forward, backward, optimizer, EMA at ``tau``) and, given
    ``probes``, of the online probes on its detached features. Returns METRICS by name (only ``loss`` without
    probes), each a scalar on the device: nothing here waits for the device."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        out = forward(batch.views, batch.actions)
    loss = out["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    model.update_target(tau)
    if probes is None:
        return {"loss": loss.detach()}

    z_agg, z_pair = probe_features(out)  # baselines have no aggregate: probe their encoder
    probe_loss, acc = probes(z_agg, z_pair, batch.labels, batch.actions[:, 0])
    probe_opt.zero_grad(set_to_none=True)
    probe_loss.backward()
    ddp.average_gradients(probes)  # the probes sit outside DDP; this keeps them equal on every rank
    probe_opt.step()
    return {"loss": loss.detach(), "probe_top1": acc, "z_std": out["z"].detach().float().std(0).mean(),
            "z_agg_std": z_agg.float().std(0).mean()}


class Means:
    """Named metrics summed on the device step by step; :meth:`read` averages them over steps and ranks, the one
    host sync of a log step. Also remembers the first step whose loss was not finite."""

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(len(METRICS), device=device)
        self.first_bad = torch.full((), -1, device=device, dtype=torch.long)
        self.steps = 0

    def add(self, metrics: dict[str, torch.Tensor], step: int) -> None:
        bad = ~torch.isfinite(metrics["loss"])
        self.first_bad = torch.where(bad & (self.first_bad < 0), torch.full_like(self.first_bad, step),
                                     self.first_bad)
        self.sums += torch.stack([metrics[k].float() for k in METRICS])
        self.steps += 1

    def first_bad_step(self) -> int | None:
        """The first step (0-based) with a NaN/inf loss on any rank, or None."""
        bad = ddp.earliest(self.first_bad).item()
        return bad if bad >= 0 else None

    def read(self) -> dict[str, float]:
        values = (ddp.all_reduce_mean(self.sums) / self.steps).tolist()
        self.sums.zero_()
        self.steps = 0
        return dict(zip(METRICS, values))


def log_metrics(writer, m: dict[str, float], held: dict[str, float], *, step: int, cfg: Config, lr: float,
                views_per_s: float) -> str:
    """Write one log step's scalars to TensorBoard; return its console line."""
    for key, tag in TAGS.items():
        writer.add_scalar(tag, m[key], step)
    for key, v in held.items():
        writer.add_scalar(f"probe_online/{key}", v, step)
    writer.add_scalar("train/lr", lr, step)
    writer.add_scalar("train/tau", tau_at(step - 1, cfg.train.steps, cfg.model.tau_base), step)
    writer.add_scalar("perf/views_per_s", views_per_s, step)
    use = f"{held['action_use']:.2f}x" if "action_use" in held else "-"
    return (f"step {step}/{cfg.train.steps} loss {m['loss']:.4f} probe top1 {100 * m['probe_top1']:.1f}% "
            f"r2 {held.get('r2_rel_action', float('nan')):.3f} action use {use} lr {lr:.2e} {views_per_s:.0f} views/s")


@dataclasses.dataclass
class Run:
    """Everything the loop of :func:`train` works with, built by :func:`set_up`."""
    cfg: Config
    run_dir: Path
    device: torch.device
    main: bool           # rank 0: logs, measures and saves
    shared: bool         # every rank draws the whole batch from one stream and keeps its slice
    bf16: bool
    world: envs.World
    source: SequenceSource
    bank: ViewBank | None
    monitor: HeldOutMonitor
    model: nn.Module     # the unwrapped network (EMA target, checkpoints)
    forward: nn.Module   # what the step calls: the model, DDP-wrapped and/or compiled
    probes: OnlineProbes
    optimizer: torch.optim.Optimizer
    probe_opt: torch.optim.Optimizer
    checkpointer: Checkpointer
    step: int
    log: Callable[[str], None]


def set_up(cfg: Config, run_dir: Path, *, resume: bool, resume_from: Path | None,
           log: Callable[[str], None]) -> Run:
    """Join the process group (under torchrun), build the data, the network and its optimizers, and open the run
    folder: a fresh one with its config, or the checkpoint to resume from."""
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
    bf16 = use_bf16(cfg.train.bf16, device)
    model, forward, probes, optimizer, probe_opt = build_network(cfg, world, device, monitor, bf16)
    run = Run(cfg, run_dir, device, main, shared, bf16, world, source, bank, monitor,
              model, forward, probes, optimizer, probe_opt,
              Checkpointer(cfg, run_dir, model, probes, optimizer, probe_opt, source, world), 0, log)
    open_run_dir(run, resume=resume, resume_from=resume_from)
    return run


def build_network(cfg: Config, world: envs.World, device: torch.device, monitor: HeldOutMonitor,
                  bf16: bool) -> tuple:
    """The model (channels_last as configured), what the step calls (DDP-wrapped, compiled), the online probes and
    both optimizers: ``(model, forward, probes, optimizer, probe_opt)``."""
    nproc = ddp.world_size()
    channels_last = use_channels_last(cfg.train.channels_last, bf16)
    model = build_model(cfg, world).to(device)
    if cfg.train.sync_batchnorm and nproc > 1:
        model = ddp.convert_sync_batchnorm(model, device)
    model.channels_last = channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    probes = OnlineProbes(agg_dim=model.agg_dim, z_dim=model.dim, num_classes=world.num_classes,
                          action_dim=world.action_dim).to(device)
    probes.set_action_scale(monitor.batch.actions[:, 0])
    optimizer = torch.optim.AdamW(model.param_groups(cfg.optim.weight_decay), lr=cfg.optim.start_lr,
                                  betas=(cfg.optim.beta1, cfg.optim.beta2), fused=device.type == "cuda")
    probe_opt = torch.optim.Adam(probes.parameters(), lr=cfg.optim.probe_lr)
    if ddp.rank():  # every rank built the same initial weights from train.seed; from here on (dropout) they differ
        torch.manual_seed(ddp.stream_seed(cfg.train.seed, ddp.rank()))
    net = model
    if nproc > 1:  # gradients averaged over ranks, so every rank takes the same step and the same EMA update
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.model.method != "seqjepa")  # a baseline's optional heads may sit idle
    forward = torch.compile(net) if cfg.train.compile else net
    return model, forward, probes, optimizer, probe_opt


def open_run_dir(run: Run, *, resume: bool, resume_from: Path | None) -> None:
    """Resume: load the checkpoint into ``run`` and restore the data streams and RNGs. Otherwise create the run
    folder and write its resolved config."""
    cfg, run_dir = run.cfg, run.run_dir
    if run.main and run_dir.is_dir():
        files.remove_stale_temps(run_dir)  # left by a process killed while it saved
    if resume:
        path = Path(resume_from or run_dir / LATEST)
        ckpt = checkpoint.load(path, map_location=run.device)
        restore(ckpt, path, cfg, run.model, run.probes, run.optimizer, run.probe_opt)
        run.step = ckpt["step"]
        run.checkpointer.last_good = (path, run.step)
        resume_streams(ckpt, run.source, cfg, run.step, run.shared, run.log)
        run.log(f"resumed {run_dir} at step {run.step}" + ("" if path == run_dir / LATEST else f" from {path.name}"))
    elif run.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        files.write_json(run_dir / "config.json", {**to_dict(cfg), "versions": versions(), "command": sys.argv})
        run.log(f"run folder: {run_dir}")


def progress_bar(run: Run):
    """A tqdm bar on the main process when train.progress asks for one (``auto``: on a terminal), else None."""
    if not run.main or not wants_bar(run.cfg.train.progress):
        return None
    from tqdm import tqdm
    return tqdm(total=run.cfg.train.steps, initial=run.step, dynamic_ncols=True)


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

    Returns a summary dict: final step, steps run, seconds, and the run folder.
    """
    from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow to import

    run = set_up(cfg, run_dir, resume=resume, resume_from=resume_from, log=log)
    step, start_step = run.step, run.step
    writer = SummaryWriter(str(run_dir)) if run.main else ddp.Silent()
    if step == 0:
        writer.add_text("config", "```json\n" + json.dumps(to_dict(cfg), indent=2) + "\n```", 0)
    bar = progress_bar(run)
    means = Means(run.device)  # read every log_every steps: no host sync in the hot loop
    views_per_step = cfg.train.batch_size * (cfg.train.seq_len + 1)
    t0 = t_log = time.time()
    run.model.train()
    run.probes.train()
    while step < cfg.train.steps:
        lr = lr_at(step, cfg)
        batch = run.source.next()
        batch = to_device(ddp.shard(batch) if run.shared else batch, run.device)
        metrics = train_step(batch, forward=run.forward, model=run.model, optimizer=run.optimizer, lr=lr,
                             tau=tau_at(step, cfg.train.steps, cfg.model.tau_base), bf16=run.bf16,
                             device=run.device, probes=run.probes, probe_opt=run.probe_opt)
        means.add(metrics, step)
        step += 1
        if bar is not None:
            bar.update(1)

        log_now = step % cfg.train.log_every == 0 or step == cfg.train.steps
        save_now = step % cfg.train.ckpt_every == 0 or step == cfg.train.steps or step == stop_after
        if not (log_now or save_now):
            continue
        bad = means.first_bad_step()
        if bad is not None:  # checked before any save: the last good checkpoint stays as it was
            raise run.checkpointer.diverged(f"loss became NaN/inf at step {bad + 1}")
        if log_now:
            views_per_s = views_per_step * means.steps / (time.time() - t_log)  # before the measurement below
            # On the held-out batch, in eval mode, rank 0 only (nothing it does reaches the training state).
            held = run.monitor.measure(run.model, run.probes) if run.main else {}
            msg = log_metrics(writer, means.read(), held, step=step, cfg=cfg, lr=lr, views_per_s=views_per_s)
            if bar is not None:
                bar.set_postfix_str(msg.split(" ", 2)[2])
            elif step % (cfg.train.log_every * 4) == 0 or step == cfg.train.steps:
                log(msg)
            t_log = time.time()
        if save_now:
            run.checkpointer.save(run_dir / LATEST, step)
        if step == stop_after:
            break
    if bar is not None:
        bar.close()
    if run.main and on_end is not None:
        on_end(writer, run.model, run.world, cfg, step=step, device=run.device, bank=run.bank, log=run.log)
    writer.close()
    return {"step": step, "seconds": time.time() - t0, "steps_run": step - start_step, "run_dir": str(run_dir)}
