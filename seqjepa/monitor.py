"""What a run shows while it trains: online probes on detached features, and measurements on a fixed held-out batch
(the relative-action R² and the action use) at log steps."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import envs

from . import distributed as ddp
from .config import Config
from .data import build_bank, build_world, to_device
from .metrics import r2_score
from .model import action_use, derangement, evaluating, uses_next_action


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
