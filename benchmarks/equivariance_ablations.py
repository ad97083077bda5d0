"""Where does equivariance come from? One training run with probes along the way, for the ablation tables.

    python benchmarks/equivariance_ablations.py --name R2 --set world.options.pose_paint=1 --every 100000
    python benchmarks/equivariance_ablations.py --name frozen --freeze-encoder 1500 --set train.steps=1500

Trains the library's seq-JEPA from the cpu preset plus ``--set`` overrides (its world, bank, schedules and bf16
setting), optionally with the encoder frozen at its initialisation for the first ``--freeze-encoder`` steps, and at
step 0 (random init), every ``--every`` steps and at the end measures on held-out objects (the test split's bank):
- action use: mean loss with another sequence's a_M / with the true one, eval mode, 4 x 256 sequences;
- relative-action R² per factor: MLP 256-256 on [z_0, z_1], 3000 train pairs (10 % held out to pick the epoch) /
  1000 test pairs, 30 epochs, Adam 1e-3 (the paper's per-dimension mean; a quicker probe than the suite's);
and at step 0 and the end also z_agg top-1 at M_val = 1 and 5 (linear, 30 epochs) and the pose's and nuisances'
shares of the target encoder's within-object embedding variance. One JSON line per measurement goes to ``--out``
and to the console; docs/results.md's ablation table is made from those records.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.features import collect  # noqa: E402
from eval.probes import fit_classifier, fit_regressor  # noqa: E402
from seqjepa.config import preset  # noqa: E402
from seqjepa.options import apply_overrides  # noqa: E402
from seqjepa.model import action_use, derangement, tau_at  # noqa: E402
from seqjepa.data import build_bank, build_world  # noqa: E402
from seqjepa.device import use_bf16  # noqa: E402
from seqjepa.model import evaluating  # noqa: E402
from seqjepa.train import build_model, lr_at  # noqa: E402


@torch.no_grad()
def action_ratio(model, world, bank, seq_len: int, bf16: bool, batches: int = 4, n: int = 256) -> float:
    """seqjepa.train.action_use on ``batches`` x ``n`` held-out sequences: mean loss with another sequence's a_M
    over mean loss with the true actions."""
    g = torch.Generator().manual_seed(123)
    true = shuffled = 0.0
    with evaluating(model), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for _ in range(batches):
            b = bank.sample(world, n, seq_len + 1, g)
            losses = action_use(model, b.views, b.actions, b.actions[derangement(n, g)])
            true += float(losses["true"].mean())
            shuffled += float(losses["last shuffled"].mean())
    return shuffled / true


def features(model, world, bank, n: int, steps: int, seed: int, m_val: list[int], bf16: bool) -> dict:
    g = torch.Generator().manual_seed(seed)
    batches = [bank.sample(world, min(500, n - i), steps, g) for i in range(0, n, 500)]
    return collect(model, batches, m_val=m_val, device="cpu", autocast=bf16)


@torch.no_grad()
def pose_share(model, world, n: int = 64, k: int = 8) -> dict:
    """The pose's and the nuisances' within-object shares of the target encoder's embedding variance.

    As ../shared/tools/embedding_variance.py: n objects under k poses (nuisances fixed) and under k nuisance draws
    (pose fixed), unit-normalised EMA-target embeddings, each factor's mean within-object variance over the total.
    """
    g = torch.Generator().manual_seed(0)
    state = world.reset(n, g)
    base = state["params"]
    views = {}
    for vary in ("pose", "nuisances"):
        out = []
        for _ in range(k):
            p, q = base.clone(), world._sample_params(n, g)  # a diagnostic: the world's own sampler
            if vary == "pose":
                p[:, :3] = q[:, :3]
            else:
                p[:, 3:] = q[:, 3:]
            out.append(world.render({**state, "params": p}))
        views[vary] = torch.stack(out, 1)
    was = model.training
    model.eval()
    z = {v: torch.nn.functional.normalize(model.encode_target(x).float(), dim=-1) for v, x in views.items()}
    model.train(was)
    every = torch.cat(list(z.values()), 1).flatten(0, 1)
    total = ((every - every.mean(0)) ** 2).sum(-1).mean()
    within = lambda e: ((e - e.mean(1, keepdim=True)) ** 2).sum(-1).mean()  # noqa: E731
    return {f"share/{v}": round(float(within(e) / total), 4) for v, e in z.items()}


def probe(model, worlds, banks, bf16: bool, classes: bool) -> dict:
    (w_tr, w_te), (b_tr, b_te) = worlds, banks
    m_val = [1, 5] if classes else [1]
    tr = features(model, w_tr, b_tr, 3000, 5 if classes else 2, 1, m_val, bf16)
    te = features(model, w_te, b_te, 1000, 5 if classes else 2, 2, m_val, bf16)
    rel_tr = w_tr.relative(tr["params"][:, 0], tr["params"][:, 1])
    rel_te = w_te.relative(te["params"][:, 0], te["params"][:, 1])
    pair = lambda f: torch.cat([f["z"][:, 0], f["z"][:, 1]], 1)  # noqa: E731
    out = {}
    for name, factor in w_tr.factors.items():
        fit = fit_regressor(pair(tr), rel_tr[:, factor.slice], pair(te), rel_te[:, factor.slice], head="mlp",
                            hidden=256, epochs=30, lr=1e-3, batch_size=128, seed=0, val_fraction=0.1)
        out[f"r2/{name}"] = round(fit["r2"], 4)
    if classes:
        for m in m_val:
            out[f"top1/z_agg_M{m}"] = round(fit_classifier(tr["z_agg"][m], tr["labels"], te["z_agg"][m], te["labels"],
                                                           num_classes=w_tr.num_classes, epochs=30, lr=1e-3,
                                                           batch_size=128, seed=0), 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--every", type=int, default=500)
    p.add_argument("--freeze-encoder", type=int, default=0, help="steps with the encoder frozen at init")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--save", type=Path, help="write the trained model's state dict here")
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/ablations.jsonl"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = preset("cpu")
    apply_overrides(cfg, args.set)
    torch.manual_seed(cfg.train.seed)
    dev = torch.device("cpu")
    bf16 = use_bf16(cfg.train.bf16, dev)
    w_tr, w_te = build_world(cfg, dev, "train"), build_world(cfg, dev, "test")
    b_tr, b_te = build_bank(cfg, w_tr, "train", print), build_bank(cfg, w_te, "test", print)
    model = build_model(cfg, w_tr)
    model.channels_last = True
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.param_groups(cfg.optim.weight_decay), lr=cfg.optim.start_lr)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def report(step, extra=None):
        classes = step in (0, cfg.train.steps)
        rec = {"name": args.name, "step": step, "set": args.set, "freeze_encoder": args.freeze_encoder,
               "action_use": round(action_ratio(model, w_te, b_te, cfg.train.seq_len, bf16), 4),
               **probe(model, (w_tr, w_te), (b_tr, b_te), bf16, classes),
               **(pose_share(model, w_te) if classes else {}), **(extra or {})}
        print(json.dumps(rec), flush=True)
        with open(args.out, "a") as fh:
            fh.write(json.dumps(rec) + "\n")

    report(0)
    t0, losses = time.time(), []
    model.train()
    for step in range(cfg.train.steps):
        frozen = step < args.freeze_encoder
        model.encoder.requires_grad_(not frozen)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        b = b_tr.sample(w_tr, cfg.train.batch_size, cfg.train.seq_len + 1, gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(b.views, b.actions)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        if not frozen:
            model.update_target(tau_at(step, cfg.train.steps, cfg.model.tau_base))
        losses.append(float(out["loss"].detach()))
        if (step + 1) % args.every == 0 or step + 1 == cfg.train.steps:
            report(step + 1, {"loss": round(sum(losses[-50:]) / len(losses[-50:]), 5),
                              "seconds": round(time.time() - t0)})
    if args.save:
        torch.save(model.state_dict(), args.save)


if __name__ == "__main__":
    main()
