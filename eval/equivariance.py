"""Suite ``equivariance``: R² of each factor of the relative action from [z_1, z_2], and absolute R² from one view.

Paper §3.3 items 2–3 (after SIE): the relative transformation between the first two views of a sequence is
regressed from their frozen encoder outputs side by side, one head per factor of the world (MLP for rotation, crop
and jitter; linear for colour, blur and position, as ``world.factors`` declares). Each result carries ``r2``
(mean over output dimensions, the paper's number, also ``value``) and ``r2_global`` (SIE's pooled R²). The
absolute targets of ``world.absolute`` (e.g. the rotation quaternion) are regressed from a single view with an MLP.

>>> run(ctx)["equivariance/rotation"]["r2_global"]     # doctest: +SKIP

JSON keys: ``equivariance/{factor}`` per factor, ``absolute/{key}`` per absolute target.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .common import Context, absolute_targets, pair, regress, relative

if TYPE_CHECKING:
    from seqjepa.config import EvalConfig

NAME = "equivariance"


def views_needed(cfg: EvalConfig) -> int:
    return 2


def skip_reason(ctx: Context) -> str | None:
    return None


def run(ctx: Context, prefix: str = "") -> dict[str, dict]:
    """Fit and score the heads; the test targets come from ``ctx.world_test`` (the ood suite swaps it)."""
    tr, te, out = ctx.train, ctx.test, {}
    pair_tr, pair_te = pair(tr["z"]), pair(te["z"])
    rel_tr = relative(ctx.world_train, tr["params"][:, 0], tr["params"][:, 1])
    rel_te = relative(ctx.world_test, te["params"][:, 0], te["params"][:, 1])
    for name, factor in ctx.world_train.factors.items():
        out[f"{prefix}equivariance/{name}"] = regress(
            pair_tr, rel_tr[:, factor.slice], pair_te, rel_te[:, factor.slice], factor.head, ctx, views=2,
            inputs="[z_0, z_1]: encoder outputs of the first two views",
            target=f"world.relative(params[:, 0], params[:, 1])[..., {factor.start}:{factor.stop}] ({name})",
            metric=f"{prefix}equivariance/{name}")
    abs_tr = absolute_targets(ctx.world_train, tr["params"][:, 0])
    abs_te = absolute_targets(ctx.world_test, te["params"][:, 0])
    for key in abs_tr:
        out[f"{prefix}absolute/{key}"] = regress(
            tr["z"][:, 0], abs_tr[key], te["z"][:, 0], abs_te[key], "mlp", ctx, views=1,
            inputs="encoder output z of the first view", target=f"world.absolute(params[:, 0])[{key!r}]",
            metric=f"{prefix}absolute/{key}")
    return out
