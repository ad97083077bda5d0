#!/usr/bin/env python
"""seqjepa launcher: train, evaluate and inspect action-conditioned JEPA world models.

    python run.py                                  # train the cpu preset, evaluate, print the results table
    python run.py train --preset smoke             # a few seconds
    python run.py train --set model.depth=18 --set train.steps=3000
    python run.py train --resume runs/NAME         # continue exactly where it stopped
    python run.py train --resume runs/NAME/previous.pt --set optim.lr=1e-4   # from the one before, after a divergence
    python run.py eval --ckpt runs/NAME/latest.pt  # frozen-model probes -> runs/NAME/eval.json
    python run.py eval --ckpt runs/NAME/latest.pt --suite path_integration --suite retrieval
    python run.py train --agent sweep              # live sequences chosen by an agent (agents/)
    python run.py plan --ckpt runs/NAME/latest.pt  # goal reaching + active vision -> runs/NAME/plan.json
    python run.py envs                             # every registered world, its spaces and options
    python run.py bench --preset paper             # throughput (views/s) of the worlds and a training step
    torchrun --standalone --nproc_per_node=N run.py train ...   # N processes (GPUs); see README "Scale"
    tensorboard --logdir runs                      # curves, config

Bad input (a setting, a file, a checkpoint) exits with code 2 and one line naming it, the value and what is
allowed; an error of the program itself keeps its traceback.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path, PurePath

from seqjepa.config import MAX_SEED, RESUME_FIXED, Config, preset, resume_differences
from seqjepa.options import ConfigError, DataError, apply_overrides, from_dict, help_lines, to_dict

DEFAULT_PRESET = "cpu"
RUN_RECORD = ("versions", "command")  # what config.json holds besides the settings


class CliError(Exception):
    """A bad command line: reported as one line on stderr, exit code 2."""


class UsageError(CliError):
    """argparse's complaint about the command line, reported under the (sub)command's name."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints the whole usage; one line says the same
        raise UsageError(self.prog, f"{message} (see {self.prog} --help)")


def registered() -> dict[str, str]:
    """``setting -> "a, b, c"``: the names each setting that picks from a registry allows, read from the registries
    themselves (they live in the layers above the config, which therefore cannot list them)."""
    import envs
    from agents import AGENTS
    from eval.suite import SUITES
    from seqjepa.baselines import METHODS

    return {"world.env": envs.WORLDS.describe(), "world.agent": AGENTS.describe(),
            "model.method": METHODS.describe(), "eval.suites": SUITES.describe()}


def config_help(cfg: Config | None, heading: str, allowed: dict[str, str]) -> str:
    return (f"{heading}; override with --set section.key=value (world options with "
            f"--set world.options.NAME=VALUE, listed by `run.py envs`):\n"
            + "\n".join(help_lines(Config, values=cfg, allowed=allowed)))


def help_config(argv: list[str]) -> Config | None:
    """The config a --help shows: the preset (and world) named on the command line, as the run would use it."""
    def flag(name):
        for i, a in enumerate(argv):
            if a == name and i + 1 < len(argv):
                return argv[i + 1]
            if a.startswith(name + "="):
                return a.split("=", 1)[1]
        return None
    try:
        return preset(flag("--preset") or DEFAULT_PRESET, flag("--env"))
    except ConfigError:  # an unknown preset or world: the values before any preset; the run itself reports it
        return None


def build_config(args) -> Config:
    cfg = preset(args.preset or DEFAULT_PRESET, getattr(args, "env", None))
    if getattr(args, "method", None):
        apply_overrides(cfg, [f"model.method={args.method}"])
    if getattr(args, "agent", None):  # live sequences: the agent acts in the world (a bank is pre-rendered)
        apply_overrides(cfg, [f"world.agent={args.agent}", "world.source=live"])
    apply_overrides(cfg, args.set or [])
    from seqjepa.baselines import options
    options(cfg.model, cfg.preset)  # a bad model.method_options value fails here, before any world is built
    return cfg


