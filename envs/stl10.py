"""Readers for the STL-10 binary release and the paper's released saliency maps (no torchvision).

The binary release (``stl10_binary/``) holds ``{train,test,unlabeled}_X.bin``: uint8 images of 3 x 96 x 96 bytes
each, every channel stored **column-major** (the Matlab layout), so a plain reshape gives (channel, col, row) and
must be transposed; ``{train,test}_y.bin``: one uint8 label 1..10 per image; ``class_names.txt``: one name a line.
The saliency maps of the paper (DeepGaze IIE, HF ``Hafez/salmap-stl10``) are ``saliency_{split}.npy`` arrays of
shape (N, 1, 96, 96), float32 probability maps, memory-mapped here so the 3.7 GB unlabeled file is not read whole.

>>> images, labels = load_stl10("~/data/stl10_binary", "train")          # doctest: +SKIP
>>> images.shape, images.dtype, labels.min().item(), labels.max().item()   # doctest: +SKIP
(torch.Size([5000, 3, 96, 96]), torch.uint8, 0, 9)
>>> maps = load_saliency_maps("~/data/salmap-stl10/train/saliency_train.npy", expected=5000)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from seqjepa.options import ConfigError, DataError

__all__ = ["SIDE", "IMAGE_BYTES", "read_images", "read_labels", "load_stl10", "class_names", "load_saliency_maps",
           "SPLITS", "STL10_MEAN", "STL10_STD"]

SIDE = 96
IMAGE_BYTES = 3 * SIDE * SIDE  # 27648
SPLITS = ("train", "test", "unlabeled")
# Per-channel pixel statistics of the paper and the official code (datasets.py, STL10_SalMap).
STL10_MEAN, STL10_STD = (0.4467, 0.4398, 0.4066), (0.2241, 0.2215, 0.2239)


RELEASE = ("the STL-10 binary release (train_X.bin, train_y.bin, test_X.bin, test_y.bin, unlabeled_X.bin, "
           "class_names.txt)")
SALIENCY = "a .npy of saliency maps, shape (N, 1, H, W) float32 (e.g. saliency_train.npy)"


def _path(path: str | os.PathLike, what: str = "STL-10", expected: str = RELEASE) -> Path:
    """``path`` expanded, after checking it is a file (ValueError naming it, ``what`` it is for and ``expected``)."""
    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        problem = "is a folder, not a file" if p.is_dir() else "not found"
        raise DataError(f"{what}: {p} {problem}; expected {expected}")
    return p


def _root(root: str | os.PathLike) -> Path:
    """The STL-10 folder, after checking it is one (a file or a missing path is named as such)."""
    p = Path(os.path.expanduser(str(root)))
    if not p.is_dir():
        problem = "is a file, not a folder" if p.exists() else "not found"
        raise DataError(f"STL-10: {p} {problem}; expected the stl10_binary folder of {RELEASE}")
    return p


def read_images(path: str | os.PathLike, limit: int | None = None) -> Tensor:
    """Images of an STL-10 ``*_X.bin`` file as uint8 [N, 3, 96, 96] (row-major, channels first).

    ``limit`` reads only the first images (the file is memory-mapped, so the rest is never touched).
    """
    p = _path(path)
    size = p.stat().st_size
    if size == 0 or size % IMAGE_BYTES:
        raise DataError(f"STL-10: {p} has {size} bytes, not a positive multiple of {IMAGE_BYTES} "
                         f"(3 x {SIDE} x {SIDE} uint8 images); the file is truncated or not an STL-10 *_X.bin")
    n = size // IMAGE_BYTES
    n = n if limit is None else min(n, limit)
    raw = np.memmap(p, dtype=np.uint8, mode="r", shape=(n, 3, SIDE, SIDE))
    # Column-major channels: the byte order inside a channel is (col, row); swap to (row, col).
    return torch.from_numpy(np.ascontiguousarray(raw.transpose(0, 1, 3, 2)))


def read_labels(path: str | os.PathLike, limit: int | None = None) -> Tensor:
    """Labels of an STL-10 ``*_y.bin`` file, 1..10 on disk, as long [N] in 0..9."""
    p = _path(path)
    raw = np.fromfile(p, dtype=np.uint8)
    if len(raw) == 0:
        raise DataError(f"STL-10: {p} is empty; expected one uint8 label (1..10) per image")
    bad = (raw < 1) | (raw > 10)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"STL-10: {p} holds label {int(raw[i])} at index {i}; expected labels 1..10 "
                         f"(is this an *_X.bin image file?)")
    raw = raw if limit is None else raw[:limit]
    return torch.from_numpy(raw.astype(np.int64) - 1)


def load_stl10(root: str | os.PathLike, split: str, limit: int | None = None) -> tuple[Tensor, Tensor]:
    """(images uint8 [N, 3, 96, 96], labels long [N]) of ``split``; labels are -1 for ``unlabeled``."""
    if split not in SPLITS:
        raise ConfigError(f"STL-10 split: got {split!r}; allowed: {', '.join(map(repr, SPLITS))}")
    root = _root(root)
    images = read_images(root / f"{split}_X.bin", limit)
    if split == "unlabeled":
        return images, torch.full((len(images),), -1, dtype=torch.long)
    labels = read_labels(root / f"{split}_y.bin", limit)
    if len(labels) != len(images):
        raise DataError(f"STL-10: {root / f'{split}_y.bin'} holds {len(labels)} labels but "
                         f"{root / f'{split}_X.bin'} holds {len(images)} images; expected one label per image")
    return images, labels


def class_names(root: str | os.PathLike) -> list[str]:
    """The ten class names from ``class_names.txt``, in label order."""
    p = _path(_root(root) / "class_names.txt")
    names = [line.strip() for line in p.read_text().splitlines() if line.strip()]
    if len(names) != 10:
        raise DataError(f"STL-10: {p} lists {len(names)} names; expected 10, one a line")
    return names


def load_saliency_maps(path: str | os.PathLike, expected: int | None = None, limit: int | None = None) -> Tensor:
    """Saliency maps from a ``.npy`` of shape (N, 1, H, W) or (N, H, W) as float32 [N, H, W], each summing to 1.

    ``expected`` is the number of images the maps belong to (an error names both counts if they differ);
    ``limit`` keeps the first maps only (read lazily through a memory map).
    """
    p = _path(path, "saliency maps", SALIENCY)
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise DataError(f"saliency maps: {p} is not a plain .npy array ({e})") from None
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3 or arr.shape[1] < 2 or arr.shape[2] < 2 or not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"saliency maps: {p} has shape {arr.shape} and dtype {arr.dtype}; expected floating "
                         f"(N, 1, H, W) or (N, H, W)")
    if expected is not None and len(arr) != expected:
        raise DataError(f"saliency maps: {p} holds {len(arr)} maps for {expected} images; expected one per image "
                         f"(is it the file of another split?)")
    if limit is not None:
        arr = arr[:limit]
    maps = torch.from_numpy(np.array(arr, dtype=np.float32))
    if not torch.isfinite(maps).all() or (maps < 0).any():
        raise DataError(f"saliency maps: {p} holds negative or non-finite values; expected probability maps")
    total = maps.flatten(1).sum(1)
    if (total <= 0).any():
        raise DataError(f"saliency maps: {p} map {int((total <= 0).nonzero()[0])} is all zero")
    return maps / total[:, None, None]
