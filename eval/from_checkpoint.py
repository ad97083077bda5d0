"""Evaluate a checkpoint alone: rebuild the model and its worlds from what the checkpoint records.

Writes next to the checkpoint: ``eval.json`` (every number with its protocol), ``eval.md`` (the table),
``eval_accuracy_vs_m.png`` and ``eval_path_integration.png``; and into the run folder's TensorBoard events the
``eval/`` scalars, table and plots (plus the inspection of what the model predicts with ``inspect=True``).

>>> results = evaluate_checkpoint("runs/NAME/latest.pt", suites=["linear_probe", "retrieval"])   # doctest: +SKIP
>>> results["trained"]["metrics"]["linear_probe/z_agg/M=5"]["value"]                           # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Literal

import torch
from torch import nn

import envs
from seqjepa import checkpoint
from seqjepa.config import Config, apply_overrides, from_dict
from seqjepa.model import SeqJEPA
from seqjepa.train import build_bank, build_world, resolve_device

from . import plots
from .ood import has_ood_option
from .suite import evaluate, format_table, resolve_suites, views_needed

def model_class(method: str) -> type[nn.Module]:
    """The class a checkpoint's ``model_hparams`` rebuild: seq-JEPA, or a baseline of seqjepa.baselines."""
    if method == "seqjepa":
        return SeqJEPA
    from seqjepa.baselines import method_class
    return method_class(method)


def checkpoint_network(ckpt: dict, cfg: Config, *, trained: bool) -> nn.Module:
    """The checkpoint's network with its trained weights, or at the initialisation its run started from (the
    "random init" every evaluation compares with: the same classes and hparams after seeding ``train.seed``).
    Only the random init reseeds the global RNG: trained weights overwrite whatever the construction drew."""
    if not trained:
        torch.manual_seed(cfg.train.seed)
    model = model_class(ckpt.get("method", "seqjepa"))(**ckpt["model_hparams"])
    if trained:
        model.load_state_dict(ckpt["model"])
    return model


PLOTS = {"accuracy_vs_m": "eval_accuracy_vs_m.png", "path_integration": "eval_path_integration.png"}


def build_ood_world(cfg: Config, device: torch.device) -> envs.World | None:
    """The test split of the run's world with ``ood=True``, or None when the world has no such option."""
    _, cls = envs.world_class(cfg.world.env)
    if not has_ood_option(cls):
        return None
    return build_world(cfg, device, "test", ood=True)


def evaluate_checkpoint(path: str | Path, overrides: list[str] | None = None, *,
                        suites: Sequence[str] | Literal["all"] | None = None, inspect: bool = False,
                        tensorboard: bool = True, log: Callable[[str], None] = print) -> dict:
    """Run the evaluation suites on the checkpoint at ``path`` (and on the same network at random init).

    ``suites``: names (see ``eval.suite.SUITE_NAMES``) or ``"all"`` (every suite that applies); None = the
    checkpoint config's ``eval.suites``. ``tensorboard``
    logs the evaluation into the checkpoint's folder; ``inspect`` also logs the projector, imagination rollouts
    and attention of the trained model on the test split (``run.py eval`` does). Returns the results.
    """
    path = Path(path)
    ckpt = checkpoint.load(path)
    cfg: Config = from_dict(Config, ckpt["config"])
    apply_overrides(cfg, overrides or [])
    names = resolve_suites(cfg.eval.suites, "eval.suites") if suites is None else resolve_suites(suites)
    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.eval.seed)

    world_train = build_world(cfg, device, "train")
    world_test = build_world(cfg, device, "test")
    world_ood = build_ood_world(cfg, device) if "ood" in names else None
    banks = {}
    if cfg.world.source == "bank":
        need = views_needed(cfg.eval, names)
        if cfg.world.bank_views < need:
            cfg.world.bank_views = need  # eval sequences are longer than training ones: a bank with more views
        banks = {"bank_train": build_bank(cfg, world_train, "train", log),
                 "bank_test": build_bank(cfg, world_test, "test", log)}
        if world_ood is not None:
            banks["bank_ood"] = build_bank(cfg, world_ood, "test", log)

    models = {"trained": checkpoint_network(ckpt, cfg, trained=True).to(device)}
    if cfg.eval.random_init_baseline:
        models["random init"] = checkpoint_network(ckpt, cfg, trained=False).to(device)
    results = {}
    for name, model in models.items():
        log(f"evaluating {name} ...")
        results[name] = evaluate(model, world_train, world_test, cfg.eval, device=device, suites=names,
                                 world_ood=world_ood, log=log, **banks)
        results[name]["step"] = ckpt["step"] if name == "trained" else 0
    results["checkpoint"] = str(path)
    report = write_report(path, results)
    if tensorboard:
        log_to_tensorboard(path.parent, results, report, step=ckpt["step"],
                           inspect_args=(models["trained"], world_test, cfg, device, banks.get("bank_test"))
                           if inspect else None, log=log)
    return results


def model_results(results: dict) -> dict[str, dict]:
    """The per-model entries of evaluate_checkpoint's results (drops ``checkpoint``)."""
    return {k: v for k, v in results.items() if isinstance(v, dict)}


def write_report(path: Path, results: dict) -> dict:
    """eval.json, eval.md and the PNG plots next to the checkpoint; returns the table and the plot images."""
    with open(path.parent / "eval.json", "w") as fh:
        json.dump(results, fh, indent=2)
    per_model = model_results(results)
    table = format_table(per_model)
    images = {"accuracy_vs_m": plots.accuracy_vs_m(per_model),
              "path_integration": plots.path_integration_plot(per_model.get("trained", {}))}
    figures = []
    for key, img in images.items():
        if img is not None:
            img.save(path.parent / PLOTS[key])
            figures.append(f"![{key}]({PLOTS[key]})")
        else:  # a plot of an earlier evaluation would now describe numbers eval.json no longer holds
            (path.parent / PLOTS[key]).unlink(missing_ok=True)
    notes = per_model.get("trained", {}).get("notes") or {}
    with open(path.parent / "eval.md", "w") as fh:
        fh.write(f"# Evaluation of {path}\n\n{table}\n\n")
        fh.write("".join(f"- {k}: {v}\n" for k, v in notes.items()) + ("\n" if notes else ""))
        fh.write("\n\n".join(figures) + ("\n\n" if figures else ""))
        fh.write("Protocol: see eval.json (every number carries its own).\n")
    return {"table": table, "images": images}


def log_to_tensorboard(run_dir: Path, results: dict, report: dict, *, step: int, inspect_args: tuple | None,
                       log: Callable[[str], None]) -> None:
    """The evaluation (and, given ``inspect_args``, the inspection) into the run folder's events."""
    from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow to import

    from .tensorboard import log_evaluation, log_inspection

    with SummaryWriter(str(run_dir)) as writer:
        log_evaluation(writer, results, step, table=report["table"], plots=report["images"])
        if inspect_args is not None:
            model, world, cfg, device, bank = inspect_args
            log_inspection(writer, model, world, cfg, step=step, device=device, bank=bank, prefix="eval",
                           seed=cfg.eval.seed, log=log)