def run_name(cfg: Config) -> str:
    name = cfg.train.name
    if name:
        parts = PurePath(name).parts
        if PurePath(name).is_absolute() or ".." in parts or not parts:
            raise ConfigError(f"train.name: got {name!r}; allowed: a folder name inside train.runs_dir "
                              f"({cfg.train.runs_dir}), not absolute, without '..'")
        return name
    world = cfg.world.env.split(":")[-1].split("/")[-1]
    return f"{cfg.preset}-{world}-s{cfg.train.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_writable(run_dir: Path, cfg: Config) -> None:
    """Fail now, not after the world and the bank are built, when the run folder cannot be created."""
    where = run_dir
    while not where.exists() and where != where.parent:
        where = where.parent
    if where == run_dir and not run_dir.is_dir():
        raise CliError(f"train.name: {run_dir} is a file; expected a new or existing run folder")
    if not where.is_dir():
        raise CliError(f"train.runs_dir: got {cfg.train.runs_dir!r}, but {where} is a file; expected a folder "
                       f"(created if missing)")
    try:
        tempfile.TemporaryDirectory(dir=where).cleanup()
    except OSError as e:
        raise CliError(f"train.runs_dir: got {cfg.train.runs_dir!r}, but no folder can be created in {where} "
                       f"({e.strerror}); expected a writable folder") from None


def resume_target(arg: str) -> tuple[Path, Path]:
    """--resume RUN (its latest.pt) or --resume RUN/previous.pt (any checkpoint inside a run folder)."""
    p = Path(arg)
    if p.is_dir():
        run_dir, ckpt = p, p / "latest.pt"
    elif p.is_file():
        run_dir, ckpt = p.parent, p
    else:
        raise CliError(f"--resume: got {arg!r}, which does not exist; expected a run folder (runs/NAME) or a "
                       f"checkpoint inside one (runs/NAME/previous.pt)")
    if not (run_dir / "config.json").is_file():
        raise CliError(f"--resume: {run_dir} has no config.json; expected a run folder written by run.py train")
    if not ckpt.exists():
        raise CliError(f"--resume: {ckpt} does not exist: the run stopped before its first checkpoint (see its "
                       f"train.ckpt_every); start it again instead")
    return run_dir, ckpt


def resume_config(args, run_dir: Path) -> Config:
    """The run's config.json with the command line's changes, which may not touch the network or the world."""
    saved = load_run_config(run_dir)
    changes = [("--preset", f"preset={args.preset}")] if args.preset else []
    changes += [("--env", f"world.env={args.env}")] if args.env else []
    changes += [("--method", f"model.method={args.method}")] if args.method else []
    changes += [("--agent", f"world.agent={args.agent}"), ("--agent", "world.source=live")] if args.agent else []
    changes += [("--set", item) for item in args.set or []]
    cfg = copy.deepcopy(saved)
    apply_overrides(cfg, [item for _, item in changes])  # compared before any weight or world is loaded
    diffs = resume_differences(saved, cfg)
    if diffs:
        key, old, new = diffs[0]
        flag = next((f for f, item in changes if (k := item.split("=", 1)[0].strip()) == key
                     or key.startswith(k + ".")), "--set")
        raise CliError(f"{flag}: changes {key} to {json.dumps(new)}, but {run_dir / 'config.json'} has "
                       f"{json.dumps(old)}; a resumed run keeps its network and world ({', '.join(RESUME_FIXED)}): "
                       f"start a new run to change it")
    return cfg


def record_resume(run_dir: Path, cfg: Config) -> None:
    """config.json takes the settings a resume changed (a lower lr, more steps): the next resume and the evaluation
    then read what the newest checkpoints were trained with. Its versions and first command stay."""
    from seqjepa.files import write_json

    path = run_dir / "config.json"
    data = json.loads(path.read_text())
    if {k: v for k, v in data.items() if k not in RUN_RECORD} != to_dict(cfg):
        write_json(path, {**to_dict(cfg), **{k: data[k] for k in RUN_RECORD if k in data}})


