"""Does each procedural world teach the network? Train seq-JEPA briefly on it and compare with random init.

    python benchmarks/world_learning.py                      # ≈ 25 min on an idle 2-core CPU (three worlds)
    python benchmarks/world_learning.py --worlds seqjepa/Saccades-v0 --steps 300
    python benchmarks/world_learning.py --quick              # a minute: checks the script, not the model
    python benchmarks/world_learning.py --worlds seqjepa/Saccades-v0 --seeds 0 1 2   # three training seeds

For every procedural world it runs what ``python run.py train --preset cpu --env ID --set ...`` runs (the settings
are printed in the report), then evaluates the ``linear_probe`` and ``equivariance`` suites on the trained network
and on the same network at its random initialisation, with the same probe data and heads. The report
(``docs/worlds.md``) gives, per world, the encoder's linear-probe top-1, z_agg's top-1 at the largest M_val and
the R² of every factor of the world's relative action, trained beside random init, with the exact command, the
protocol and the wall time. With several training seeds the table gives their means and each seed's difference.
Nothing is hard-coded: the file is written from what was measured.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.from_checkpoint import evaluate_checkpoint  # noqa: E402
from seqjepa.config import preset  # noqa: E402
from seqjepa.options import apply_overrides  # noqa: E402
from seqjepa.train import train  # noqa: E402

# Each world on the cpu preset; only what the world needs differs. Every world is read from a view bank of
# 1000 episodes x 8 views (the preset's), so the three runs see the same number of distinct views.
WORLDS: dict[str, list[str]] = {
    # Objects: poses in a +-pi/8 box with the floor and light fixed per object, 3000 steps: the setting in which
    # the rotation R² beats random init at CPU scale (docs/results.md); the cpu preset's own run is there too.
    "seqjepa/RotatingObjects-v0": ["world.options.rotation_range=0.3927", "world.options.nuisances=per_episode",
                                   "train.steps=3000"],
    "seqjepa/Augmentations-v0": [],
    # Saccades: fixations drawn around the class object, four to an object: with the bottom-up saliency most
    # glimpses show clutter and the class is not learnt at any budget tried (docs/results.md, which has those runs).
    "seqjepa/Saccades-v0": ["eval.suites=[linear_probe,equivariance,path_integration]",
                            "world.options.saliency=object", "world.options.ior_radius=4"],
}
QUICK = ["eval.train_sequences=200", "eval.test_sequences=100", "eval.linear_epochs=5", "eval.mlp_epochs=5",
         "world.bank_objects=64"]


def settings(env_id: str, seed: int, args) -> list[str]:
    return [*WORLDS[env_id], *([f"train.steps={args.steps}"] if args.steps else []), f"train.seed={seed}",
            f"eval.seed={seed}", *(QUICK if args.quick else []), *(args.set or [])]


def measure(args, command: str) -> dict:
    rows = []
    for env_id, seed in itertools.product(args.worlds, args.seeds):
        cfg = preset("cpu", env_id)
        own = settings(env_id, seed, args)
        apply_overrides(cfg, own + [f"world.cache_dir={args.cache_dir}", "train.progress=off"])
        run_dir = Path(args.runs_dir) / f"{env_id.split('/')[-1].removesuffix('-v0').lower()}-s{seed}"
        print(f"== {env_id}: {cfg.train.steps} steps, seed {seed} -> {run_dir}", flush=True)
        t0 = time.time()
        train(cfg, run_dir, log=lambda s: print("  " + s, flush=True) if s.startswith("step") else None)
        t1 = time.time()
        res = evaluate_checkpoint(run_dir / "latest.pt", trusted=True, log=lambda s: None, tensorboard=False)
        print(f"   trained in {t1 - t0:.0f} s, evaluated in {time.time() - t1:.0f} s", flush=True)
        # The world's factors are those the equivariance suite scored (no second world built just to list them).
        factors = [k.split("/", 1)[1] for k in res["trained"]["metrics"] if k.startswith("equivariance/")]
        rows.append({"env": env_id, "seed": seed, "steps": cfg.train.steps, "command": command, "settings": own,
                     "train_s": t1 - t0, "eval_s": time.time() - t1, "threads": torch.get_num_threads(),
                     "torch": torch.__version__, "factors": factors, "m_val": max(cfg.eval.m_val),
                     "world_options": dict(cfg.world.options),
                     "trained": res["trained"]["metrics"], "random_init": res["random init"]["metrics"]})
    return {"runs": rows}


def _setting(run: dict, name: str) -> int | None:
    """``run[name]``, or for records written before the field existed, the value its settings list gave."""
    if name in run:
        return run[name]
    given = [o.split("=", 1)[1] for o in run["settings"] if o.startswith(f"train.{name}=")]
    return int(given[-1]) if given else None


def setting_key(run: dict) -> tuple:
    """Runs that differ only in their seed share a key: their figures are averaged in one block of rows."""
    other = sorted(o for o in run["settings"] if not o.startswith(("train.seed=", "eval.seed=", "train.steps=")))
    return run["env"], _setting(run, "steps"), tuple(other)


def settings_label(key: tuple) -> str:
    """What a block's runs set beyond the cpu preset and the seed/steps columns, for the table: world options by
    their own names, other settings in full; the evaluation's own settings are under Runs."""
    shown = [o.removeprefix("world.options.") for o in key[2] if not o.startswith("eval.")]
    return ", ".join(f"`{o}`" for o in shown) or "—"


