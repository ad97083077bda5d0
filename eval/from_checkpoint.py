"""Evaluate a checkpoint alone: rebuild the model and its worlds from what the checkpoint records.

Writes next to the checkpoint: ``eval.json`` (every number with its protocol), ``eval.md`` (the table),
``eval_accuracy_vs_m.png`` and ``eval_path_integration.png``; and into the run folder's TensorBoard events the
``eval/`` scalars, table and plots (plus the inspection of what the model predicts with ``inspect=True``). The
report accumulates: a later evaluation of the same checkpoint (same step) replaces the numbers of the suites it
runs, for the trained network and the random init alike, and keeps the others; an evaluation of another step
starts it afresh. Every file is written whole or not at all (``seqjepa.files.atomic_write``).

A checkpoint is a file someone may hand over, so it is checked before anything is built from it
(:func:`open_checkpoint`): its format (``seqjepa.checkpoint.load``), its weights against the network its
``model_hparams`` describe (built on the meta device, where nothing is allocated, after the hparams pass the
config's bounds), its step and its stored config. Nor does it decide anything about this machine: views are
cached under the current ``world.cache_dir`` (the default, or ``overrides``; ``train.progress`` likewise), and a
plug-in module named in its ``world.env`` ("module:Id-v0") is imported only when ``overrides`` set ``world.env``
too. ``trusted=True`` lifts both for a checkpoint this process wrote from its own user's settings (evaluation
after training).

>>> results = evaluate_checkpoint("runs/NAME/latest.pt", suites=["linear_probe", "retrieval"])   # doctest: +SKIP
>>> results["trained"]["metrics"]["linear_probe/z_agg/M=5"]["value"]                           # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Literal

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import envs
from seqjepa import checkpoint, files
from seqjepa.baselines import METHODS, method_class
from seqjepa.checkpoint import CheckpointError
from seqjepa.config import Config, ModelConfig, TrainConfig, WorldConfig
from seqjepa.options import ConfigError, apply_overrides, from_dict, opt, set_field
from seqjepa.data import build_bank, build_world
from seqjepa.device import resolve_device
from seqjepa.model import ACTION_BNS

from . import plots
from .ood import has_ood_option
from .suite import SUITE_NAMES, evaluate, format_table, resolve_suites, suite_of, views_needed


# -- reading a checkpoint -------------------------------------------------------------------------------------------

@dataclasses.dataclass
class WorldHparams:
    """The ``model_hparams`` a network takes from its world rather than from ``model.*``, with their bounds."""
    action_dim: int = opt(4, "width of the world's actions (unused with act_cond=none)", ge=0)
    mean: list[float] = opt([0.5, 0.5, 0.5], "per-channel pixel mean the network normalises views with")
    std: list[float] = opt([0.25, 0.25, 0.25], "per-channel pixel std the network normalises views with", gt=0.0)
    action_bn: str = opt("3diebench", "how training batched the actions through their BatchNorm", choices=ACTION_BNS)


class LiteralsOnCPU(TorchFunctionMode):
    """Inside ``torch.device("meta")``: tensors made from literal data (``torch.tensor``: the normalisation
    buffers a baseline reads back into its hparams, BatchNorm's step counters) stay on the CPU, where they can be
    read; every other factory still allocates nothing."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.tensor and kwargs.get("device") is None:
            kwargs = {**kwargs, "device": "cpu"}
        return func(*args, **kwargs)


def check_network(ckpt: dict, path: Path) -> None:
    """Refuse a checkpoint whose network cannot be rebuilt as it says, before any of it is allocated.

    ``model_hparams`` must be the constructor settings of the checkpoint's ``method``, each within the config's
    bounds (``model.*`` fields, the method's options, :class:`WorldHparams`); the network they describe is then
    built on the meta device and its tensor names and shapes must be the weights' in the file. A network that
    passes holds exactly the file's weights, so the file's size bounds what building it allocates.
    """
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {path}: {what}")

    method = ckpt.get("method", "seqjepa")
    if method not in METHODS:
        raise bad(f"method: got {method!r}; expected one of {', '.join(METHODS)}")
    hp = ckpt.get("model_hparams")
    if not isinstance(hp, dict):
        raise bad("no model_hparams (the settings that rebuild its network); expected the mapping run.py train "
                  "writes" if hp is None else f"model_hparams: got a {type(hp).__name__}; expected a mapping of "
                  f"constructor settings")
    weights = ckpt["model"]
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in weights.items()):
        raise bad("model: expected a mapping of parameter names to tensors")
    cls = method_class(method)
    check_hparams(hp, cls, method, weights, bad)
    try:
        with torch.device("meta"), LiteralsOnCPU():
            net = cls(**hp)
    except ValueError as e:  # a combination the constructor refuses (agg_heads must divide the token width, ...)
        raise bad(f"model_hparams: {e}") from None
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in weights.items()}
    missing, unexpected = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
    wrong = [k for k in want if k in got and want[k] != got[k]]
    if missing or unexpected or wrong:
        size = ", ".join(f"{k}={hp[k]}" for k in ("depth", "width", "stem", "act_dim", "pred_hidden") if k in hp)
        detail = (f"{wrong[0]} is {list(got[wrong[0]])} in the file but {list(want[wrong[0]])} in the network "
                  f"({len(wrong)} tensor(s) differ)" if wrong else
                  f"{len(missing)} tensor(s) missing (e.g. {missing[0]})" if missing else
                  f"{len(unexpected)} unexpected tensor(s) (e.g. {unexpected[0]})")
        raise bad(f"its weights do not fit the {method} network its model_hparams describe ({size}): {detail}; "
                  f"expected the weights and model_hparams of one run")


