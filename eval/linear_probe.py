"""Suite ``linear_probe``: top-1 of a linear classifier on z_agg for every M_val, and on the encoder output.

The invariance proxy of the paper (§3.3 item 1): z_agg aggregates the first M views and actions[:, :M-1].

>>> run(ctx)["linear_probe/z_agg/M=5"]["value"]      # doctest: +SKIP
87.4

JSON keys: ``linear_probe/z_agg/M={m}`` for m in cfg.m_val, ``linear_probe/encoder``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .common import Context, classify

if TYPE_CHECKING:
    from seqjepa.config import EvalConfig

NAME = "linear_probe"


def views_needed(cfg: EvalConfig) -> int:
    return max(cfg.m_val) + 1


def skip_reason(ctx: Context) -> str | None:
    return None  # every model has an encoder; z_agg rows are simply absent for encoder-only models


def run(ctx: Context, prefix: str = "") -> dict[str, dict]:
    """Fit and score the probes; ``prefix`` namespaces the keys (the ood suite passes ``"ood/"``)."""
    tr, te, out = ctx.train, ctx.test, {}
    for m in sorted(tr["z_agg"]):
        out[f"{prefix}linear_probe/z_agg/M={m}"] = classify(
            tr["z_agg"][m], tr["labels"], te["z_agg"][m], te["labels"], ctx, views=m,
            inputs=f"z_agg from the first {m} views and actions[:, :{m}]")
    out[f"{prefix}linear_probe/encoder"] = classify(
        tr["z"][:, 0], tr["labels"], te["z"][:, 0], te["labels"], ctx, views=1,
        inputs="encoder output z of the first view")
    return out
