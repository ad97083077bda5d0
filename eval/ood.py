"""Suite ``ood``: the linear-probe and equivariance probes scored on out-of-distribution test views.

Paper App. B.3 / Table 9 (3DIEBench-OOD): probes are fitted on in-distribution train features, exactly as the
``linear_probe`` and ``equivariance`` suites (same heads, same seed), and scored on the test split of the world
built with ``ood=True`` — for the rotating-objects world, poses uniform over the rotations outside the training
Euler box (3DIEBench-OOD's own angle rule names the same rotations as the training range; see
``envs.rotations.sample_euler``). Worlds without an ``ood`` option are skipped with a note.

>>> run(ctx)["ood/equivariance/rotation"]["value"]     # doctest: +SKIP
-0.7

JSON keys: ``ood/`` + every key of the linear_probe and equivariance suites.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from . import equivariance, linear_probe
from .common import TEST_SEED_OFFSET, Context, sample_features, world_name

if TYPE_CHECKING:
    from seqjepa.config import EvalConfig

NAME = "ood"


def views_needed(cfg: EvalConfig) -> int:
    return max(linear_probe.views_needed(cfg), equivariance.views_needed(cfg))


def has_ood_option(world) -> bool:
    """True when the world's Options declare ``ood`` (the rotating-objects world does)."""
    opts = getattr(world, "Options", None)
    return opts is not None and dataclasses.is_dataclass(opts) and "ood" in {f.name for f in
                                                                              dataclasses.fields(opts)}


def skip_reason(ctx: Context) -> str | None:
    if ctx.world_ood is None:
        return (f"{type(ctx.world_test).__name__} has no out-of-distribution option"
                if not has_ood_option(ctx.world_test) else "no OOD world was given to evaluate()")
    return None


def run(ctx: Context) -> dict[str, dict]:
    """Features of OOD test sequences, then both suites with those as the test split."""
    steps = views_needed(ctx.cfg)  # not the longest suite's sequences: these probes read only max(M_val) + 1 views
    test = sample_features(ctx.model, ctx.world_ood, ctx.bank_ood, ctx.cfg.test_sequences, steps,
                           ctx.cfg.seed + TEST_SEED_OFFSET, ctx.cfg, ctx.m_val, ctx.device, ctx.autocast,
                           tick=lambda: ctx.tick("features of the OOD test sequences"))
    sampling = "bank: distinct random views" if ctx.bank_ood is not None else "live: random policy"
    ood = dataclasses.replace(ctx, test=test, world_test=ctx.world_ood,
                              base={**ctx.base, "test_world": world_name(ctx.world_ood),
                                    "test_sampling": sampling,
                                    "probe_fit": "on in-distribution train features (as the in-distribution "
                                                 "suites); scored on OOD test features"})
    return {**linear_probe.run(ood, prefix="ood/"), **equivariance.run(ood, prefix="ood/")}
