"""Frozen features for the probes: encoder outputs of every view and the aggregate for several M.

The model runs in eval mode, so BatchNorm uses (and never updates) its running statistics and dropout is
off; the caller's train/eval flags are restored afterwards, module by module.

>>> feats = collect(model, [batch], m_val=[1, 3], device="cpu")             # doctest: +SKIP
>>> feats["z"].shape, feats["z_agg"][3].shape                              # doctest: +SKIP
(torch.Size([B, T, D]), torch.Size([B, d_model]))
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from envs.sequences import Batch
from seqjepa.model import evaluating


def batch_features(model: nn.Module, batch: Batch, m_val: list[int]) -> dict:
    """Features of one batch already on the model's device (no grad, mode handled by the caller)."""
    steps = batch.views.shape[1]
    if max(m_val) > steps:
        raise ValueError(f"m_val: got M={max(m_val)}; the batch has only {steps} views per sequence")
    z = model.encode(batch.views)
    if not model.predicts:  # encoder-only methods (the baselines) have no z_agg
        return {"z": z, "z_agg": {}}
    e = model.embed_actions(batch.actions)  # None for the no-action ablation: it aggregates the views alone
    z_agg = {}
    for m in m_val:
        # aggregate() reads the first M-1 embeddings and zeroes the last token's slot, so the M-th action
        # (into the unseen view) is passed only to keep shapes aligned with the M observations.
        e_m = None if e is None else e[:, :m]
        z_agg[m] = model.aggregate(z[:, :m], e_m)
    return {"z": z, "z_agg": z_agg}


def _to_cpu(t: Tensor) -> Tensor:
    return t.detach().float().cpu()


@torch.no_grad()
def collect(model: nn.Module, batches: list[Batch], *, m_val: list[int], device: torch.device | str,
            autocast: bool = False) -> dict:
    """Encode ``batches`` with the frozen ``model`` and return CPU float features.

    Returns ``{"z": [N, T, D], "z_agg": {M: [N, d_model]}, "labels": long [N], "params": [N, T, P],
    "episodes": long [N]}`` with N
    the total number of sequences. ``z_agg[M]`` aggregates the first M views and ``actions[:, :M]``.
    ``autocast`` runs the model under bf16 autocast (features are still returned as float32).

    >>> feats = collect(model, batches, m_val=[1, 2, 3], device="cuda")    # doctest: +SKIP
    """
    if not batches:
        raise ValueError("batches: got an empty list; expected at least one Batch")
    device = torch.device(device)
    zs, aggs, labels, params, episodes = [], {m: [] for m in m_val}, [], [], []
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast)
    with evaluating(model), amp:
        for batch in batches:
            out = batch_features(model, batch.to(device, non_blocking=True), m_val)
            zs.append(_to_cpu(out["z"]))
            for m, z_agg in out["z_agg"].items():
                aggs[m].append(_to_cpu(z_agg))
            labels.append(batch.labels.detach().long().cpu())
            params.append(_to_cpu(batch.params))
            episodes.append(batch.episodes.detach().long().cpu())
    return {"z": torch.cat(zs), "z_agg": {m: torch.cat(v) for m, v in aggs.items() if v},
            "labels": torch.cat(labels), "params": torch.cat(params), "episodes": torch.cat(episodes)}
