#!/usr/bin/env python
"""seqjepa launcher: train, evaluate and inspect action-conditioned JEPA world models.

    python run.py                                  # train the cpu preset, evaluate, print the results table
    python run.py train --preset smoke             # a few seconds
    python run.py train --set model.depth=18 --set train.steps=3000
    python run.py train --resume runs/NAME         # continue exactly where it stopped
    python run.py eval --ckpt runs/NAME/latest.pt  # frozen-model probes -> runs/NAME/eval.json
    python run.py eval --ckpt runs/NAME/latest.pt --suite path_integration --suite retrieval
    python run.py envs                             # every registered world, its spaces and options
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
    cfg = preset(args.preset)
    if getattr(args, "env", None):
        cfg.world.env = args.env
    if getattr(args, "method", None):
        apply_overrides(cfg, [f"model.method={args.method}"])
    apply_overrides(cfg, args.set or [])
    from seqjepa.baselines import options
    options(cfg.model, cfg.preset)  # a bad model.method_options value fails here, before any world is built
    return cfg


def run_name(cfg: Config) -> str:
    world = cfg.world.env.split(":")[-1].split("/")[-1]
    return cfg.train.name or f"{cfg.preset}-{world}-s{cfg.train.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_train(args) -> int:
    from eval.from_checkpoint import evaluate_checkpoint
    from eval.suite import format_table
    from seqjepa.train import train

    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.json").is_file():
            raise CliError(f"--resume: {run_dir} has no config.json; expected a run folder")
        cfg = _load_run_config(run_dir)
        apply_overrides(cfg, args.set or [])
    else:
        cfg = build_config(args)
        run_dir = Path(cfg.train.runs_dir) / run_name(cfg)
        if (run_dir / "latest.pt").exists():
            raise CliError(f"train.name: run folder {run_dir} already holds a checkpoint; use --resume {run_dir} "
                           f"or another name")
    _validate_world(cfg)
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


def _validate_world(cfg: Config) -> None:
    """Build the world once on the CPU so a bad world option fails here, before anything is written."""
    import envs
    envs.make_world(cfg.world.env, **{**cfg.world.options, "split": "train"})


def cmd_eval(args) -> int:
    from eval.from_checkpoint import evaluate_checkpoint
    from eval.suite import format_table

    results = evaluate_checkpoint(args.ckpt, args.set or [], suites=args.suite or "all", inspect=True)
    print(format_table({k: v for k, v in results.items() if isinstance(v, dict)}))
    print(f"\nresults: {Path(args.ckpt).parent / 'eval.json'} (+ eval.md, eval_*.png)\n"
          f"tensorboard: tensorboard --logdir {Path(args.ckpt).parent}")
    return 0


def cmd_envs(args) -> int:
    import dataclasses
    import envs
    from seqjepa.config import help_lines as option_lines

    for env_id in sorted(envs.WORLDS):
        world = envs.make_world(env_id, image_size=32) if "image_size" in {
            f.name for f in dataclasses.fields(envs.WORLDS[env_id].Options)} else envs.make_world(env_id)
        cls = envs.WORLDS[env_id]
        print(f"{env_id}: {cls.name}")
        print(f"  observation: uint8 views (H, W, 3); gym.make_vec(..., device=...) gives torch batches")
        print(f"  action: Box{tuple(world.action_low.shape)} in [{world.action_low.min().item():g}, "
              f"{world.action_high.max().item():g}]: {cls.action_doc}")
        print(f"  factors: " + ", ".join(f"{k} [{f.start}:{f.stop}] ({f.head} probe)" for k, f in world.factors.items()))
        print("  options (--set world.options.NAME=VALUE):")
        for line in option_lines(cls.Options):
            print("  " + line)
        print()
    return 0


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
