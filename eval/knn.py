"""Suite ``knn``: k-nearest-neighbour top-1 (k = 20, cosine) on z_agg for every M_val and on the encoder output.

No training: the train split's features are the memory, each test feature votes with its k most similar train
features (cosine), each neighbour weighted by exp(similarity / T), T = 0.07 (InstDisc / DINO's weighted k-NN).
Not in the paper (it reports no k-NN); a training-free check of the same representations as the linear probe.

>>> x = torch.eye(3).repeat(4, 1); y = torch.arange(3).repeat(4)
>>> knn_top1(x, y, x, y, num_classes=3, k=2)
100.0

JSON keys: ``knn/z_agg/M={m}`` for m in cfg.m_val, ``knn/encoder``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from .common import Context

if TYPE_CHECKING:
    from seqjepa.config import EvalConfig

NAME = "knn"
K = 20
TEMPERATURE = 0.07
CHUNK = 1024  # test queries per similarity matrix


def views_needed(cfg: EvalConfig) -> int:
    return max(cfg.m_val) + 1


def skip_reason(ctx: Context) -> str | None:
    return None


@torch.no_grad()
def knn_top1(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, *, num_classes: int, k: int = K,
             temperature: float = TEMPERATURE) -> float:
    """Weighted k-NN top-1 (%) of ``x_test`` against the memory ``x_train`` (cosine similarity)."""
    k = min(k, x_train.shape[0])
    mem = F.normalize(x_train.float(), dim=1)
    labels = y_train.long().to(mem.device)
    correct = 0
    for s in range(0, x_test.shape[0], CHUNK):
        q = F.normalize(x_test[s:s + CHUNK].float().to(mem.device), dim=1)
        sim, idx = (q @ mem.T).topk(k, dim=1)
        votes = torch.zeros(q.shape[0], num_classes, device=mem.device)
        votes.scatter_add_(1, labels[idx], (sim / temperature).exp())
        correct += int((votes.argmax(1) == y_test[s:s + CHUNK].to(mem.device)).sum())
    return 100.0 * correct / x_test.shape[0]


def run(ctx: Context) -> dict[str, dict]:
    tr, te, out = ctx.train, ctx.test, {}
    dev = ctx.device

    def entry(x_tr: Tensor, x_te: Tensor, views: int, inputs: str) -> dict:
        acc = knn_top1(x_tr.to(dev), tr["labels"], x_te.to(dev), te["labels"],
                       num_classes=ctx.world_train.num_classes)
        return {"value": acc, "protocol": {
            "probe": f"weighted k-NN (k={K}, cosine, weights exp(sim/{TEMPERATURE}))",
            "metric": "top-1 accuracy (%) on the test split, memory = train split", "unit": "top-1 %",
            "num_classes": int(ctx.world_train.num_classes), "chance": 100.0 / ctx.world_train.num_classes,
            "input": inputs, "input_dim": int(x_tr.shape[1]), "k": K, "temperature": TEMPERATURE,
            "epochs": 0, "lr": None, "batch_size": CHUNK, "views": views, **ctx.base}}

    for m in sorted(tr["z_agg"]):
        out[f"knn/z_agg/M={m}"] = entry(tr["z_agg"][m], te["z_agg"][m], m,
                                        f"z_agg from the first {m} views and actions[:, :{m}]")
    out["knn/encoder"] = entry(tr["z"][:, 0], te["z"][:, 0], 1, "encoder output z of the first view")
    return out