def cmd_train(args) -> int:
    from eval.from_checkpoint import evaluate_checkpoint
    from eval.suite import format_table, resolve_suites
    from eval.tensorboard import end_of_training
    from seqjepa import distributed as ddp
    from seqjepa.device import resolve_device
    from seqjepa.train import train

    ckpt = None
    if args.resume:
        run_dir, ckpt = resume_target(args.resume)
        cfg = resume_config(args, run_dir)
    else:
        cfg = build_config(args)
        ddp.setup(resolve_device(cfg.train.device))  # under torchrun: every rank takes rank 0's run name
        run_dir = Path(ddp.broadcast_object(str(Path(cfg.train.runs_dir) / run_name(cfg))))
        if (run_dir / "latest.pt").exists():
            raise CliError(f"train.name: run folder {run_dir} already holds a checkpoint; use --resume {run_dir} "
                           f"or another name")
        check_writable(run_dir, cfg)
    args.run_dir = run_dir  # for the interrupt message
    ddp.setup(resolve_device(cfg.train.device))  # (idempotent) a resumed run joins torchrun's group here
    if cfg.train.eval_after:
        resolve_suites(cfg.eval.suites, "eval.suites")  # a bad suite fails before training, not after it
    if not ddp.is_main():  # the other ranks train alongside rank 0, which reports and evaluates
        train(cfg, run_dir, resume=bool(args.resume), resume_from=ckpt, log=lambda msg: None)
        return 0
    if args.resume:
        record_resume(run_dir, cfg)
        print(f"run folder: {run_dir}")  # a new run's folder is announced by train() once it exists
    summary = train(cfg, run_dir, resume=bool(args.resume), resume_from=ckpt, on_end=end_of_training)
    print(f"trained {summary['steps_run']} steps in {summary['seconds']:.0f} s")
    if cfg.train.eval_after:
        results = evaluate_checkpoint(run_dir / "latest.pt", trusted=True)  # written just now from these settings
        print()
        print(format_table({k: v for k, v in results.items() if isinstance(v, dict)}))
    print(f"\nrun folder:  {run_dir}\ncheckpoint:  {run_dir / 'latest.pt'}"
          + (f"\nresults:     {run_dir / 'eval.json'}" if cfg.train.eval_after else "")
          + f"\ntensorboard: tensorboard --logdir {run_dir}")
    return 0


def load_run_config(run_dir: Path) -> Config:
    path = run_dir / "config.json"
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise CliError(f"--resume: {path} is not text; expected the JSON config run.py train writes") from None
    if not text.strip():
        raise CliError(f"--resume: {path} is empty; expected the JSON config run.py train writes")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CliError(f"--resume: {path} is not valid JSON ({e}); expected the config run.py train writes") from None
    if not isinstance(data, dict):
        raise CliError(f"--resume: {path} holds a {type(data).__name__}; expected a JSON object (the run's config)")
    for key in RUN_RECORD:
        data.pop(key, None)
    try:
        return from_dict(Config, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


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


def at_least(low: int, *flags: tuple[str, int]) -> None:
    """Each ``(flag, value)`` an integer >= ``low``: argparse checks the type, not the range."""
    for flag, value in flags:
        if value < low:
            raise CliError(f"{flag}: got {value}; expected an integer >= {low}")


def cmd_plan(args) -> int:
    from agents.plan_eval import PlanConfig, plan_checkpoint

    at_least(1, ("--episodes", args.episodes), ("--horizon", args.horizon), ("--candidates", args.candidates),
             ("--iterations", args.iterations))
    if not 0 <= args.seed <= MAX_SEED:
        raise CliError(f"--seed: got {args.seed}; expected an integer in [0, {MAX_SEED}]")
    pc = PlanConfig(episodes=args.episodes, horizons=tuple(sorted({1, args.horizon})), candidates=args.candidates,
                    iterations=args.iterations, seed=args.seed)
    plan_checkpoint(args.ckpt, pc, overrides=args.set or [])
    print(f"\nresults: {Path(args.ckpt).parent / 'plan.json'} (+ plan.md)")
    return 0


def cmd_envs(args) -> int:
    import dataclasses
    import envs
    from seqjepa.options import help_lines as option_lines

    def renamed(cls) -> str:  # configs written with an old name still load: say which names those are
        pairs = ", ".join(f"{old} -> {new}" for old, new in cls.RENAMED.items())
        return f"  renamed options (the old names still load): {pairs}\n" if pairs else ""

    for env_id in sorted(envs.WORLDS):
        cls = envs.WORLDS[env_id]
        try:
            world = envs.make_world(env_id, image_size=32) if "image_size" in {
                f.name for f in dataclasses.fields(cls.Options)} else envs.make_world(env_id)
        except DataError as e:  # a world over a dataset on disk, with no dataset given: list it anyway
            if not cls.needs_data:
                raise
            print(f"{env_id}: {cls.name}\n  action: {cls.action_doc}\n  needs data: {e}")
            print("  options (--set world.options.NAME=VALUE):")
            print("\n".join("  " + line for line in option_lines(cls.Options)))
            print(renamed(cls))
            continue
        print(f"{env_id}: {cls.name}")
        print("  observation: uint8 views (H, W, 3); gym.make_vec(...) gives numpy batches, backend='torch' torch ones")
        print(f"  action: Box{tuple(world.action_low.shape)} in [{world.action_low.min().item():g}, "
              f"{world.action_high.max().item():g}]: {cls.action_doc}")
        print("  factors: " + ", ".join(f"{k} [{f.start}:{f.stop}] ({f.head} probe)" for k, f in world.factors.items()))
        print("  options (--set world.options.NAME=VALUE):")
        for line in option_lines(cls.Options):
            print("  " + line)
        print(renamed(cls))
    return 0


def cmd_preview(args) -> int:
    from envs.preview import cmd
    return cmd(args)


def cmd_bench(args) -> int:
    from seqjepa.bench import cmd

    at_least(1, ("--repeats", args.repeats), ("--bank-objects", args.bank_objects))
    at_least(0, ("--warmup", args.warmup))
    return cmd(args, build_config(args))


def parser(help_cfg: Config | None = None) -> argparse.ArgumentParser:
    """The command line; ``help_cfg``: the config whose values the settings help shows (see help_config)."""
    p = Parser(prog="run.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command")
    shown = (f"the values the {help_cfg.preset} preset uses for {help_cfg.world.env}" if help_cfg
             else "the values before any preset")
    names = registered()
    allowed = {"world.env": f"one of {names['world.env']}, or module:ID (a plug-in world)",
               "world.agent": f"one of {names['world.agent']}", "model.method": f"one of {names['model.method']}",
               "eval.suites": f"list of: all, or names from {names['eval.suites']}"}
    run_help = config_help(help_cfg, f"settings, with {shown}", allowed)

    def with_config(sp):
        sp.add_argument("--preset", help=f"starting values: smoke (seconds), cpu (the default, minutes on 2 cores), "
                                         f"paper (3DIEBench setting, GPU); --help shows the chosen one's")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting (repeatable)")
        sp.add_argument("--env", help="shortcut for --set world.env=ID")
        sp.add_argument("--method", help=f"shortcut for --set model.method=NAME: {names['model.method']}")

    t = sub.add_parser("train", help="train (then evaluate) a model", epilog=run_help,
                       formatter_class=argparse.RawTextHelpFormatter)
    with_config(t)
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint "
                                                       "(or from RUN_DIR/previous.pt, the one before it)")
    t.add_argument("--agent", help=f"shortcut for --set world.agent=NAME --set world.source=live: "
                                   f"{names['world.agent']} (see agents/)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint with the frozen-model suites",
                       epilog=config_help(help_cfg, "settings, each starting from the checkpoint's own value "
                                                    f"(shown: {shown})", allowed),
                       formatter_class=argparse.RawTextHelpFormatter)
    e.add_argument("--ckpt", required=True, help="path to a checkpoint (runs/NAME/latest.pt)")
    e.add_argument("--set", action="append", metavar="KEY=VALUE", help="override an eval.* setting (repeatable)")
    e.add_argument("--suite", action="append", metavar="NAME",
                   help=f"run only this suite (repeatable; default: every suite that applies): "
                        f"{names['eval.suites']}")
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
    pl.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a setting of the checkpoint's config (repeatable), e.g. world.cache_dir=DIR or "
                         "world.env=module:ID for a world from a plug-in module")
    pl.set_defaults(func=cmd_plan)

    b = sub.add_parser("bench", help="throughput: views/s of the worlds, the view-bank sampler and a training step "
                                     "(ours and the official way), peak memory -> table + JSON",
                       epilog=run_help, formatter_class=argparse.RawTextHelpFormatter)
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


