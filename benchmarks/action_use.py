"""Does a trained seq-JEPA predictor use the action? Its loss with the true actions against shuffled ones.

    python benchmarks/action_use.py runs/worlds/rotatingobjects-s0 runs/worlds/saccades-s0 runs/worlds/augmentations-s0

For each run: batches of training sequences from the run's own view bank, the model in eval mode, and the mean
loss (1 - cosine to the target embedding) with (a) the true actions, (b) the last action (the one the predictor
is conditioned on) taken from another sequence of the batch, (c) every action of another sequence. If (b) is no
worse than (a), the predictor ignores where the next view is, and nothing pushes the encoder to be equivariant:
the relative-action R² then stays at random-init level. Prints one line per run; the numbers are measured.
The measurement is ``seqjepa.train.action_use``, the one the training loop logs at every log step on its held-out
batch (TensorBoard ``probe_online/action_use``); "another sequence" is a derangement of the batch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.plan_eval import load_model  # noqa: E402
from seqjepa.model import action_use as losses_of, derangement  # noqa: E402
from seqjepa.data import build_bank, build_world  # noqa: E402


@torch.no_grad()
def action_use(run: Path, batches: int, batch_size: int, seed: int) -> dict[str, float]:
    model, cfg, _ = load_model(run / "latest.pt", trusted=True)  # eval mode, frozen, on the run's device
    if cfg.model.method != "seqjepa":
        raise SystemExit(f"{run}: model.method is {cfg.model.method!r}; this checks seq-JEPA's predictor")
    world = build_world(cfg, next(model.parameters()).device, "train")
    bank = build_bank(cfg, world, "train", lambda s: None)
    g = torch.Generator(device=world.device).manual_seed(seed)
    sums = {"true": 0.0, "last shuffled": 0.0, "all shuffled": 0.0}
    for _ in range(batches):
        b = bank.sample(world, batch_size, cfg.train.seq_len + 1, g)
        losses = losses_of(model, b.views, b.actions, b.actions[derangement(batch_size, g)], all_shuffled=True)
        for name, per_sequence in losses.items():
            sums[name] += float(per_sequence.mean()) / batches
    return sums


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders holding latest.pt")
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    print(f"loss = 1 - cos(z_hat, target), eval mode, {args.batches} x {args.batch_size} bank sequences, "
          f"seed {args.seed}")
    for run in args.runs:
        r = action_use(run, args.batches, args.batch_size, args.seed)
        print(f"{str(run):40s} true {r['true']:.4f}  last action shuffled {r['last shuffled']:.4f} "
              f"(x{r['last shuffled'] / r['true']:.2f})  all shuffled {r['all shuffled']:.4f} "
              f"(x{r['all shuffled'] / r['true']:.2f})")


if __name__ == "__main__":
    main()
