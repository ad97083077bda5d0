"""Suite ``path_integration``: regress the action x_1 → x_{M+1} from [z_agg(M views), a_M], for M = 1…7; and, to
measure what training taught, from the views alone.

Paper §4.4 / App. B.9 (Fig. 6). The target is the cumulative transformation ``world.relative(params[:, 0],
params[:, M])``: the model saw a_1…a_{M-1} inside z_agg and gets a_M beside it, so it has to integrate the path.
Three conditions, all at inference on the same frozen model (the paper's ablations), under the paper's protocol:

* ``full``       — z_agg(z_1…z_M, e_1…e_{M-1}) ⊕ e_M
* ``no_actions`` — every action embedding zeroed: z_agg(z, 0) ⊕ 0 ("Vision / No Act. Cond.")
* ``no_vision``  — every encoder output zeroed before aggregation: z_agg(0, e) ⊕ e_M ("No Vision / Act. Cond.")

``a_M`` enters as the model's own action embedding e(a_M) (the paper leaves raw-vs-embedded open; zeroing the
embedding is then exactly the "action embeddings zeroed" ablation). A model without an action pathway
(``act_cond=none``) gets the raw a_M instead; its ``no_actions`` condition zeroes that raw action. The head is the
factor's own (``world.factors``: MLP for rotations, linear for saccade positions), one per factor.
At M = 1 the target equals a_1, so ``full`` and ``no_vision`` score R² ≈ 1 by construction (the paper notes this).

**Why a fourth condition.** The paper's numbers do not tell a trained model from a random one where the actions
compose linearly: a saccade's cumulative move is the sum a_1 + … + a_M, and even at random initialisation z_agg
holds the (attention-weighted) mean of the action embeddings e_1…e_{M-1} linearly, so a linear head on
[z_agg, e_M] reads the sum. Measured on the saccade world (cpu preset, 1500 steps, ``docs/worlds.md``): ``full``
at M = 7 is 0.98 at random init and 0.80 trained. ``no_actions`` is ≈ 0 for any model, since a_M, the move into
the unseen view, is given nowhere. What training adds is visual: an encoder that carries position / pose, so the
move can be read from what was seen. Hence

* ``views_only`` — no action anywhere; the endpoint x_{M+1} is seen instead:
  z_agg(z_1…z_{M+1}, every action slot zero) ⊕ z_1 ⊕ z_{M+1}.

Without actions the aggregate is a function of the *set* of views (no positional embedding, and the zero action
slot that marks the last token is then on every token), so it cannot say which view came first and a signed move
would be unreadable from it (its R² would be ≈ 0 for any model, like ``no_actions``). The two endpoints' encoder
outputs are therefore put beside it; z_agg adds the views in between. No action reaches the head, so random
initialisation scores only what random convolutional features show of the move (the saccade world's relative
position from [z_1, z_2]: ≈ 0.2–0.5 at random init), and the difference from random init is what training taught
the encoder and aggregator about position / pose. Where the probe sequences are distinct random views of an
episode (view banks, the default), x_1 → x_{M+1} is distributed like x_1 → x_2 and ``views_only`` is close to the
equivariance R² at every M; on paths from a policy (``world.source=live``), the views in between can link two
endpoints that do not overlap.

JSON keys: ``path_integration/{factor}/{condition}/M={m}`` for condition in full, no_actions, no_vision (the
paper's protocol, unchanged) and views_only (the learned part, added beside them). Each carries its protocol
(``condition``, ``action_input``, the input in words).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .common import Context, actions_of, frozen, regress, relative

if TYPE_CHECKING:
    from seqjepa.config import EvalConfig

NAME = "path_integration"
PATH_M = tuple(range(1, 8))  # the paper's Fig. 6 x-axis
CONDITIONS = {
    "full": "vision + actions: z_agg(z_1..z_M, e_1..e_{M-1}) ⊕ e_M",
    "no_actions": "action embeddings zeroed for every view and for a_M: z_agg(z, 0) ⊕ 0",
    "no_vision": "encoder outputs zeroed before aggregation: z_agg(0, e) ⊕ e_M",
    "views_only": "no action anywhere, the endpoint seen: z_agg(z_1..z_{M+1}, zero action slots) ⊕ z_1 ⊕ z_{M+1}",
}
PAPER_CONDITIONS = ("full", "no_actions", "no_vision")  # Fig. 6's protocol; views_only is this project's addition
CHUNK = 1024  # sequences per aggregator call


def views_needed(cfg: EvalConfig) -> int:
    return max(PATH_M) + 1


def skip_reason(ctx: Context) -> str | None:
    if not ctx.model.predicts:
        return "the model has no aggregator/action pathway (encoder-only method)"
    return None


@torch.no_grad()
def inputs(model: nn.Module, z: Tensor, actions: Tensor, m: int, condition: str, device: torch.device | str
           ) -> Tensor:
    """The probe input of ``condition`` for the first ``m`` views, on the CPU: [N, d_model + action width], or for
    ``views_only`` [N, d_model + 2·D] from the first ``m + 1`` views.

    ``z`` [N, ≥m, D] (≥ m + 1 for ``views_only``) are frozen encoder outputs, ``actions`` [N, ≥m, A] the actions
    between consecutive views (``views_only`` reads none of them).
    """
    if condition not in CONDITIONS:
        raise ValueError(f"condition: got {condition!r}; allowed: {', '.join(CONDITIONS)}")
    out = []
    with frozen(model):
        for s in range(0, z.shape[0], CHUNK):
            if condition == "views_only":
                if z.shape[1] < m + 1:
                    raise ValueError(f"views_only needs m + 1 = {m + 1} views; z has {z.shape[1]}")
                zc = z[s:s + CHUNK, :m + 1].to(device)
                z_agg = model.aggregate(zc, None)  # every action slot zero: no action reaches the head
                out.append(torch.cat([z_agg.float(), zc[:, 0].float(), zc[:, m].float()], dim=1).cpu())
                continue
            zc = z[s:s + CHUNK, :m].to(device)
            ac = actions[s:s + CHUNK, :m].to(device)
            e = model.embed_actions(ac)
            a_m = e[:, m - 1] if e is not None else ac[:, m - 1].float()
            if condition == "no_vision":
                zc = torch.zeros_like(zc)
            if condition == "no_actions":
                e, a_m = (None if e is None else torch.zeros_like(e)), torch.zeros_like(a_m)
            z_agg = model.aggregate(zc, e)
            out.append(torch.cat([z_agg.float(), a_m.float()], dim=1).cpu())
    return torch.cat(out)


def run(ctx: Context) -> dict[str, dict]:
    """Fit one head per (factor, condition, M) on the train split and score it on the test split."""
    tr, te, out = ctx.train, ctx.test, {}
    acts_tr = actions_of(ctx.world_train, tr["params"])
    acts_te = actions_of(ctx.world_test, te["params"])
    steps = min(tr["z"].shape[1], te["z"].shape[1])
    action_input = "e(a_M), the model's action embedding" if ctx.model.action_embed is not None else \
        "raw a_M (the model has no action embedding)"
    for condition, text in CONDITIONS.items():
        given = "none (no action reaches the head)" if condition == "views_only" else action_input
        for m in (m for m in PATH_M if m < steps):
            x_tr = inputs(ctx.model, tr["z"], acts_tr, m, condition, ctx.device)
            x_te = inputs(ctx.model, te["z"], acts_te, m, condition, ctx.device)
            y_tr = relative(ctx.world_train, tr["params"][:, 0], tr["params"][:, m])
            y_te = relative(ctx.world_test, te["params"][:, 0], te["params"][:, m])
            for name, factor in ctx.world_train.factors.items():
                key = f"path_integration/{name}/{condition}/M={m}"
                res = regress(x_tr, y_tr[:, factor.slice], x_te, y_te[:, factor.slice], factor.head, ctx,
                              views=m + 1 if condition == "views_only" else m,
                              inputs=(f"[z_agg(first {m + 1} views, no action), z_1, z_{m + 1}] — {text}"
                                      if condition == "views_only" else f"[z_agg(first {m} views), a_M] — {text}"),
                              target=f"world.relative(params[:, 0], params[:, {m}])"
                                     f"[..., {factor.start}:{factor.stop}] ({name}): x_1 -> x_{m + 1}",
                              metric=key)
                res["protocol"].update(condition=condition, action_input=given, M=m,
                                       protocol="paper Fig. 6" if condition in PAPER_CONDITIONS else
                                       "this project's: the learned part (see eval/path_integration.py)",
                                       ablation_at="inference only (the model is not retrained)")
                out[key] = res
    return out