def _num(v: float, pct: bool, signed: bool = False) -> str:
    return ("+" if signed and v >= 0 else "") + (f"{v:.1f}" if pct else f"{v:.3f}")


def report(record: dict) -> str:
    head = ["world", "steps", "settings", "metric", "trained", "random init", "trained − random",
            "trained − random, per seed"]
    lines = ["# Learning in every procedural world\n",
             "Generated by `benchmarks/world_learning.py` from what it measured. Each run is `python run.py train` "
             "(the cpu preset) with the settings listed under Runs, then the `linear_probe`, `equivariance` (and "
             "for saccades `path_integration`) suites on the trained network and on the same network at the "
             "initialisation its run started from, with the same probe data and heads. Where a world was trained "
             "at several seeds (the same settings otherwise), *trained* and *random init* are means over the seeds "
             "that measured the metric, and the last column gives each seed's difference (— where a seed did not "
             "measure it). *settings* are what a block's runs set beyond the cpu preset (— for none).\n",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    protocols = {}
    groups: dict[tuple, list[dict]] = {}
    for r in record["runs"]:
        groups.setdefault(setting_key(r), []).append(r)
    for group, runs in groups.items():
        runs = sorted(runs, key=lambda r: _setting(r, "seed") or 0)
        label = settings_label(group)
        r = runs[0]
        keys = [("encoder linear probe top-1 %", "linear_probe/encoder"),
                ("encoder linear probe top-1 % on the clean view", "linear_probe/encoder/clean"),
                (f"z_agg linear probe top-1 %, M_val={r['m_val']}", f"linear_probe/z_agg/M={r['m_val']}")]
        keys += [(f"relative-action R² ({f}) from [z_1, z_2]", f"equivariance/{f}") for f in r["factors"]]
        keys += [(f"path integration R² ({f}) from [z_agg, a_M], M={m}", f"path_integration/{f}/full/M={m}")
                 for f in r["factors"] for m in (1, 3, 7)]
        seeds = ", ".join(str(_setting(x, "seed")) for x in runs)
        steps = _setting(r, "steps") or "—"  # a record from before steps were stored, without train.steps set
        for name, key in keys:
            pairs = [(x["trained"].get(key), x["random_init"].get(key)) for x in runs]
            have = [(a["value"], b["value"]) for a, b in pairs if a is not None and b is not None]
            if not have:
                continue
            pct = "top-1" in name
            a, b = (sum(v) / len(have) for v in zip(*have))
            each = " / ".join("—" if t is None or u is None else _num(t["value"] - u["value"], pct, signed=True)
                              for t, u in pairs)
            lines.append(f"| {r['env']} | {steps} | {label} | {name} | {_num(a, pct)} | {_num(b, pct)} "
                         f"| {_num(a - b, pct, signed=True)} | {each} (seed {seeds}) |")
            protocols.setdefault(key.split("/")[0], next(t for t, u in pairs if t is not None)["protocol"])
    lines.append("\n## Runs\n")
    for r in record["runs"]:
        lines.append(f"- `{r['env']}`, seed {_setting(r, 'seed')}: trained {r['train_s']:.0f} s, evaluated "
                     f"{r['eval_s']:.0f} s ({r['threads']} torch threads, torch {r['torch']}); measured by "
                     f"`{r['command']}`, i.e. `python run.py train --env {r['env']} "
                     f"{' '.join('--set ' + o for o in r['settings'])}`"
                     + (f"; world options after the preset: `{json.dumps(r['world_options'])}`"
                        if "world_options" in r else ""))
    lines.append("\n## Probe protocols (as written in eval.json)\n")
    for name, p in protocols.items():
        p = {**p, "seed": "the run's training seed (this script sets eval.seed = train.seed)"} if "seed" in p else p
        lines.append(f"- {name}: " + "; ".join(f"{k} = {v}" for k, v in p.items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worlds", nargs="+", default=list(WORLDS), choices=list(WORLDS), metavar="ID")
    p.add_argument("--steps", type=int, help="training steps of every world (default: the world's own, below, or "
                                             "the cpu preset's)")
    p.add_argument("--seeds", "--seed", type=int, nargs="+", default=[0], dest="seeds", metavar="SEED",
                   help="training seeds (each trains and probes at that seed); several are averaged in the report")
    p.add_argument("--runs-dir", default="runs/worlds")
    p.add_argument("--cache-dir", default="~/.cache/seqjepa")
    p.add_argument("--out", default=str(ROOT / "docs" / "worlds.md"))
    p.add_argument("--quick", action="store_true", help="small banks and probes: checks the script runs")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="an extra setting for these runs (repeatable)")
    p.add_argument("--report-only", action="store_true", help="rewrite --out from RUNS_DIR/worlds.json")
    args = p.parse_args(argv)
    # One record per runs folder; rerunning a world at a seed replaces that row and keeps the others'.
    record_path = Path(args.runs_dir) / "worlds.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {"runs": []}
    if not args.report_only:
        command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/world_learning.py",
                                                                 *(sys.argv[1:] if argv is None else argv)])
        new = measure(args, command)["runs"]
        rerun = {(r["env"], r["seed"]) for r in new}
        record["runs"] = sorted([r for r in record["runs"] if (r["env"], _setting(r, "seed")) not in rerun] + new,
                                key=lambda r: (list(WORLDS).index(r["env"]), _setting(r, "seed") or 0))
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(record, indent=2))
    Path(args.out).write_text(report(record))
    print(f"wrote {args.out} (record: {record_path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
