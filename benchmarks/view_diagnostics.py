"""How much class is in a world's views, and how many directions a trained encoder uses.

    python benchmarks/view_diagnostics.py runs/worlds/saccades-s0 runs/worlds/rotatingobjects-s0

For each run folder of any method (its ``latest.pt`` names the world, the bank and the encoder), on the run's own
view banks:

- **effective rank** of the encoder output z on 1024 train-bank views, trained and at the initialisation the run
  started from (``train.seed``, as ``run.py eval``'s random init): exp of the entropy of the normalised PCA
  spectrum, with the share of the variance in the first 5 components. A low rank is dimensional collapse: few
  directions left for the probes.
- **supervised ceiling**: that initial encoder trained *with labels* on single train-bank views (a linear
  head, cross-entropy, AdamW at the run's lr and weight decay, batch 128, ``--steps`` steps), scored on the test
  bank's held-out episodes for one view, for the mean logits of ``--views`` views of an episode, and for the
  world's clean view of each test episode where it has one (``World.clean_views``: the saccade scene's glimpse on
  its class object). It says how much of the class a view shows, which self-supervised probes cannot be expected
  to beat.
- **supervised equivariance ceiling**: the same initial encoder trained *with the relative action* as target: an
  MLP 256-256 on [z_1, z_2] of two views of an episode regresses ``world.relative`` (standardised, MSE), trained
  with the encoder as above; R² per factor of the world (mean over its dimensions, the equivariance suite's number)
  on pairs of the test bank. It says whether a factor of the action can be read from two views at all: a factor
  that a supervised encoder cannot recover is not a self-supervised failure.

Every number is measured; one line per run and quantity.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.plan_eval import load_model  # noqa: E402
from eval.from_checkpoint import checkpoint_network  # noqa: E402
from eval.probes import r2_score  # noqa: E402
from seqjepa.data import build_bank, build_world  # noqa: E402


def effective_rank(z: torch.Tensor) -> tuple[float, float]:
    """(exp entropy of the normalised PCA spectrum, variance share of the top 5 components) of z [N, D]."""
    s = torch.linalg.svdvals(z - z.mean(0))
    p = s ** 2 / (s ** 2).sum()
    return float(torch.exp(-(p * p.clamp_min(1e-12).log()).sum())), float(p[:5].sum())


def _fit(model: nn.Module, head: nn.Module, cfg, steps: int, loss_of) -> None:
    """Train ``model``'s encoder and ``head`` together for ``steps`` AdamW steps of ``loss_of()``."""
    model.train()
    opt = torch.optim.AdamW([*model.encoder.parameters(), *head.parameters()], lr=cfg.optim.lr,
                            weight_decay=cfg.optim.weight_decay)
    for _ in range(steps):
        loss = loss_of()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()


def supervised_ceiling(model: nn.Module, cfg, world, train, test, steps: int, views: int, seed: int,
                       test_world) -> tuple[float, float, float | None]:
    """Test top-1 (%) of ``model``'s encoder (trained in place) trained with labels on single views of the
    ``train`` bank: on one ``test``-bank view, on the mean logits of ``views`` views, and on the clean view of
    each of ``test_world``'s episodes (None where it has none: ``World.clean_views``)."""
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    head = nn.Linear(model.encoder.out_dim, world.num_classes).to(device)
    g = torch.Generator(device=train.views.device).manual_seed(seed)

    def loss_of():
        b = train.sample(world, 128, 1, g)
        return F.cross_entropy(head(model.encode(b.views)[:, 0]), b.labels.to(device))

    _fit(model, head, cfg, steps, loss_of)
    with torch.no_grad():
        b = test.sample(world, 2000, views, g)
        logits = torch.stack([head(model.encode(b.views[i:i + 250])) for i in range(0, 2000, 250)])
        logits, labels = logits.flatten(0, 1), b.labels.to(device)
        one = (logits[:, 0].argmax(-1) == labels).float().mean()
        many = (logits.mean(1).argmax(-1) == labels).float().mean()
        episodes = torch.arange(test_world.num_episodes)
        shown, clean = test_world.clean_views(episodes), None
        if shown is not None:
            pred = torch.cat([head(model.encode(c.to(device)[:, None])[:, 0]).argmax(-1) for c in shown.split(250)])
            clean = 100 * float((pred == test_world.labels[episodes].to(device)).float().mean())
    return 100 * float(one), 100 * float(many), clean


