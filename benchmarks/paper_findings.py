"""The paper's findings, one command: train at CPU scale at several seeds, evaluate against random init, judge.

    python benchmarks/paper_findings.py                    # seeds 0 1 2, the cpu preset as it is (15 runs)
    python benchmarks/paper_findings.py --quick            # ~1 min: 20 steps, tiny probes, 1 thread: checks the
                                                           # script only (runs/findings-quick unless --runs-dir)
    python benchmarks/paper_findings.py --seeds 0 --steps 600 --runs-dir runs/findings-600
    python benchmarks/paper_findings.py --pi-m 1 2 3 4 5 6 7   # paper Fig. 6's whole path-integration curve
    python benchmarks/paper_findings.py --report-only      # rewrite the report from runs/findings/findings.json

Cost: 5 runs per seed, each one training of the preset (``--steps`` overrides ``train.steps``) and one evaluation
of its suites on the trained network and on its random init. Path integration is evaluated only at M = 4, the M
that F4 reads (``--pi-m``): each M costs eight probe fits per run, MLPs for the rotation. ``--set KEY=VALUE`` adds
an override to every run (e.g. ``--set eval.train_sequences=3000`` for cheaper probes); it is recorded in the
report.

Every run starts from the ``cpu`` preset of ``seqjepa/config.py`` as it is when this script runs; a run sets only
what its finding varies (seed, ``model.act_cond``, ``model.method``, the world) plus ``eval.random_init_baseline=
true``, so that each number has the same network at random initialisation beside it. Runs per seed:

==========  =============================================  =============================================  ==========
run         what                                           suites                                         findings
==========  =============================================  =============================================  ==========
seqjepa     seq-JEPA, rotating objects                     linear_probe, equivariance, path_integration   F1 F2 F3 F4
no_act      the same with ``model.act_cond=none``          linear_probe, equivariance                     F2
byol        ``model.method=byol`` (probed on its encoder)  linear_probe, equivariance                     F3
sie         ``model.method=sie`` (probed on its encoder)   linear_probe, equivariance                     F3
saccades    seq-JEPA, ``seqjepa/Saccades-v0``              path_integration                               F4
==========  =============================================  =============================================  ==========

Each run is trained by ``seqjepa.train.train`` into ``RUNS_DIR/<run>-s<seed>`` and evaluated by
``eval.from_checkpoint.evaluate_checkpoint`` (its ``eval.json`` holds the trained network's numbers under
``"trained"`` and the random init's under ``"random init"``, each with its protocol). A run whose ``eval.json``
exists is not run again, and one whose checkpoint stopped short of its steps resumes, so an interrupted command
picks up where it stopped; a run folder made with other settings is refused (use another ``--runs-dir``).

The findings, each judged by a fixed rule (the ``rule_*`` functions of ``benchmarks/findings_report.py``, written
out in the report) that must hold on the mean over seeds and at more than half of the seeds on their own:

* F1 — z_agg top-1 rises with M_val (paper Fig. 4 / Table 1 shape) by more than random init's rise.
* F2 — ``model.act_cond=none`` drops the rotation R² by >= 0.15 while z_agg top-1 (M_val = 5) moves <= 3 points.
* F3 — seq-JEPA's rotation R² >= BYOL's + 0.15, and its z_agg top-1 (M_val = 5) >= SIE's (encoder) top-1.
* F4 — path integration on the saccades and the rotations: R² at M = 4 >= 0.8 with actions, about 0 with actions
  zeroed (the paper's protocol), and the learned part (``views_only``: the move read from the views alone, see
  ``eval/path_integration.py``) above random init.

Writes ``--out`` (docs/findings.md, by ``findings_report.report``): the command, the machine, torch, the wall time
of every run, one table per finding (per-seed values, mean, random init, the paper's number) and each verdict with
its rule; and ``RUNS_DIR/findings.json``, the record the report is written from (``--report-only`` rewrites the
report from it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # findings_report, beside this script, when it is loaded from elsewhere

import envs  # noqa: E402
from eval import path_integration  # noqa: E402
from eval.from_checkpoint import evaluate_checkpoint  # noqa: E402
from seqjepa import checkpoint  # noqa: E402
from seqjepa.config import preset  # noqa: E402
from seqjepa.options import apply_overrides, to_dict  # noqa: E402
from seqjepa.train import train  # noqa: E402

from findings_report import M_HI, M_LO, OBJECTS, PI_M, SACCADES, SPECS, RunSpec, report, summary  # noqa: E402


# --quick: what checks the script end to end in a few minutes (numbers meaningless).
QUICK = ["train.steps=20", "train.batch_size=8", "train.log_every=10", "world.bank_objects=48",
         "eval.train_sequences=128", "eval.test_sequences=64", "eval.linear_epochs=3", "eval.mlp_epochs=3",
         "eval.mlp_hidden=32", "eval.batch_size=64"]
LOCAL = ("world.cache_dir", "train.progress", "train.threads")  # where/how a run executes, not what it computes


# -- running ----------------------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_overrides(spec: RunSpec, seed: int, args) -> list[str]:
    """What a run sets on top of the cpu preset (recorded; the preset itself is not restated)."""
    cfg = preset("cpu", spec.env)
    m_val = sorted(set(cfg.eval.m_val) | {M_LO, M_HI})
    own = [*spec.overrides, f"train.seed={seed}", f"eval.seed={seed}", "eval.random_init_baseline=true"]
    if m_val != sorted(set(cfg.eval.m_val)):
        own.append(f"eval.m_val={json.dumps(m_val)}")
    own += QUICK if args.quick else []
    own += [f"train.steps={args.steps}"] if args.steps else []
    return own + list(args.set or [])


def config_for(spec: RunSpec, seed: int, args):
    cfg = preset("cpu", spec.env)
    apply_overrides(cfg, run_overrides(spec, seed, args) + [f"world.cache_dir={args.cache_dir}", "train.progress=off"]
                    + ([f"train.threads={args.threads}"] if args.threads else []))
    return cfg


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "options" and k != "method_options":
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def settings_differ(run_dir: Path, cfg) -> list[str]:
    """The settings in which ``run_dir``'s config.json differs from ``cfg`` (where and how it runs aside)."""
    path = run_dir / "config.json"
    if not path.is_file():
        return []
    saved = json.loads(path.read_text())
    world = saved.get("world", {})
    if isinstance(world.get("options"), dict):  # options under a world's old names are the same settings
        world["options"] = envs.world_class(world.get("env", cfg.world.env))[1].rename_options(world["options"])
    saved = flat({k: v for k, v in saved.items() if k not in ("versions", "command")})
    now = flat(to_dict(cfg))
    return sorted(k for k in set(saved) | set(now) if not k.startswith(LOCAL) and saved.get(k) != now.get(k))