def check_hparams(hp: dict, cls: type[nn.Module], method: str, weights: dict[str, torch.Tensor],
                  bad: Callable[[str], CheckpointError]) -> None:
    """Every key a constructor parameter of ``cls``, every value within the config's bounds, no size beyond what
    the weights can hold."""
    params = inspect.signature(cls).parameters
    unknown = sorted(k for k in hp if k not in params)
    if unknown:
        raise bad(f"model_hparams: unknown key(s) {', '.join(map(repr, unknown))} for method {method!r}; "
                  f"expected keys from {', '.join(params)}")
    required = [p for p, v in params.items() if v.default is inspect.Parameter.empty and p not in hp]
    if required:
        raise bad(f"model_hparams: missing {', '.join(required)} for method {method!r}")
    sections = [(ModelConfig, {f.name for f in dataclasses.fields(ModelConfig)} - {"method", "method_options"}),
                (WorldHparams, {f.name for f in dataclasses.fields(WorldHparams)})]
    if cls.Options is not None:
        sections.append((cls.Options, {f.name for f in dataclasses.fields(cls.Options)}))
    numel = sum(v.numel() for v in weights.values())
    for key, value in hp.items():
        section = next(s for s, names in sections if key in names)
        try:
            set_field(section(), key, value, "model_hparams.")
        except ConfigError as e:
            raise bad(str(e)) from None
        # A network whose width or layer count is n holds at least n weights: a larger n describes another
        # network than the file's, and building it (even on the meta device) would cost its size.
        for n in (value if isinstance(value, list) else [value]):
            if isinstance(n, int) and not isinstance(n, bool) and n > numel:
                raise bad(f"model_hparams.{key}: got {value!r}; a network of that size holds more than the "
                          f"{numel} weights in this file")


def confine(cfg: Config, path: Path, overrides: Sequence[str]) -> None:
    """What the checkpoint's config says about this machine gives way to the current settings: the default
    ``world.cache_dir`` and ``train.progress`` (``overrides`` may set others), and no plug-in import the user did
    not ask for."""
    cfg.world.cache_dir = WorldConfig().cache_dir
    cfg.train.progress = TrainConfig().progress
    if any(item.split("=", 1)[0].strip() == "world.env" for item in overrides):
        return  # the user names the world (and its plug-in module) themselves
    env = cfg.world.env
    module, sep, name = env.partition(":")
    if not sep:
        module, name = "", env
    if module and name in envs.WORLDS:
        cfg.world.env = name  # registered already: nothing to import
        return
    if module:
        raise CheckpointError(f"checkpoint {path}: world.env {env!r} needs the plug-in module {module!r}, which is "
                              f"not imported on a checkpoint's word; to use it, pass it yourself: "
                              f"--set world.env={env}")
    if name not in envs.WORLDS:
        raise CheckpointError(f"checkpoint {path}: world.env {env!r} is not a registered world; registered: "
                              f"{', '.join(sorted(envs.WORLDS))} (a plug-in world: --set world.env=module:ID)")


