"""Checkpoints: written atomically, read with ``weights_only=True``.

A checkpoint holds everything needed to continue a run exactly where it stopped: model (with the EMA target),
optimizer, online probe heads and their optimizer, the step, the resolved config and every RNG (torch's global
generator, CUDA's, and the world's sequence generator). Nothing in it is pickled code, so it loads with
``weights_only=True``; a file that needs more than that is refused.

>>> save({"step": 3}, "runs/demo/latest.pt")     # doctest: +SKIP
>>> load("runs/demo/latest.pt")["step"]          # doctest: +SKIP
3
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or carries pickled code."""


def save(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsync, then rename.

    A process killed at any moment leaves either the previous file or the new one under ``path``, never a
    partial write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; raise CheckpointError with the reason otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"checkpoint {path}: refused, it carries pickled Python objects or code that weights_only=True "
            f"does not allow ({str(e).splitlines()[0]}). Only load checkpoints you trust, and re-save them "
            f"as plain tensors.") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"checkpoint {path}: unreadable ({str(e).splitlines()[0]})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"checkpoint {path}: not a seqjepa checkpoint (no 'model' entry)")
    return state


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