def supervised_equivariance(model: nn.Module, cfg, world, train, test, steps: int, seed: int
                            ) -> dict[str, float]:
    """Test R² per factor of ``world.relative`` between two views, regressed from [z_1, z_2] by an MLP trained
    with ``model``'s encoder (in place) on pairs of the ``train`` bank; scored on 2000 ``test``-bank pairs."""
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    d = model.encoder.out_dim
    head = nn.Sequential(nn.Linear(2 * d, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, world.action_dim)).to(device)
    g = torch.Generator(device=train.views.device).manual_seed(seed)
    ref = train.sample(world, 4096, 2, g).actions[:, 0].float().to(device)
    mean, std = ref.mean(0), ref.std(0).clamp_min(1e-6)   # standardised targets: every factor counts

    def predict(views):
        return head(model.encode(views).flatten(1))

    def loss_of():
        b = train.sample(world, 128, 2, g)
        return F.mse_loss(predict(b.views), (b.actions[:, 0].float().to(device) - mean) / std)

    _fit(model, head, cfg, steps, loss_of)
    with torch.no_grad():
        b = test.sample(world, 2000, 2, g)
        pred = torch.cat([predict(b.views[i:i + 250]) for i in range(0, 2000, 250)]) * std + mean
        true = b.actions[:, 0].float().to(device)
    return {name: float(r2_score(true[:, f.slice].cpu(), pred[:, f.slice].cpu())) for name, f in
            world.factors.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders holding latest.pt")
    p.add_argument("--steps", type=int, default=800, help="supervised training steps of each ceiling (0: skip both)")
    p.add_argument("--views", type=int, default=5, help="views whose logits the multi-view ceiling averages")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for run in args.runs:
        trained, cfg, ckpt = load_model(run / "latest.pt", require_predictor=False, trusted=True)  # eval mode, frozen
        device = next(trained.parameters()).device
        world = build_world(cfg, device, "train")
        bank = build_bank(cfg, world, "train", lambda m: None)
        b = bank.sample(world, 1024, 1, torch.Generator(device=bank.views.device).manual_seed(args.seed + 1))
        fresh = checkpoint_network(ckpt, cfg, trained=False).to(device).eval()
        with torch.no_grad():
            ranks = {name: effective_rank(m.encode(b.views)[:, 0].float()) for name, m in
                     (("trained", trained), ("random init", fresh))}
        print(f"{run}: effective rank of z on 1024 train-bank views: " + "; ".join(
            f"{k} {r:.1f} (top-5 PCs {100 * v:.0f} % of variance)" for k, (r, v) in ranks.items()), flush=True)
        if not args.steps:
            continue
        test_world = build_world(cfg, device, "test")
        test = build_bank(cfg, test_world, "test", lambda m: None)
        how = (f"{args.steps} steps, batch 128, AdamW lr {cfg.optim.lr:g} wd {cfg.optim.weight_decay:g}, "
               f"seed {args.seed}")
        t = time.perf_counter()
        one, many, clean = supervised_ceiling(copy.deepcopy(fresh), cfg, world, bank, test, args.steps,
                                              args.views, args.seed, test_world)
        clean = "" if clean is None else f", {clean:.1f} % from the clean view of each test episode"
        print(f"{run}: supervised ceiling ({how}, {time.perf_counter() - t:.0f} s): test top-1 "
              f"{one:.1f} % from one view, {many:.1f} % from the mean logits of {args.views} views{clean} "
              f"(chance {100 / world.num_classes:.1f} %)", flush=True)
        t = time.perf_counter()
        r2 = supervised_equivariance(copy.deepcopy(fresh), cfg, world, bank, test, args.steps, args.seed)
        print(f"{run}: supervised equivariance ceiling ({how}, MLP 256-256 on [z_1, z_2], "
              f"{time.perf_counter() - t:.0f} s): test R² " + ", ".join(f"{k} {v:.3f}" for k, v in r2.items()),
              flush=True)


if __name__ == "__main__":
    main()