def open_checkpoint(path: str | Path, overrides: Sequence[str] = (), *, trusted: bool = False
                    ) -> tuple[dict, Config]:
    """The checkpoint at ``path``, checked (:func:`check_network`), and its run config with ``overrides``
    applied; unless ``trusted``, confined to the current machine's settings (:func:`confine`). Raises
    CheckpointError (ConfigError for a bad override) with one line naming the file and what is wrong."""
    path = Path(path)
    ckpt = checkpoint.load(path)
    check_network(ckpt, path)
    step = ckpt.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"checkpoint {path}: step: got {step!r}; expected the integer step it was written at")
    stored = ckpt.get("config")
    if not isinstance(stored, dict):
        raise CheckpointError(f"checkpoint {path}: no stored config; expected the run config run.py train writes")
    try:
        cfg: Config = from_dict(Config, stored)
    except ConfigError as e:
        raise CheckpointError(f"checkpoint {path}: stored config: {e}") from None
    if not trusted:
        confine(cfg, path, overrides)
    apply_overrides(cfg, list(overrides))
    return ckpt, cfg


def checkpoint_network(ckpt: dict, cfg: Config, *, trained: bool) -> nn.Module:
    """The network of a checkpoint from :func:`open_checkpoint` with its trained weights, or at the initialisation
    its run started from (the "random init" every evaluation compares with: the same classes and hparams after
    seeding ``train.seed``). Only the random init reseeds the global RNG: trained weights overwrite whatever the
    construction drew."""
    if not trained:
        torch.manual_seed(cfg.train.seed)
    model = method_class(ckpt.get("method", "seqjepa"))(**ckpt["model_hparams"])
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


def evaluate_checkpoint(path: str | Path, overrides: Sequence[str] | None = None, *,
                        suites: Sequence[str] | Literal["all"] | None = None, inspect: bool = False,
                        tensorboard: bool = True, trusted: bool = False, log: Callable[[str], None] = print) -> dict:
    """Run the evaluation suites on the checkpoint at ``path`` (and on the same network at random init).

    ``overrides``: ``section.key=value`` settings on top of the checkpoint's config. ``suites``: names (see
    ``eval.suite.SUITE_NAMES``) or ``"all"`` (every suite that applies); None = the checkpoint config's
    ``eval.suites``. ``tensorboard`` logs the evaluation into the checkpoint's folder; ``inspect`` also logs the
    projector, imagination rollouts and attention of the trained model on the test split (``run.py eval`` does).
    ``trusted``: see the module doc. Returns this evaluation's results; the report beside the checkpoint also
    keeps the other suites of earlier evaluations of the same step.
    """
    path = Path(path)
    ckpt, cfg = open_checkpoint(path, overrides or (), trusted=trusted)
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
                                 world_ood=world_ood, log=log, progress=cfg.train.progress, **banks)
        results[name]["step"] = ckpt["step"] if name == "trained" else 0
    results["checkpoint"] = str(path)
    report = write_report(path, results, log=log)
    if tensorboard:
        log_to_tensorboard(path.parent, results, report, step=ckpt["step"],
                           inspect_args=(models["trained"], world_test, cfg, device, banks.get("bank_test"))
                           if inspect else None, log=log)
    return results


def model_results(results: dict) -> dict[str, dict]:
    """The per-model entries of evaluate_checkpoint's results (drops ``checkpoint``)."""
    return {k: v for k, v in results.items() if isinstance(v, dict)}


# -- the report -----------------------------------------------------------------------------------------------------