def values(metrics: dict) -> dict[str, float]:
    return {k: e["value"] for k, e in metrics.items()}


def quarters(steps: int) -> Callable[[str], None]:
    """A training log that prints the trainer's "step N/T ..." lines at most once per quarter of the run."""
    shown = set()

    def log(msg: str) -> None:
        if msg.startswith("step "):
            n = int(msg.split()[1].split("/")[0])
            quarter = min(4, 4 * n // max(steps, 1))
            if quarter and quarter not in shown:
                shown.add(quarter)
                print("    " + msg, flush=True)

    return log


def measure_run(spec: RunSpec, seed: int, args, index: str) -> dict:
    """Train (or resume) and evaluate one run unless its eval.json exists; returns its record."""
    cfg = config_for(spec, seed, args)
    run_dir = Path(args.runs_dir) / f"{spec.key}-s{seed}"
    differ = settings_differ(run_dir, cfg)
    if differ:
        raise SystemExit(f"{run_dir} was made with other settings ({', '.join(differ[:6])}"
                         f"{' …' if len(differ) > 6 else ''}); use another --runs-dir or remove that folder")
    timing_path = run_dir / "findings_timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    eval_path = run_dir / "eval.json"
    status = "measured"
    if eval_path.is_file():
        print(f"[{index}] {spec.key} seed {seed}: eval.json exists in {run_dir}, reused", flush=True)
        status = "reused"
    else:
        ckpt_path = run_dir / "latest.pt"
        done = checkpoint.load(ckpt_path)["step"] if ckpt_path.is_file() else 0
        if done < cfg.train.steps:
            how = f"resuming at step {done}" if done else "training"
            print(f"[{index}] {spec.key} seed {seed}: {how} to {cfg.train.steps} steps -> {run_dir}", flush=True)
            t0 = time.time()
            train(cfg, run_dir, resume=done > 0, log=quarters(cfg.train.steps))
            timing["train_s"] = timing.get("train_s", 0.0) * (done > 0) + time.time() - t0
            timing["resumed"] = done > 0
            timing_path.write_text(json.dumps(timing))
            print(f"    trained in {time.time() - t0:.0f} s", flush=True)
        print(f"[{index}] {spec.key} seed {seed}: evaluating {', '.join(spec.suites)} (trained and random init)",
              flush=True)
        t0 = time.time()
        saved_m, path_integration.PATH_M = path_integration.PATH_M, tuple(args.pi_m)
        try:
            evaluate_checkpoint(ckpt_path, ["eval.random_init_baseline=true"], trusted=True, suites=list(spec.suites),
                                tensorboard=False, log=lambda s: None)
        finally:
            path_integration.PATH_M = saved_m
        timing["eval_s"] = time.time() - t0
        timing_path.write_text(json.dumps(timing))
        print(f"    evaluated in {timing['eval_s']:.0f} s", flush=True)
    res = json.loads(eval_path.read_text())
    if "random init" not in res:
        raise SystemExit(f"{eval_path} has no random-init numbers (eval.random_init_baseline was off); remove it "
                         f"so that this run is evaluated again")
    return {"key": spec.key, "seed": seed, "env": spec.env, "settings": run_overrides(spec, seed, args),
            "steps": cfg.train.steps, "run_dir": str(run_dir), "status": status,
            "train_s": timing.get("train_s"), "eval_s": timing.get("eval_s"),
            "trained": values(res["trained"]["metrics"]), "random_init": values(res["random init"]["metrics"])}


def preset_summary(args) -> dict:
    """The cpu preset's settings that shape every number, as they were when the runs were made."""
    cfg = preset("cpu", OBJECTS)
    return {"world_options": {env: dict(preset("cpu", env).world.options) for env in (OBJECTS, SACCADES)},
            "train": {k: getattr(cfg.train, k) for k in ("steps", "batch_size", "seq_len")},
            "model": {k: getattr(cfg.model, k) for k in ("depth", "width", "act_dim", "agg_layers", "tau_base")},
            "optim": {k: getattr(cfg.optim, k) for k in ("lr", "weight_decay", "warmup_steps")},
            "eval": {k: getattr(cfg.eval, k) for k in ("train_sequences", "test_sequences", "linear_epochs",
                                                       "mlp_epochs", "m_val")},
            "bank": {"bank_objects": cfg.world.bank_objects, "bank_views": cfg.world.bank_views,
                     "source": cfg.world.source}}


def measure(args, command: str) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    t_all = time.time()
    jobs = [(spec, seed) for seed in args.seeds for spec in SPECS]
    print(f"== stage 1/3: {len(jobs)} runs ({len(SPECS)} per seed, seeds {' '.join(map(str, args.seeds))}) in "
          f"{args.runs_dir}; {cpu_model()}, {torch.get_num_threads()} torch threads", flush=True)
    rows = [measure_run(spec, seed, args, f"run {i}/{len(jobs)}") for i, (spec, seed) in enumerate(jobs, 1)]
    return {"command": command, "seeds": list(args.seeds), "quick": bool(args.quick), "pi_m": args.pi_m,
            "total_s": time.time() - t_all,
            "machine": {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "python": platform.python_version()},
            "torch": torch.__version__, "runs_dir": args.runs_dir, "preset": preset_summary(args), "runs": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training (and probe) seeds")
    p.add_argument("--steps", type=int, default=None, help="train.steps of every run (default: the preset's)")
    p.add_argument("--quick", action="store_true", help="tiny steps and probes: checks the script, not the model")
    p.add_argument("--runs-dir", default="runs/findings", help="where the run folders go")
    p.add_argument("--out", default=str(ROOT / "docs" / "findings.md"), help="the report")
    p.add_argument("--cache-dir", default="~/.cache/seqjepa", help="view-bank cache (world.cache_dir)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: the preset's train.threads, 0 = all cores; with --quick 1: "
                        "the tiny models only pay for a second thread's synchronisation)")
    p.add_argument("--pi-m", type=int, nargs="+", default=[PI_M],
                   help=f"M values of the path_integration suite (default {PI_M}, the one F4 reads: every M costs "
                        f"eight probe fits, MLPs for the rotation; 1 2 3 4 5 6 7 gives paper Fig. 6's whole curve)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="one more override for every run (repeatable; recorded in the report)")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite --out from RUNS_DIR/findings.json (the last command's record), no training")
    args = p.parse_args(argv)
    if args.threads is None:
        args.threads = 1 if args.quick else 0
    if PI_M not in args.pi_m:
        p.error(f"--pi-m must include {PI_M}, the M that F4 reads")
    args.pi_m = sorted(set(args.pi_m))
    if args.quick and args.runs_dir == "runs/findings":
        args.runs_dir = "runs/findings-quick"   # never mixes tiny runs into the real ones
    record_path = Path(args.runs_dir) / "findings.json"
    if args.report_only:
        record = json.loads(record_path.read_text())
    else:
        command = "python " + " ".join(shlex.quote(a) for a in
                                       ["benchmarks/paper_findings.py", *(sys.argv[1:] if argv is None else argv)])
        record = measure(args, command)
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(record, indent=2))
    print("== stage 2/3: verdicts", flush=True)
    print(summary(record), flush=True)
    print(f"== stage 3/3: writing {args.out}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report(record))
    print(f"wrote {args.out} ({record['total_s'] / 60:.1f} min; record: {record_path})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
