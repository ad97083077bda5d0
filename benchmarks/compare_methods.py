"""The paper's comparison tables in small: seq-JEPA and every baseline, one harness, equal budgets.

Trains each method with ``seqjepa.train.train`` on the same world, preset, encoder, batch, sequence length, optimiser
schedule, step budget and seeds, evaluates every checkpoint with the same frozen-model suite
(``eval.from_checkpoint.evaluate_checkpoint``), and writes two tables into ``--out``:

* Table 1 shape (rotating-objects world, the 3DIEBench stand-in): top-1 of a linear probe (on z_agg from M_val views for
  seq-JEPA, on the encoder for the baselines), relative-rotation R² from [z_0, z_1] and absolute-rotation R² from z_0;
* Table 3 shape (saccade world, the PLS stand-in): seq-JEPA against Conv-JEPA, top-1 and position R².

The generated block replaces what lies between the ``<!-- results -->`` markers of ``--out``; text around it is kept.

    python benchmarks/compare_methods.py --steps 80 --width 8 --seeds 0          # the run in docs/comparison.md
    python benchmarks/compare_methods.py --steps 1500 --seeds 0 1 2              # the cpu preset's full budget
    python benchmarks/compare_methods.py --methods seqjepa simclr --no-saccades  # a subset
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eval.from_checkpoint import evaluate_checkpoint  # noqa: E402
from seqjepa.baselines import METHODS  # noqa: E402
from seqjepa.config import Config, preset  # noqa: E402
from seqjepa.options import apply_overrides  # noqa: E402
from seqjepa.train import train  # noqa: E402

NAMES = {"seqjepa": "seq-JEPA", "simclr": "SimCLR", "byol": "BYOL", "vicreg": "VICReg", "vicreg_traj": "VICRegTraj",
         "sen": "SEN", "equimod": "EquiMod", "sie": "SIE", "cond_byol": "Conditional BYOL", "conv_jepa": "Conv-JEPA"}
GROUPS = {"simclr": "Invariant", "byol": "Invariant", "vicreg": "Invariant", "vicreg_traj": "Invariant",
          "sen": "Equivariant", "equimod": "Equivariant", "sie": "Equivariant", "cond_byol": "Equivariant",
          "seqjepa": "Inv-Equi", "conv_jepa": "Equivariant"}
SACCADES = {"scene_size": 96, "image_size": 32, "num_classes": 10, "per_class": 100}  # STL-10's sizes, procedural
TABLE1_ORDER = ("byol", "simclr", "vicreg", "vicreg_traj", "sen", "equimod", "sie", "cond_byol", "seqjepa")  # paper's
BEGIN, END = "<!-- results -->", "<!-- /results -->"


def run_config(args, method: str, seed: int, saccades: bool) -> Config:
    cfg = preset(args.preset)
    world = "saccades" if saccades else "objects"
    sets = [f"model.method={method}", f"train.steps={args.steps}", f"train.batch_size={args.batch}",
            f"train.seed={seed}", f"train.threads={args.threads}", "train.progress=off", "train.log_every=10",
            f"train.runs_dir={args.runs_dir}", f"train.name={world}-{method}-s{seed}",
            f"eval.train_sequences={args.eval_train}", f"eval.test_sequences={args.eval_test}",
            f"eval.linear_epochs={args.eval_epochs}", f"eval.mlp_epochs={args.eval_epochs}",
            f"eval.random_init_baseline={str(method == 'seqjepa').lower()}"]
    if args.width:
        sets.append(f"model.width={args.width}")
    # A short budget still gets its warm-up and cosine: warm-up capped at a tenth of the steps.
    warmup = args.warmup if args.warmup >= 0 else min(cfg.optim.warmup_steps, args.steps // 10)
    sets.append(f"optim.warmup_steps={warmup}")
    if saccades:  # paper Table 3: M_tr = M_val = 4, glimpse sequences with saliency + inhibition of return
        cfg.world.env, cfg.world.options, cfg.world.source = "seqjepa/Saccades-v0", dict(SACCADES), "live"
        sets += ["train.seq_len=4", "eval.m_val=[1,4]"]
    apply_overrides(cfg, sets + (args.set or []))
    return cfg


def run_one(args, method: str, seed: int, saccades: bool) -> dict:
    cfg = run_config(args, method, seed, saccades)
    run_dir = Path(cfg.train.runs_dir) / cfg.train.name
    t0 = time.time()
    logs: list[str] = []
    summary = train(cfg, run_dir, resume=(run_dir / "latest.pt").exists() and args.resume, log=logs.append)
    t_train = time.time() - t0
    # The two suites behind the paper's Tables 1 and 3 (top-1; relative and absolute R²), nothing else.
    results = evaluate_checkpoint(run_dir / "latest.pt", trusted=True, suites=["linear_probe", "equivariance"], tensorboard=False,
                                  log=lambda s: None)
    t_eval = time.time() - t0 - t_train
    last = next((line for line in reversed(logs) if line.startswith("step ")), "")
    print(f"{cfg.train.name}: train {t_train:.0f}s ({summary['steps_run']} steps), eval {t_eval:.0f}s | {last}",
          flush=True)
    return {"method": method, "seed": seed, "saccades": saccades, "train_s": t_train, "eval_s": t_eval,
            "last_log": last, "run_dir": str(run_dir), "config": cfg,
            "metrics": {k: {kk: r["metrics"][kk]["value"] for kk in r["metrics"]}
                        for k, r in results.items() if isinstance(r, dict)}}


def cell(values: list[float], fmt: str) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


def table1(runs: list[dict], methods: list[str], m_vals: list[int], m_tr: int) -> list[str]:
    lines = ["| Group | Method | Top-1 (%) | Rel. rot. (R²) | Abs. rot. (R²) | Top-1 on encoder (%) |",
             "|---|---|---|---|---|---|"]
    for method in methods:
        got = [r for r in runs if r["method"] == method]
        enc = cell([r["metrics"]["trained"]["linear_probe/encoder"] for r in got], ".2f")
        rel = cell([r["metrics"]["trained"]["equivariance/rotation"] for r in got], ".3f")
        ab = cell([r["metrics"]["trained"]["absolute/rotation"] for r in got], ".3f")
        if method != "seqjepa":
            lines.append(f"| {GROUPS[method]} | {NAMES[method]} | {enc} | {rel} | {ab} | {enc} |")
            continue
        for m in m_vals:
            top = cell([r["metrics"]["trained"][f"linear_probe/z_agg/M={m}"] for r in got], ".2f")
            lines.append(f"| Inv-Equi | seq-JEPA ({m_tr}, {m}) | {top} | {rel} | {ab} | {enc} |")
        rnd = [r["metrics"]["random init"] for r in got if "random init" in r["metrics"]]
        if rnd:
            top = cell([x[f"linear_probe/z_agg/M={m_vals[-1]}"] for x in rnd], ".2f")
            lines.append(f"| – | random init (seq-JEPA network, M_val={m_vals[-1]}) | {top} | "
                         f"{cell([x['equivariance/rotation'] for x in rnd], '.3f')} | "
                         f"{cell([x['absolute/rotation'] for x in rnd], '.3f')} | "
                         f"{cell([x['linear_probe/encoder'] for x in rnd], '.2f')} |")
    return lines


def table3(runs: list[dict]) -> list[str]:
    lines = ["| Conditioning | Method | Top-1 (%) | Position (R²) | Top-1 on encoder (%) |", "|---|---|---|---|---|"]
    for method in ("conv_jepa", "seqjepa"):
        got = [r for r in runs if r["method"] == method]
        if not got:
            continue
        m = got[0]["metrics"]["trained"]
        top_key = "linear_probe/z_agg/M=4" if "linear_probe/z_agg/M=4" in m else "linear_probe/encoder"
        label = "seq-JEPA (M_tr = M_val = 4)" if method == "seqjepa" else "Conv-JEPA (M_tr = 4)"
        vals = lambda k: [r["metrics"]["trained"][k] for r in got]  # noqa: E731
        lines.append(f"| position | {label} | {cell(vals(top_key), '.2f')} | "
                     f"{cell(vals('equivariance/position'), '.3f')} | {cell(vals('linear_probe/encoder'), '.2f')} |")
    return lines


def report(args, runs: list[dict], wall: float) -> str:
    obj = [r for r in runs if not r["saccades"]]
    sac = [r for r in runs if r["saccades"]]
    methods = [m for m in TABLE1_ORDER if m in args.methods]
    cfg: Config = (obj or sac)[0]["config"]
    m_vals = [m for m in (1, 3, 5) if m in cfg.eval.m_val] or cfg.eval.m_val
    load = os.getloadavg()[0]
    out = [BEGIN, "", "Generated by `benchmarks/compare_methods.py`; do not edit by hand between the markers.", "",
           "```", "python " + " ".join(shlex.quote(a) for a in sys.argv), "```", "",
           f"Seeds {args.seeds}; {args.steps} steps of batch {args.batch} for every method; preset `{args.preset}` "
           f"(encoder ResNet-{cfg.model.depth}, width {cfg.model.width}, {cfg.model.stem} stem, "
           f"{8 * cfg.model.width}-d); optimiser AdamW lr {cfg.optim.lr:g} (warm-up {cfg.optim.warmup_steps}, cosine), "
           f"weight decay {cfg.optim.weight_decay:g}; EMA τ_base {cfg.model.tau_base:g}. Evaluation: "
           f"{cfg.eval.train_sequences} train / {cfg.eval.test_sequences} test sequences, {cfg.eval.linear_epochs} "
           f"epochs per probe, MLP heads {cfg.eval.mlp_hidden}-{cfg.eval.mlp_hidden}. Wall time {wall / 60:.1f} min "
           f"on {os.cpu_count()} CPU cores ({cfg.train.threads or 'all'} torch thread(s); load average at the end "
           f"{load:.1f}); torch {torch.__version__}, Python {platform.python_version()}.", ""]
    if obj:
        out += [f"### Table 1 shape — rotating-objects world (`{cfg.world.env}`, {cfg.world.options}, "
                f"M_tr = {cfg.train.seq_len})", ""] + table1(obj, methods, m_vals, cfg.train.seq_len) + [""]
    if sac:
        out += [f"### Table 3 shape — saccade world (`seqjepa/Saccades-v0`, {SACCADES}, live saliency + IoR)", ""]
        out += table3(sac) + [""]
    out += ["Per run (train / eval seconds, last training log line):", ""]
    out += [f"- `{Path(r['run_dir']).name}`: {r['train_s']:.0f} s / {r['eval_s']:.0f} s — {r['last_log']}"
            for r in runs]
    return "\n".join(out + ["", END])


def write(path: Path, block: str) -> None:
    text = path.read_text() if path.exists() else "# Method comparison\n\n" + BEGIN + "\n" + END + "\n"
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1500, help="training steps per method: the budget (cpu preset: 1500)")
    p.add_argument("--batch", type=int, default=64, help="sequences per step, every method")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (one run per method and seed)")
    p.add_argument("--preset", default="cpu", help="starting settings of every run (smoke, cpu, paper)")
    p.add_argument("--width", type=int, default=0, help="encoder width for every method (0 = the preset's)")
    p.add_argument("--warmup", type=int, default=-1, help="warm-up steps (-1 = the preset's, at most steps/10)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = all; 1 is fastest on a busy box)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="NAME",
                   help="methods for Table 1 (conv_jepa only runs on the saccade world)")
    p.add_argument("--no-saccades", action="store_true", help="skip the Table 3 runs (seq-JEPA vs Conv-JEPA)")
    p.add_argument("--eval-train", type=int, default=1000, help="probe training sequences")
    p.add_argument("--eval-test", type=int, default=500, help="probe test sequences")
    p.add_argument("--eval-epochs", type=int, default=30, help="epochs of every probe")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="extra override for every run")
    p.add_argument("--runs-dir", default="runs/compare", help="where the run folders go")
    p.add_argument("--resume", action="store_true", help="continue runs whose folder already holds a checkpoint")
    p.add_argument("--out", default="docs/comparison.md", help="markdown file to write the tables into")
    args = p.parse_args(argv)
    t0, runs = time.time(), []
    for seed in args.seeds:
        for method in [m for m in METHODS if m in args.methods and m != "conv_jepa"]:
            runs.append(run_one(args, method, seed, saccades=False))
        if not args.no_saccades:
            for method in ("seqjepa", "conv_jepa"):
                runs.append(run_one(args, method, seed, saccades=True))
    block = report(args, runs, time.time() - t0)
    write(Path(args.out), block)
    summary = [{k: v for k, v in r.items() if k != "config"} for r in runs]
    Path(args.runs_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.runs_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
