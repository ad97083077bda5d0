"""The frozen-model evaluation (paper §3): pick suites, draw features once, run each suite, collect its numbers.

Suites, one module each (see its docstring for the protocol and the JSON keys it writes):

    linear_probe      top-1 of a linear classifier on z_agg (every M_val) and on the encoder output
    equivariance      R² per factor of the relative action from [z_1, z_2]; absolute R² from one view
    action_use        the predictor's loss with another sequence's next action over its loss with the true one
    path_integration  R² of the action x_1 → x_{M+1} from [z_agg, a_M], M = 1…7, with the paper's two ablations
    ood               linear_probe + equivariance scored on out-of-distribution test views (worlds with ``ood``)
    retrieval         MRR / Hit@1 / Hit@5 of the predictor's output among the object's views (SIE)
    knn               weighted k-NN top-1 (k = 20, cosine) on z_agg and on the encoder output

Probe data are fresh sequences drawn from the train and test worlds (from a view bank when one is given, else
rendered live under the random policy), long enough for every selected suite. The model is frozen and in eval
mode; every number comes back with the protocol that produced it, so a table can be read without the code.

>>> from seqjepa.config import EvalConfig
>>> res = evaluate(model, world_train, world_test, EvalConfig(), device="cuda", suites="all")   # doctest: +SKIP
>>> res["metrics"]["linear_probe/z_agg/M=5"]["value"]                                       # doctest: +SKIP
87.4
>>> print(format_table({"trained": res, "random init": res0}))                               # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Callable, Literal

import torch
from torch import nn

from envs.base import World
from envs.sequences import ViewBank
from seqjepa.options import ConfigError
from seqjepa.progress import Progress, wants_bar
from seqjepa.registry import Registry

from . import action_use, equivariance, knn, linear_probe, ood, paper, path_integration, retrieval
from .common import TEST_SEED_OFFSET, Context, base_protocol, common_protocol, sample_features

if TYPE_CHECKING:
    from seqjepa.config import EvalConfig

# eval.suites / --suite -> the module that runs the suite (NAME, views_needed, skip_reason, run), in the canonical
# order suites run and report in.
SUITES: Registry[ModuleType] = Registry("suite", "eval.suites", {m.NAME: m for m in (
    linear_probe, equivariance, action_use, path_integration, ood, retrieval, knn)})
SUITE_NAMES = SUITES.names()
CORE_SUITES = ("linear_probe", "equivariance")  # what evaluate() runs unless told otherwise (the first suite)


def resolve_suites(suites: Sequence[str] | Literal["all"] | None, name: str = "--suite") -> list[str]:
    """Suite names in canonical order; ``"all"`` or None = every suite. Raises ConfigError, naming the setting
    ``name``, on an unknown name or an empty list.

    >>> resolve_suites(["knn", "linear_probe"])
    ['linear_probe', 'knn']
    >>> resolve_suites(["knn", "nope"], "eval.suites")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    seqjepa.options.ConfigError: eval.suites: unknown suite 'nope'; allowed: all, linear_probe, equivariance, ...
    """
    if isinstance(suites, str):
        suites = [suites]
    if suites is None or "all" in suites:
        return list(SUITES.names())
    if not suites:
        raise ConfigError(f"{name}: got []; allowed: all, or one or more of {SUITES.describe()} "
                          f"(train.eval_after=false trains without evaluating)")
    for suite in suites:
        if suite not in SUITES:
            raise SUITES.unknown(suite, name, extra="all")
    return [s for s in SUITES if s in suites]


def views_needed(cfg: EvalConfig, suites: Sequence[str] | Literal["all"] | None) -> int:
    """Views per probe sequence the selected suites need (a bank must hold at least that many per object)."""
    return max(SUITES[s].views_needed(cfg) for s in resolve_suites(suites))


def evaluate(model: nn.Module, world_train: World, world_test: World, cfg: EvalConfig, *,
             device: torch.device | str, suites: Sequence[str] | Literal["all"] | None = CORE_SUITES,
             bank_train: ViewBank | None = None, bank_test: ViewBank | None = None,
             world_ood: World | None = None, bank_ood: ViewBank | None = None,
             log: Callable[[str], None] = print, autocast: bool = False,
             progress: Literal["auto", "on", "off"] = "auto") -> dict:
    """Run the selected suites on the frozen ``model`` (already on ``device``); see the module docstring.

    ``suites``: names from ``SUITE_NAMES``, or ``"all"``; a suite that does not apply (no predictor, no OOD
    option) is skipped and the reason goes to ``notes``. Features are computed on ``device`` and the probes are
    fitted there too. ``autocast`` runs the model (not the probes) under bf16. Evaluating a random-initialisation
    baseline is the caller's job: call this again with a fresh model and put both through :func:`format_table`.
    ``progress`` (``train.progress``'s values): a bar per step on a terminal; without one, ``log`` gets a line
    every ten seconds of a long step.

    Returns ``{"metrics": {name: {"value": float, ..., "protocol": {...}}}, "protocol": {...}, "suites": [...],
    "notes": {suite: reason}}``, JSON-serialisable. Regression metrics also carry ``r2`` and ``r2_global``.

    >>> res = evaluate(model, world_tr, world_te, cfg, device="cpu", log=lambda s: None)  # doctest: +SKIP
    >>> sorted(res["metrics"])[:2]                                                     # doctest: +SKIP
    ['absolute/quaternion', 'equivariance/rotation']
    """
    names = resolve_suites(suites)
    steps = views_needed(cfg, names)
    m_val = [m for m in sorted(set(cfg.m_val)) if m <= steps]  # suites needing longer z_agg asked for the views
    common = common_protocol(world_train, world_test, cfg, steps=steps, bank=bank_train is not None,
                             autocast=autocast)
    bar = wants_bar(progress)
    t0 = time.perf_counter()
    feats = {}
    for split, world, bank, n, seed in (("train", world_train, bank_train, cfg.train_sequences, cfg.seed),
                                        ("test", world_test, bank_test, cfg.test_sequences,
                                         cfg.seed + TEST_SEED_OFFSET)):
        with Progress(f"eval: features of the {split} split", total=math.ceil(n / cfg.batch_size),
                      unit="batches", log=log, bar=bar) as p:
            feats[split] = sample_features(model, world, bank, n, steps, seed, cfg, m_val, device, autocast,
                                           tick=p.update)
    train, test = feats["train"], feats["test"]
    log(f"eval: features of {cfg.train_sequences}+{cfg.test_sequences} sequences x {steps} views "
        f"in {time.perf_counter() - t0:.1f}s")
    ctx = Context(model=model, world_train=world_train, world_test=world_test, cfg=cfg, device=device,
                  train=train, test=test, base=base_protocol(common), autocast=autocast, bank_train=bank_train,
                  bank_test=bank_test, world_ood=world_ood, bank_ood=bank_ood, log=log)

    metrics: dict[str, dict] = {}
    notes: dict[str, str] = {}
    ran: list[str] = []
    for name in names:
        reason = SUITES[name].skip_reason(ctx)
        if reason is not None:
            notes[name] = f"skipped: {reason}"
            log(f"eval: {name} skipped ({reason})")
            continue
        t1 = time.perf_counter()
        with Progress(f"eval: {name}", unit="steps", log=log, bar=bar) as p:  # probe epochs, batches
            measured = SUITES[name].run(dataclasses.replace(ctx, tick=lambda note: p.update(note=note)))
        for key, result in measured.items():
            metrics[key] = result
            extra = f" (global {result['r2_global']:.3f})" if "r2_global" in result else ""
            log(f"eval: {key} = {result['value']:.3f}{extra}")
        ran.append(name)
        log(f"eval: suite {name} in {time.perf_counter() - t1:.1f}s")
    log(f"eval: done in {time.perf_counter() - t0:.1f}s")
    return {"metrics": metrics, "protocol": common, "suites": ran, "notes": notes}


# -- report ----------------------------------------------------------------------------------------------------------


def suite_of(metric: str) -> str:
    """The suite that writes ``metric``: its first path segment (the equivariance suite also writes
    ``absolute/...``).

    >>> suite_of("absolute/rotation"), suite_of("ood/linear_probe/encoder")
    ('equivariance', 'ood')
    """
    head = metric.split("/", 1)[0]
    return "equivariance" if head == "absolute" else head


# What "chance" means for each kind of number (by the start of its unit), in the line under the table.
CHANCE_MEANING = {"top-1": "a uniform guess (top-1 = 100 / classes)", "R²": "the train mean (R² = 0)",
                  "ratio": "a predictor that ignores the action (action_use = 1)",
                  "MRR": "a random ranking of the candidates (retrieval)",
                  "Hit@": "a random ranking of the candidates (retrieval)"}


def format_table(results_by_name: dict[str, dict]) -> str:
    """A markdown table: one column per model, one row per metric, each metric's ``value``; then the yardsticks
    that apply: ``chance`` (from each metric's protocol) and the paper's value where the world models the paper's
    dataset (``eval.paper``, read from the results' ``protocol``), each explained in a line under the table.

    Regressions show the paper's R² (per dimension, averaged over dimensions). Their pooled ``r2_global`` stays in
    the results (eval.json), defined in each metric's protocol, and out of the table: its SST is about the grand
    mean, so predicting each dimension's own mean already scores high where the means differ (a canonical
    quaternion's w is >= 0 while x, y, z centre on 0: a random-init encoder scored 0.685 on the relative rotation),
    which misleads beside the paper's number.
    Accepts evaluate() results or their ``"metrics"`` dicts; missing entries print as an en dash.

    >>> r = {"metrics": {"linear_probe/encoder": {"value": 51.234, "protocol": {"unit": "top-1 %"}}}}
    >>> print(format_table({"trained": r, "random init": r}))
    | metric | trained | random init |
    |---|---|---|
    | linear_probe/encoder (top-1 %) | 51.23 | 51.23 |
    """
    columns = {name: res.get("metrics", res) for name, res in results_by_name.items()}
    rows: dict[str, tuple[str, str]] = {}  # label -> (metric name, unit), in first-seen order
    chance: dict[str, float] = {}
    for metrics in columns.values():
        for name, entry in metrics.items():
            protocol = entry.get("protocol", {})
            rows.setdefault(f"{name} ({protocol.get('unit', '')})" if protocol.get("unit") else name,
                            (name, protocol.get("unit", "")))
            if protocol.get("chance") is not None:
                chance.setdefault(name, protocol["chance"])
    yardsticks, legend = {}, []
    if chance:
        yardsticks["chance"] = chance
        meanings = dict.fromkeys(meaning for name, unit in rows.values() if name in chance
                                 for start, meaning in CHANCE_MEANING.items() if unit.startswith(start))
        legend.append("chance: " + ", ".join(meanings))
    # world_train is eval.common.world_name(): the world's class name, then its split in brackets
    worlds = {str(res.get("protocol", {}).get("world_train", "")).split(" ")[0] for res in results_by_name.values()}
    reference = paper.paper_values(worlds.pop()) if len(worlds) == 1 else None
    if reference is not None and any(name in reference[1] for name, _ in rows.values()):
        yardsticks[reference[0]] = reference[1]
        legend.append(paper.LEGEND)
    heads = [*columns, *yardsticks]
    lines = ["| metric | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for label, (name, unit) in rows.items():
        cells = [_cell(metrics.get(name, {}).get("value"), unit) for metrics in columns.values()]
        cells += [_cell(values.get(name), unit) for values in yardsticks.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + ("\n\n" + "\n".join(f"- {line}" for line in legend) if legend else "")


def _cell(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if unit == "top-1 %" else f"{value:.3f}"
