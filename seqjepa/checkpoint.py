"""Checkpoints: written atomically, read with ``weights_only=True``, checked finite.

A checkpoint holds everything needed to continue a run exactly where it stopped: model (with the EMA target),
optimizer, online probe heads and their optimizer, the step, the resolved config and every RNG (torch's global
generator, CUDA's, and the world's sequence generator). Nothing in it is pickled code, so it loads with
``weights_only=True``; a file that needs more than that is refused, and a damaged one is reported by name.

Every file goes through :func:`seqjepa.files.atomic_write` (temporary file, fsync, rename): a process killed at any
moment leaves the previous checkpoint or the new one, never a partial one.

>>> save({"step": 3}, "runs/demo/latest.pt")     # doctest: +SKIP
>>> load("runs/demo/latest.pt")["step"]          # doctest: +SKIP
3
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from . import files


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, carries pickled code, or does not fit the run that reads it."""


def first_line(e: BaseException) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def save(state: dict[str, Any], path: str | os.PathLike, *, previous: str | os.PathLike | None = None) -> None:
    """Write ``state`` to ``path`` atomically; with ``previous``, the file it replaces is kept under that name.

    At every moment ``path`` holds a complete checkpoint (the old one until the new one is in place), and
    ``previous`` either its predecessor or the one before.
    """
    path = Path(path)
    with files.atomic_write(path, "wb") as fh:
        torch.save(state, fh)
        if previous is not None and path.is_file():
            files.keep(path, Path(previous))


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; raise CheckpointError with the reason otherwise."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: not a file; expected a checkpoint such as RUN/latest.pt")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path}: empty file; expected a checkpoint written by run.py train")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        detail = next((line.strip() for line in text.splitlines()
                       if line.strip().startswith(("Trying to load", "Unsupported"))), first_line(e))
        if "GLOBAL" in text:  # the file names Python objects weights_only=True will not build
            raise CheckpointError(
                f"checkpoint {path}: refused, it carries pickled Python objects or code that weights_only=True "
                f"does not allow ({detail}). Only load checkpoints you trust, and re-save them "
                f"as plain tensors.") from None
        raise CheckpointError(f"checkpoint {path}: unreadable, not a PyTorch checkpoint ({detail})") from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, IndexError, TypeError, AttributeError) as e:
        # torch.load's reactions to a damaged or foreign file; none of them runs anything from it
        raise CheckpointError(f"checkpoint {path}: unreadable, damaged or not a PyTorch checkpoint "
                              f"({type(e).__name__}: {first_line(e)[:200]})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"checkpoint {path}: not a seqjepa checkpoint (no 'model' entry)")
    return state


def first_non_finite(obj: Any, prefix: str = "") -> str | None:
    """The key path of the first floating-point tensor in ``obj`` (nested dicts, lists) holding NaN or inf."""
    named = list(_float_tensors(obj, prefix))
    if not named:
        return None
    finite = torch.stack([torch.isfinite(t).all() for _, t in named])
    if bool(finite.all()):  # one host sync for the whole state
        return None
    return named[int((~finite).nonzero()[0])][0]


def _float_tensors(obj: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() or obj.is_complex():
            yield prefix, obj.detach()
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _float_tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _float_tensors(v, f"{prefix}[{i}]")


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
