"""What the world model predicts, as data for TensorBoard: projector points, imagination rollouts, [AGG] attention.

Everything runs on the frozen model (eval mode, no gradient) on fresh sequences of one world:

* :func:`projector_points` — the predictor's ẑ and the actual target embedding of the same views (one space), and
  z_agg (its own space), with metadata rows and view thumbnails;
* :func:`imagination_strips` — the predictor rolled out autoregressively over a sequence's real actions, each ẑ fed
  back as the next observation token, shown with its nearest real views from a candidate pool;
* :func:`attention_image` — the aggregator's [AGG] attention over the views, as thumbnails over bars.

>>> pts = projector_points(model, world, bank, m=3, n=64, gen=g, device="cpu", step=100)   # doctest: +SKIP
>>> pts["prediction_vs_target"]["mat"].shape                                                # doctest: +SKIP
torch.Size([128, 128])
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from envs.base import World
from envs.sequences import ViewBank

from .common import draw, frozen
from .plots import bar_row, grid, stack, to_pil
from .retrieval import sample_with_candidates

THUMB = 32          # projector sprite cell (32 px keeps 1000 points in a 1024-px sprite)
STRIP = 48          # rollout / attention thumbnails
HEADER = ["class", "kind", "transformation", "M", "step", "sequence"]
TRUE, SAME_OBJECT, OTHER, OBSERVED, FUTURE = (44, 160, 44), (240, 200, 0), (214, 39, 40), (31, 119, 180), \
    (190, 190, 190)


def thumbs(views: Tensor, size: int = THUMB) -> Tensor:
    """uint8 [N, 3, H, W] -> float [N, 3, size, size] in [0, 1] (projector label images)."""
    x = views.detach().cpu().float() / 255.0
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False) if x.shape[-1] != size else x


def transformation(world: World, action: Tensor) -> list[str]:
    """One short text per row of ``action`` [N, A]: each factor's values rounded, e.g. ``rotation=0.1,0.0,...``."""
    rows = []
    for a in action.detach().cpu().float():
        rows.append(" ".join(f"{name}=" + ",".join(f"{v:.2f}" for v in a[f.slice].tolist())
                             for name, f in world.factors.items()))
    return rows


def _actions(model: nn.Module, actions: Tensor) -> Tensor | None:
    return model.embed_actions(actions)


@torch.no_grad()
def projector_points(model: nn.Module, world: World, bank: ViewBank | None, *, m: int, n: int,
                     gen: torch.Generator, device: torch.device | str, step: int) -> dict[str, dict]:
    """Points for two projector tensors: ẑ beside the actual targets (2n points) and z_agg (n points).

    Each entry is ``{"mat", "metadata" (rows of HEADER), "label_img"}``. ẑ and its target both show the target
    view, so a prediction landing on the right target sits on its twin thumbnail.
    """
    batch = draw(world, bank, n, m + 1, gen).to(device)
    with frozen(model):
        z = model.encode(batch.views[:, :m])
        e = _actions(model, batch.actions)
        z_agg = model.aggregate(z, None if e is None else e[:, :m])
        z_hat = model.predict(z_agg, None if e is None else e[:, m - 1])
        target = model.encode_target(batch.views[:, m:])[:, 0]
    labels = batch.labels.cpu().tolist()
    moves = transformation(world, batch.actions[:, m - 1])
    rows = lambda kind: [[str(c), kind, t, str(m), str(step), str(i)]  # noqa: E731
                         for i, (c, t) in enumerate(zip(labels, moves))]
    target_img = thumbs(batch.views[:, m])
    return {
        "prediction_vs_target": {"mat": torch.cat([z_hat, target]).float().cpu(),
                                 "metadata": rows("predicted") + rows("actual"),
                                 "label_img": torch.cat([target_img, target_img])},
        "z_agg": {"mat": z_agg.float().cpu(), "metadata": rows("z_agg"),
                  "label_img": thumbs(batch.views[:, m - 1])},
    }