def interrupted(args) -> str:
    run_dir = getattr(args, "run_dir", None)
    if run_dir is None:
        return "interrupted"
    if (run_dir / "latest.pt").is_file():
        return f"interrupted; the last checkpoint is intact: continue with python run.py train --resume {run_dir}"
    return f"interrupted before the first checkpoint of {run_dir}; nothing to resume"


def main(argv: list[str] | None = None) -> int:
    from seqjepa.checkpoint import CheckpointError
    from seqjepa.train import TrainingDiverged

    argv = sys.argv[1:] if argv is None else list(argv)
    wants_help = any(a in ("-h", "--help") for a in argv)
    p = parser(help_config(argv) if wants_help else None)
    args = argparse.Namespace(command=argv[0] if argv else "train")
    try:
        args = p.parse_args(argv)
        if args.command is None:  # `python run.py` = the main job
            args = p.parse_args(["train"])
        return args.func(args)
    except UsageError as e:
        print(f"{e.prog}: error: {e}", file=sys.stderr)
        return 2
    except (ConfigError, DataError, CliError, CheckpointError, TrainingDiverged) as e:
        print(f"run.py {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the filesystem refused: name the path; an OSError without one is a bug
        if e.filename is None:
            raise
        where = f"{e.filename}" + (f" -> {e.filename2}" if e.filename2 else "")
        print(f"run.py {args.command}: error: {where}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted(args), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
