"""Find host synchronisations on the CPU, where no GPU is at hand to show them.

On a GPU a host sync is any operation whose result the Python side must wait for: reading a value (``item``,
``tolist``, ``bool(t)`` in an ``if``), an output whose size depends on the data (``nonzero``, boolean-mask
indexing, ``unique``), or an explicit copy to the host (``cpu``, ``numpy``; ``.to(device)`` is not counted, since the same line moves
data *to* the device when the device is a GPU). :class:`HostSyncs` is a ``TorchFunctionMode`` that records every such
call made through torch's Python API, whatever the device, so a test on the CPU can show a loop would not sync on a
GPU: run it N and 2N times and check the count does not grow.

>>> with HostSyncs() as s:
...     _ = torch.ones(3).sum().item()
>>> s.calls
['item']
"""

from __future__ import annotations

import traceback
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

# Reading values or data-dependent output sizes: each waits for the device on CUDA.
SYNCING = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "argwhere", "masked_select",
           "unique", "unique_consecutive", "cpu", "numpy", "equal", "allclose", "bincount", "repeat_interleave"}


def _bool_index(args) -> bool:
    idx = args[1] if len(args) > 1 else None
    items = idx if isinstance(idx, tuple) else (idx,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


ROOT = str(Path(__file__).resolve().parents[1])


def _caller() -> str:
    """``file:line`` of the innermost frame in this repository outside this file (where the sync is written)."""
    for frame in reversed(traceback.extract_stack()[:-3]):
        if frame.filename.startswith(ROOT) and frame.filename != __file__:
            return f"{frame.filename[len(ROOT) + 1:]}:{frame.lineno}"
    return "?"


class HostSyncs(TorchFunctionMode):
    """Records every syncing torch call made inside the ``with`` block: ``calls`` (names) and ``where``."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []
        self.where: list[str] = []

    def _record(self, name: str) -> None:
        # torch.optim reads its step counters with item(); they live on the host by design (non-capturable
        # optimizers), so on a GPU that read does not wait for the device.
        if "/torch/optim/" in traceback.extract_stack(limit=4)[0].filename:
            return
        self.calls.append(name)
        self.where.append(f"{name} at {_caller()}")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name in SYNCING and not (name == "repeat_interleave" and "output_size" in (kwargs or {})):
            self._record(name)
        elif name in ("__getitem__", "__setitem__", "index_put_", "index_put") and _bool_index(args):
            self._record(f"{name}[bool mask]")
        elif name == "where" and len(args) == 1 and not kwargs:
            self._record("where(cond)")
        return func(*args, **(kwargs or {}))
