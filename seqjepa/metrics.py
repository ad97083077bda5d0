"""R², the metric of the paper's equivariance probes, shared by the online probe of training and by eval.

>>> y = torch.tensor([[1., 2.], [3., 5.], [5., 4.]])
>>> round(float(r2_score(y, y)), 3), abs(round(float(r2_score(y, y.mean(0).expand_as(y))), 3))
(1.0, 0.0)
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor


def r2_score(y_true: Tensor, y_pred: Tensor, multioutput: Literal["uniform", "global", "raw"] = "uniform"
             ) -> Tensor:
    """Coefficient of determination, in torch.

    * ``"uniform"``: the mean over output dimensions of each dimension's R² (sklearn's default
      ``multioutput="uniform_average"``, what the seq-JEPA code reports).
    * ``"global"``: ``1 - SSE / SST`` over all entries flattened, with SST about the single grand mean
      (SIE's ``eval_angle_prediction.py``).
    * ``"raw"``: the per-dimension values.

    Like sklearn (``force_finite=True``), a constant target scores 1 if predicted exactly, else 0.

    >>> y = torch.tensor([[1., 2.], [3., 5.], [5., 4.]])
    >>> round(float(r2_score(y, y)), 3)
    1.0
    """
    y_true, y_pred = as_2d(y_true).double(), as_2d(y_pred).double()
    if multioutput == "global":
        sse = ((y_true - y_pred) ** 2).sum()
        sst = ((y_true - y_true.mean()) ** 2).sum()
        return _finite_r2(sse, sst).float()
    sse = ((y_true - y_pred) ** 2).sum(0)
    sst = ((y_true - y_true.mean(0)) ** 2).sum(0)
    per_dim = _finite_r2(sse, sst)
    return (per_dim if multioutput == "raw" else per_dim.mean()).float()


def _finite_r2(sse: Tensor, sst: Tensor) -> Tensor:
    # sklearn's force_finite rule: 0/0 -> 1 (perfect), x/0 -> 0 (no better than the mean).
    safe = torch.where(sst > 0, sst, torch.ones_like(sst))
    r2 = 1 - sse / safe
    return torch.where(sst > 0, r2, torch.where(sse == 0, torch.ones_like(r2), torch.zeros_like(r2)))



def as_2d(y: Tensor) -> Tensor:
    """A target [N] as [N, 1]; [N, D] unchanged."""
    return y.unsqueeze(1) if y.ndim == 1 else y
