#!/usr/bin/env python
"""seqjepa launcher: train, evaluate and inspect action-conditioned JEPA world models.

    python run.py                                  # train the cpu preset, evaluate, print the results table
    python run.py train --preset smoke             # a few seconds
    python run.py train --set model.depth=18 --set train.steps=3000
    python run.py train --resume runs/NAME         # continue exactly where it stopped
    python run.py eval --ckpt runs/NAME/latest.pt  # frozen-model probes -> runs/NAME/eval.json
    python run.py eval --ckpt runs/NAME/latest.pt --suite path_integration --suite retrieval
    python run.py train --agent sweep              # live sequences chosen by an agent (agents/)
    python run.py plan --ckpt runs/NAME/latest.pt  # goal reaching + active vision -> runs/NAME/plan.json
    python run.py envs                             # every registered world, its spaces and options
    python run.py bench --preset paper             # throughput (views/s) of the worlds and a training step
    torchrun --standalone --nproc_per_node=N run.py train ...   # N processes (GPUs); see README "Scale"
    tensorboard --logdir runs                      # curves, config

Bad settings exit with code 2 and a one-line message naming the field and what is allowed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from seqjepa.config import Config, ConfigError, apply_overrides, from_dict, help_lines, preset


class CliError(Exception):
    pass


def config_help() -> str:
    return ("settings (override with --set section.key=value; world options with "
            "--set world.options.NAME=VALUE, listed by `run.py envs`):\n" + "\n".join(help_lines(Config)))


def build_config(args) -> Config:
    cfg = preset(args.preset, getattr(args, "env", None))
    if getattr(args, "method", None):
        apply_overrides(cfg, [f"model.method={args.method}"])
    if getattr(args, "agent", None):  # live sequences: the agent acts in the world (a bank is pre-rendered)
        apply_overrides(cfg, [f"world.agent={args.agent}", "world.source=live"])
    apply_overrides(cfg, args.set or [])
    from seqjepa.baselines import options
    options(cfg.model, cfg.preset)  # a bad model.method_options value fails here, before any world is built
    return cfg


def run_name(cfg: Config) -> str:
    world = cfg.world.env.split(":")[-1].split("/")[-1]
    return cfg.train.name or f"{cfg.preset}-{world}-s{cfg.train.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_train(args) -> int:
    from eval.from_checkpoint import evaluate_checkpoint
    from eval.suite import format_table, resolve_suites
    from seqjepa import distributed as ddp
    from seqjepa.train import resolve_device, train

    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.json").is_file():
            raise CliError(f"--resume: {run_dir} has no config.json; expected a run folder")
        cfg = _load_run_config(run_dir)
        apply_overrides(cfg, args.set or [])
    else:
        cfg = build_config(args)
        ddp.setup(resolve_device(cfg.train.device))  # under torchrun: every rank takes rank 0's run name
        run_dir = Path(ddp.broadcast_object(str(Path(cfg.train.runs_dir) / run_name(cfg))))
        if (run_dir / "latest.pt").exists():
            raise CliError(f"train.name: run folder {run_dir} already holds a checkpoint; use --resume {run_dir} "
                           f"or another name")
    ddp.setup(resolve_device(cfg.train.device))  # (idempotent) a resumed run joins torchrun's group here
    if cfg.train.eval_after:
        resolve_suites(cfg.eval.suites, "eval.suites")  # a bad suite fails before training, not after it
    if not ddp.is_main():  # the other ranks train alongside rank 0, which reports and evaluates
        train(cfg, run_dir, resume=bool(args.resume), log=lambda msg: None)
        return 0
    print(f"run folder: {run_dir}")
    summary = train(cfg, run_dir, resume=bool(args.resume))
    print(f"trained {summary['steps_run']} steps in {summary['seconds']:.0f} s")
    if cfg.train.eval_after:
        results = evaluate_checkpoint(run_dir / "latest.pt")
        print()
        print(format_table({k: v for k, v in results.items() if isinstance(v, dict)}))
    print(f"\nrun folder:  {run_dir}\ncheckpoint:  {run_dir / 'latest.pt'}\nresults:     {run_dir / 'eval.json'}"
          f"\ntensorboard: tensorboard --logdir {run_dir}")
    return 0


def _load_run_config(run_dir: Path) -> Config:
    import json

    with open(run_dir / "config.json") as fh:
        data = json.load(fh)
    data.pop("versions", None)
    data.pop("command", None)
    return from_dict(Config, data)


def cmd_eval(args) -> int:
    from eval.from_checkpoint import evaluate_checkpoint
    from eval.suite import format_table

    from eval.suite import resolve_suites
    if args.suite:
        resolve_suites(args.suite)  # an unknown suite fails before the checkpoint is read
    results = evaluate_checkpoint(args.ckpt, args.set or [], suites=args.suite or None, inspect=True)
    print(format_table({k: v for k, v in results.items() if isinstance(v, dict)}))
    print(f"\nresults: {Path(args.ckpt).parent / 'eval.json'} (+ eval.md, eval_*.png)\n"
          f"tensorboard: tensorboard --logdir {Path(args.ckpt).parent}")
    return 0


def cmd_plan(args) -> int:
    from agents.plan_eval import PlanConfig, plan_checkpoint

    if min(args.episodes, args.horizon, args.candidates, args.iterations) < 1:
        raise CliError("--episodes, --horizon, --candidates and --iterations must be >= 1")
    pc = PlanConfig(episodes=args.episodes, horizons=tuple(sorted({1, args.horizon})), candidates=args.candidates,
                    iterations=args.iterations, seed=args.seed)
    plan_checkpoint(args.ckpt, pc)
    print(f"\nresults: {Path(args.ckpt).parent / 'plan.json'} (+ plan.md)")
    return 0


def cmd_envs(args) -> int:
    import dataclasses
    import envs
    from seqjepa.config import help_lines as option_lines

    for env_id in sorted(envs.WORLDS):
        cls = envs.WORLDS[env_id]
        try:
            world = envs.make_world(env_id, image_size=32) if "image_size" in {
                f.name for f in dataclasses.fields(cls.Options)} else envs.make_world(env_id)
        except ValueError as e:  # a world over a dataset on disk, with no dataset given: list it anyway
            if not getattr(cls, "needs_data", False):
                raise
            print(f"{env_id}: {cls.name}\n  action: {cls.action_doc}\n  needs data: {e}")
            print("  options (--set world.options.NAME=VALUE):")
            print("\n".join("  " + line for line in option_lines(cls.Options)) + "\n")
            continue
        print(f"{env_id}: {cls.name}")
        print("  observation: uint8 views (H, W, 3); gym.make_vec(..., device=...) gives torch batches")
        print(f"  action: Box{tuple(world.action_low.shape)} in [{world.action_low.min().item():g}, "
              f"{world.action_high.max().item():g}]: {cls.action_doc}")
        print("  factors: " + ", ".join(f"{k} [{f.start}:{f.stop}] ({f.head} probe)" for k, f in world.factors.items()))
        print("  options (--set world.options.NAME=VALUE):")
        for line in option_lines(cls.Options):
            print("  " + line)
        print()
    return 0


def cmd_preview(args) -> int:
    from envs.preview import cmd
    return cmd(args)


def cmd_bench(args) -> int:
    from seqjepa.bench import cmd
    return cmd(args, build_config(args))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command")

    def with_config(sp):
        sp.add_argument("--preset", default="cpu", help="starting values: smoke (seconds), cpu (default, minutes "
                                                        "on 2 cores), paper (3DIEBench setting, GPU)")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting (repeatable)")
        sp.add_argument("--env", help="shortcut for --set world.env=ID")
        sp.add_argument("--method", help="shortcut for --set model.method=NAME: seqjepa (default), simclr, byol, "
                                         "vicreg, vicreg_traj, sen, equimod, sie, cond_byol, conv_jepa")

    t = sub.add_parser("train", help="train (then evaluate) a model", epilog=config_help(),
                       formatter_class=argparse.RawTextHelpFormatter)
    with_config(t)
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    t.add_argument("--agent", help="shortcut for --set world.agent=NAME --set world.source=live: random, "
                                   "saliency, uniform, sweep (see agents/)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint with the frozen-model suites", epilog=config_help(),
                       formatter_class=argparse.RawTextHelpFormatter)
    e.add_argument("--ckpt", required=True, help="path to a checkpoint (runs/NAME/latest.pt)")
    e.add_argument("--set", action="append", metavar="KEY=VALUE", help="override an eval.* setting (repeatable)")
    e.add_argument("--suite", action="append", metavar="NAME",
                   help="run only this suite (repeatable; default: every suite that applies): linear_probe, "
                        "equivariance, path_integration, ood, retrieval, knn")
    e.set_defaults(func=cmd_eval)

    v = sub.add_parser("envs", help="list every registered world with its spaces, action meaning and options")
    v.set_defaults(func=cmd_envs)

    pl = sub.add_parser("plan", help="goal reaching and active vision with a checkpoint's world model "
                                     "(agents/plan_eval.py) -> plan.json, plan.md")
    pl.add_argument("--ckpt", required=True, help="path to a seq-JEPA checkpoint (runs/NAME/latest.pt)")
    pl.add_argument("--episodes", type=int, default=64, help="goal-reaching episodes per horizon (default 64)")
    pl.add_argument("--horizon", type=int, default=3, help="plan 1 and H steps ahead (default 3)")
    pl.add_argument("--candidates", type=int, default=64, help="CEM samples per iteration (default 64)")
    pl.add_argument("--iterations", type=int, default=4, help="CEM iterations (default 4)")
    pl.add_argument("--seed", type=int, default=0)
    pl.set_defaults(func=cmd_plan)

    b = sub.add_parser("bench", help="throughput: views/s of the worlds, the view-bank sampler and a training step "
                                     "(ours and the official way), peak memory -> table + JSON",
                       epilog=config_help(), formatter_class=argparse.RawTextHelpFormatter)
    with_config(b)
    b.add_argument("--device", help="shortcut for --set train.device=DEVICE (auto, cpu, cuda, cuda:N)")
    b.add_argument("--repeats", type=int, default=10, help="timed calls per measurement (default 10)")
    b.add_argument("--warmup", type=int, default=3, help="untimed calls before each measurement (default 3)")
    b.add_argument("--bank-objects", type=int, default=64, help="objects in the benchmark's view bank (default 64)")
    b.add_argument("--no-worlds", action="store_true", help="skip the per-world render measurements")
    b.add_argument("--no-official", action="store_true", help="skip the official-style step and the ratio")
    b.add_argument("--out", help="JSON file (default: <train.runs_dir>/bench-<preset>-<device>.json)")
    b.set_defaults(func=cmd_bench)

    pv = sub.add_parser("preview", help="an episode of a world's random policy -> MP4 + a GIF in TensorBoard "
                                        "(envs/preview.py)")
    pv.add_argument("--env", required=True, help="world id (or module:id), as listed by `run.py envs`")
    pv.add_argument("--steps", type=int, default=16, help="actions in the episode (default 16)")
    pv.add_argument("--seed", type=int, default=0)
    pv.add_argument("--fps", type=int, default=4, help="frames per second of the MP4 and GIF (default 4)")
    pv.add_argument("--out", help="MP4 path (default runs/preview-<world>/preview.mp4; TensorBoard logs beside it)")
    pv.add_argument("--set", action="append", metavar="world.options.NAME=VALUE", help="a world option (repeatable)")
    pv.set_defaults(func=cmd_preview)
    return p


def main(argv: list[str] | None = None) -> int:
    from seqjepa.checkpoint import CheckpointError
    from seqjepa.train import TrainingDiverged

    p = parser()
    args = p.parse_args(argv)
    if args.command is None:  # `python run.py` = the main job
        args = p.parse_args(["train"])
    try:
        return args.func(args)
    except (ConfigError, CliError, CheckpointError, TrainingDiverged, ValueError) as e:
        print(f"run.py {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint is intact (resume with --resume RUN_DIR)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