@torch.no_grad()
def imagine(model: nn.Module, z: Tensor, e: Tensor | None, k: int) -> Tensor:
    """Roll the predictor forward ``k`` steps from observed ``z`` [B, M, D]: ẑ [B, k, D].

    Step j aggregates the M observed tokens and the j earlier predictions (each prediction becomes the next
    observation token) with actions e[:, :M+j], and predicts with e[:, M+j-1], the action into the next view.
    """
    tokens = list(z.unbind(1))
    preds = []
    for _ in range(k):
        L = len(tokens)
        z_agg = model.aggregate(torch.stack(tokens, 1), None if e is None else e[:, :L])
        z_hat = model.predict(z_agg, None if e is None else e[:, L - 1])
        preds.append(z_hat)
        tokens.append(z_hat.to(z.dtype))
    return torch.stack(preds, 1)


@torch.no_grad()
def imagination_strips(model: nn.Module, world: World, bank: ViewBank | None, *, m: int, k: int, n: int,
                       gen: torch.Generator, device: torch.device | str, neighbours: int = 3
                       ) -> list[Image.Image]:
    """One image per sequence: its real views (observed: blue, future: grey) over the nearest real views of each
    imagined step (green: the true view, yellow: another view of the same object, red: another object).

    The candidate pool is every candidate view of all ``n`` sequences (the object's bank views, or its sequence
    plus fresh views live), embedded by the target encoder.
    """
    batch, cands, index = sample_with_candidates(world, bank, n, m + k, gen)
    batch, cands = batch.to(device), cands.to(device)
    C = cands.shape[1]
    with frozen(model):
        z = model.encode(batch.views[:, :m])
        preds = imagine(model, z, _actions(model, batch.actions), k)          # [n, k, D]
        pool = model.encode_target(cands).flatten(0, 1)                          # [n*C, D]
    sims = torch.einsum("nkd,pd->nkp", F.normalize(preds.float(), dim=-1), F.normalize(pool.float(), dim=-1))
    top = sims.topk(min(neighbours, pool.shape[0]), dim=-1).indices.cpu()     # [n, k, nn]
    flat_views = cands.flatten(0, 1).cpu()
    images = []
    for i in range(n):
        truth = [to_pil(v, STRIP) for v in batch.views[i].cpu()]
        cells, borders = [truth], [[OBSERVED] * m + [FUTURE] * k]
        for j in range(top.shape[-1]):
            row, colours = [None] * m, [None] * m
            for s in range(k):
                p = int(top[i, s, j])
                row.append(to_pil(flat_views[p], STRIP))
                true_p = i * C + int(index[i, m + s])
                colours.append(TRUE if p == true_p else SAME_OBJECT if p // C == i else OTHER)
            cells.append(row)
            borders.append(colours)
        labels = ["views"] + [f"nearest {j + 1}" for j in range(top.shape[-1])]
        images.append(grid(cells, size=STRIP, borders=borders, labels=labels))
    return images


def supports_attention(model: nn.Module) -> bool:
    return model.predicts and "return_attention" in inspect.signature(model.aggregate).parameters


@torch.no_grad()
def attention_image(model: nn.Module, world: World, bank: ViewBank | None, *, m: int, n: int,
                    gen: torch.Generator, device: torch.device | str) -> Image.Image | None:
    """Rows of ``m`` view thumbnails, each over a bar of the [AGG] token's last-layer attention share on it."""
    if not supports_attention(model):
        return None
    batch = draw(world, bank, n, m, gen).to(device)
    with frozen(model):
        z = model.encode(batch.views)
        e = _actions(model, batch.actions)
        _, attn = model.aggregate(z, e, return_attention=True)                  # [n, m]
    rows = [bar_row([to_pil(v, STRIP) for v in batch.views[i].cpu()], attn[i].cpu().tolist(), size=STRIP)
            for i in range(n)]
    return stack(rows)