def merge_results(path: Path, results: dict, log: Callable[[str], None]) -> dict:
    """``results`` on top of the eval.json already beside the checkpoint, when that one describes the same
    checkpoint at the same step: for each model, the suites run now (or skipped now) replace their earlier numbers
    and notes, the others stay. Suites kept from an earlier evaluation whose common protocol differs from this
    one's keep theirs under ``suite_protocols``."""
    file = path.parent / "eval.json"
    if not file.exists():
        return results
    try:
        old = json.loads(file.read_text())
    except ValueError as e:  # not JSON (an interrupted write of an older version, an edit): start afresh
        log(f"eval: {file} is not readable JSON ({e}); writing a new one")
        return results
    same = (isinstance(old, dict) and isinstance(old.get("trained"), dict)
            and Path(str(old.get("checkpoint", ""))).name == path.name
            and old["trained"].get("step") == results["trained"]["step"])
    if not same:
        log(f"eval: {file} described another checkpoint or step; writing a new one")
        return results
    merged = {name: merge_model(old[name], entry) if isinstance(old.get(name), dict) else entry
              for name, entry in model_results(results).items()}
    kept = {name: entry for name, entry in model_results(old).items() if name not in merged}
    return {**merged, **kept, "checkpoint": results["checkpoint"]}


def merge_model(old: dict, new: dict) -> dict:
    """One model's entry: ``new``'s suites and notes replace ``old``'s, the rest of ``old`` stays."""
    asked = set(new.get("suites", [])) | set(new.get("notes", {}))
    kept_metrics = {k: v for k, v in old.get("metrics", {}).items() if suite_of(k) not in asked}
    metrics = {**kept_metrics, **new.get("metrics", {})}
    order = {name: i for i, name in enumerate(SUITE_NAMES)}
    metrics = dict(sorted(metrics.items(), key=lambda kv: order.get(suite_of(kv[0]), len(order))))
    kept_suites = [s for s in old.get("suites", []) if s not in asked]
    protocols = {s: old.get("suite_protocols", {}).get(s, old.get("protocol")) for s in kept_suites}
    protocols = {s: p for s, p in protocols.items() if p != new.get("protocol")}
    out = {**new, "metrics": metrics,
           "suites": [s for s in SUITE_NAMES if s in set(kept_suites) | set(new.get("suites", []))],
           "notes": {**{k: v for k, v in old.get("notes", {}).items() if k not in asked}, **new.get("notes", {})},
           "earlier_suites": kept_suites}
    if protocols:
        out["suite_protocols"] = protocols
    return out


def write_report(path: Path, results: dict, log: Callable[[str], None] = print) -> dict:
    """eval.json, eval.md and the PNG plots next to the checkpoint, merged with the earlier evaluation of the same
    checkpoint (:func:`merge_results`); returns the table and the plot images of the merged report."""
    merged = merge_results(path, results, log)
    files.write_json(path.parent / "eval.json", merged)
    per_model = model_results(merged)
    table = format_table(per_model)
    images = {"accuracy_vs_m": plots.accuracy_vs_m(per_model),
              "path_integration": plots.path_integration_plot(per_model)}
    figures = []
    for key, img in images.items():
        if img is not None:
            with files.atomic_write(path.parent / PLOTS[key], "wb") as fh:
                img.save(fh, format="PNG")
            figures.append(f"![{key}]({PLOTS[key]})")
        else:  # a plot of an earlier evaluation would now describe numbers eval.json no longer holds
            (path.parent / PLOTS[key]).unlink(missing_ok=True)
    trained = per_model.get("trained", {})
    notes = trained.get("notes") or {}
    earlier = trained.get("earlier_suites") or []
    text = f"# Evaluation of {path} (step {trained.get('step', '?')})\n\n{table}\n\n"
    if earlier:
        now = [s for s in trained.get("suites", []) if s not in earlier]
        text += (f"Measured by the last evaluation: {', '.join(now) or 'none'}; kept from earlier evaluations of "
                 f"this checkpoint: {', '.join(earlier)}.\n\n")
    text += "".join(f"- {k}: {v}\n" for k, v in notes.items()) + ("\n" if notes else "")
    text += "\n\n".join(figures) + ("\n\n" if figures else "")
    text += "Protocol: see eval.json (every number carries its own).\n"
    with files.atomic_write(path.parent / "eval.md") as fh:
        fh.write(text)
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
