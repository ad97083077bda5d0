"""Image sources for the augmentation world: procedural classes, sklearn digits, CIFAR-100, Tiny ImageNet, folders.

Every source returns an :class:`ImageSet` of square uint8 images at a requested side, with a fingerprint of the
files it read. Nothing is cached: each call reads (or draws) the images again, so a changed file is never shadowed
by a stale copy. A missing, misplaced or corrupt file or folder raises ValueError naming the path, what is wrong and
what was expected. :func:`load_folder_split` is the split rule of every ``source=folder`` world.

>>> s = procedural_images(num_classes=3, per_class=2, size=16, seed=0, split="train")
>>> s.images.shape, s.images.dtype, s.labels.tolist(), len(s.classes)
(torch.Size([6, 3, 16, 16]), torch.uint8, [0, 0, 1, 1, 2, 2], 3)
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from seqjepa.options import ConfigError, DataError

from .base import fingerprint_files

__all__ = ["ImageSet", "procedural_images", "digits_images", "cifar100_images", "tiny_imagenet_images",
           "load_image_folder", "load_folder_split", "SPLIT_FOLDERS", "HOLD_OUT_EVERY", "PROCEDURAL_MAX_CLASSES",
           "IMAGE_SUFFIXES", "CIFAR100_MEAN", "CIFAR100_STD", "TINY_IMAGENET_MEAN", "TINY_IMAGENET_STD"]

Split = Literal["train", "test"]
# Per-channel pixel statistics the official code normalises these datasets with (datasets.py, CIFAR100_aug and
# TinyImageNet_aug), the datasets' own. The paper prints CIFAR-10's for both ([0.4914, 0.4822, 0.4465] /
# [0.247, 0.243, 0.261]); the official code is what the published numbers were trained with.
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
TINY_IMAGENET_MEAN, TINY_IMAGENET_STD = (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")  # matched case-insensitively, so .JPEG is included
CIFAR100_LAYOUT = "the cifar-100-python folder holding the files train, test and meta"
TINY_IMAGENET_LAYOUT = ("the tiny-imagenet-200 folder holding wnids.txt, train/<wnid>/images/ and val/images/ with "
                        "val/val_annotations.txt")
FOLDER_LAYOUT = f"root/<class>/<image> ({', '.join(IMAGE_SUFFIXES)}), or root/train/<class>/<image> and root/test/..."


@dataclasses.dataclass
class ImageSet:
    """Images with their classes: ``images`` uint8 [N, 3, S, S], ``labels`` long [N], ``classes`` names, and the
    ``fingerprint`` of the files read (envs.base.fingerprint_files, taken before the images are decoded, so a file
    changed meanwhile gives a fingerprint that no longer matches, never old images under a new one); None for
    generated images. A view bank's key includes it."""
    images: Tensor
    labels: Tensor
    classes: list[str]
    fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self.labels)


def _resize(images: Tensor, size: int | None) -> Tensor:
    """uint8 [N, 3, h, w] -> uint8 [N, 3, size, size]; antialiased when shrinking so small views do not alias."""
    if size is None or images.shape[-2:] == (size, size):
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return out.round().clamp(0, 255).to(torch.uint8)


# -- procedural classes ------------------------------------------------------------------------------------------

SHAPES = ("disk", "square", "triangle", "ring", "cross", "diamond", "bar", "star")
FILLS = ("solid", "stripes", "checker", "gradient")
LAYOUTS = (1, 2, 4)  # objects per image; with the shape and the fill this is what identifies a class
PROCEDURAL_MAX_CLASSES = len(SHAPES) * len(FILLS) * len(LAYOUTS)


def _shape_distance(shape: str, u: Tensor, v: Tensor) -> Tensor:
    """Signed distance (about; negative inside) to a unit-radius shape at local coordinates (u, v)."""
    au, av = u.abs(), v.abs()
    r = torch.sqrt(u * u + v * v)
    if shape == "disk":
        return r - 1
    if shape == "square":
        return torch.maximum(au, av) - 0.8
    if shape == "triangle":
        normals = [(math.cos(t), math.sin(t)) for t in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        return torch.stack([u * nx + v * ny for nx, ny in normals]).amax(0) - 0.5
    if shape == "ring":
        return torch.maximum(r - 1, 0.55 - r)
    if shape == "cross":
        return torch.minimum(torch.maximum(au - 0.3, av - 1), torch.maximum(av - 0.3, au - 1))
    if shape == "diamond":
        return (au + av - 1) / math.sqrt(2)
    if shape == "bar":
        return torch.maximum(au - 1, av - 0.35)
    return 0.5 * (r - 0.6 - 0.4 * torch.cos(5 * torch.atan2(v, u)))  # star (0.5: its boundary is steep)


def _fill(fill: str, u: Tensor, v: Tensor) -> Tensor:
    """Weight (0..1) of an object's second colour at local coordinates: its texture (soft-edged)."""
    if fill == "solid":
        return torch.zeros_like(u)
    if fill == "stripes":
        return (0.5 + 1.5 * torch.sin(u * 3 * math.pi)).clamp(0, 1)
    if fill == "checker":
        return (0.5 + 1.5 * torch.sin(u * 2.5 * math.pi) * torch.sin(v * 2.5 * math.pi)).clamp(0, 1)
    return torch.sqrt(u * u + v * v).clamp(0, 1)  # radial gradient


def _procedural_class(c: int, n: int, size: int, g: torch.Generator) -> Tensor:
    """``n`` float images [n, 3, size, size] of class ``c``."""
    shape, fill = SHAPES[c % len(SHAPES)], FILLS[(c // len(SHAPES)) % len(FILLS)]
    k = LAYOUTS[c // (len(SHAPES) * len(FILLS))]
    side = size
    lin = (torch.arange(side) + 0.5) / side
    y, x = torch.meshgrid(lin, lin, indexing="ij")  # [side, side] in (0, 1)
    # Background: a random two-colour linear gradient plus a little noise, so colour never names the class.
    bg = torch.rand(n, 2, 3, 1, 1, generator=g)
    ang = torch.rand(n, 1, 1, generator=g) * 2 * math.pi
    t = ((x - 0.5) * torch.cos(ang) + (y - 0.5) * torch.sin(ang) + 0.5).clamp(0, 1)[:, None]
    img = bg[:, 0] * (1 - t) + bg[:, 1] * t + 0.025 * torch.randn(n, 3, side, side, generator=g)
    # k objects on a jittered grid, so several objects rarely hide one another.
    radius = {1: (0.28, 0.38), 2: (0.17, 0.23), 4: (0.12, 0.16)}[k]
    cells = {1: [(0.5, 0.5)], 2: [(0.27, 0.5), (0.73, 0.5)],
             4: [(0.27, 0.27), (0.73, 0.27), (0.27, 0.73), (0.73, 0.73)]}[k]
    swap = torch.rand(n, generator=g) < 0.5  # two objects: side by side or one above the other
    for cx, cy in cells:
        rad = radius[0] + (radius[1] - radius[0]) * torch.rand(n, 1, 1, generator=g)
        slack = 0.5 - rad if k == 1 else 0.06
        ox = cx + slack * (2 * torch.rand(n, 1, 1, generator=g) - 1)
        oy = cy + slack * (2 * torch.rand(n, 1, 1, generator=g) - 1)
        if k == 2:
            ox, oy = torch.where(swap[:, None, None], oy, ox), torch.where(swap[:, None, None], ox, oy)
        rot = torch.rand(n, 1, 1, generator=g) * 2 * math.pi
        dx, dy = (x - ox) / rad, (y - oy) / rad
        u, v = dx * torch.cos(rot) + dy * torch.sin(rot), -dx * torch.sin(rot) + dy * torch.cos(rot)
        colours = torch.rand(n, 2, 3, 1, 1, generator=g)
        # Keep objects visible: a colour too close to the background's is moved half-way round each channel.
        near = (colours[:, 0] - bg.mean(1)).abs().mean((1, 2, 3), keepdim=True) < 0.25
        colours[:, 0] = torch.where(near, (bg.mean(1) + 0.5).remainder(1.0), colours[:, 0])
        w = _fill(fill, u, v)[:, None]
        obj = colours[:, 0] * (1 - w) + colours[:, 1] * w
        # Coverage from the signed distance in pixels: antialiased edges without supersampling.
        cover = (0.5 - _shape_distance(shape, u, v) * rad * side).clamp(0, 1)[:, None]
        img = torch.lerp(img, obj, cover)
    return img


def procedural_images(num_classes: int = 10, per_class: int = 100, size: int = 32, seed: int = 0,
                      split: Split = "train") -> ImageSet:
    """Procedural classes (no download): class = shape x texture x number of objects; colours are random.

    Deterministic in (seed, split, class); the train and test splits are different draws, and adding classes
    leaves the earlier classes' images unchanged.

    >>> procedural_images(2, 1, 8, split="test").images.shape
    torch.Size([2, 3, 8, 8])
    """
    if not 1 <= num_classes <= PROCEDURAL_MAX_CLASSES:
        raise ConfigError(f"num_classes: got {num_classes}; allowed: 1..{PROCEDURAL_MAX_CLASSES}")
    if split not in ("train", "test"):
        raise ConfigError(f"split: got {split!r}; allowed: 'train', 'test'")
    out = []
    for c in range(num_classes):
        g = torch.Generator().manual_seed(((seed * 1_000_003 + c) * 2 + (split == "test")) % 2**63)
        out.append(_procedural_class(c, per_class, size, g))
    img = torch.cat(out).clamp(0, 1)
    names = [f"{SHAPES[c % len(SHAPES)]}-{FILLS[(c // len(SHAPES)) % len(FILLS)]}-x{LAYOUTS[c // (len(SHAPES) * len(FILLS))]}"
             for c in range(num_classes)]
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return ImageSet((img * 255).round().to(torch.uint8), labels, names)


# -- scikit-learn digits -----------------------------------------------------------------------------------------


def digits_images(size: int = 32, split: Split = "train", test_fraction: float = 0.2) -> ImageSet:
    """scikit-learn's 1797 8x8 digits (they ship with the package), upsampled and given random colours.

    The split is fixed: a stratified ``test_fraction`` of each digit, the same on every call.

    >>> digits_images(16, "test").images.shape[1:]
    torch.Size([3, 16, 16])
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # scikit-learn is a dev extra, not a core dependency
        raise ImportError("source=digits needs scikit-learn: pip install scikit-learn") from None
    data = load_digits()
    x, y = torch.as_tensor(data.images, dtype=torch.float32) / 16.0, torch.as_tensor(data.target).long()
    rng = np.random.RandomState(0)
    test = np.zeros(len(y), bool)
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(data.target == c))
        test[idx[:int(round(len(idx) * test_fraction))]] = True
    keep = torch.as_tensor(test if split == "test" else ~test)
    x, y = x[keep], y[keep]
    grey = F.interpolate(x[:, None], size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    g = torch.Generator().manual_seed(1 if split == "test" else 0)
    fg, bg = torch.rand(len(y), 3, 1, 1, generator=g), torch.rand(len(y), 3, 1, 1, generator=g)
    bg = (fg + 0.3 + 0.4 * bg).remainder(1.0)  # each channel 0.3..0.7 away (circularly): the digit stays visible
    img = bg * (1 - grey) + fg * grey
    return ImageSet((img * 255).round().to(torch.uint8), y, [str(i) for i in range(10)])


# -- CIFAR-100 ---------------------------------------------------------------------------------------------------

# The only globals the official CIFAR-100 pickles reference: numpy array reconstruction. Anything else
# (os.system, builtins.eval, ...) is refused, so a tampered file cannot run code.
_NUMPY_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                  ("numpy", "ndarray"), ("numpy", "dtype")}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name} (only numpy array reconstruction "
                                         f"is allowed)")
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core"):]  # numpy 2 moved it; skip the deprecation shim
        return super().find_class(module, name)


def _dataset_folder(root: str | Path, dataset: str, layout: str) -> Path:
    """``root`` expanded, after checking that it is a folder (ValueError naming it and ``layout`` if not)."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{dataset}: {root} not found; expected {layout}")
    if not root.is_dir():
        raise DataError(f"{dataset}: {root} is a file, not a folder; expected {layout}")
    return root


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"CIFAR-100: missing file {path}; expected {CIFAR100_LAYOUT}")
    try:
        with open(path, "rb") as f:
            data = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except Exception as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise DataError(f"cannot read {path}: expected a dict, got {type(data).__name__}")
    # Python-2 pickles give bytes keys; accept str keys too.
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in data.items()}


def cifar100_images(root: str | Path, split: Split = "train", size: int | None = None) -> ImageSet:
    """CIFAR-100 from its python distribution: ``root/{train,test,meta}`` (fine labels, 100 classes).

    >>> s = cifar100_images("~/data/cifar-100-python", "test")  # doctest: +SKIP
    """
    root = _dataset_folder(root, "CIFAR-100", CIFAR100_LAYOUT)
    file = root / ("test" if split == "test" else "train")
    fingerprint = fingerprint_files([file, root / "meta"])
    batch = _unpickle(file)
    meta = _unpickle(root / "meta")
    try:
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = torch.as_tensor(np.asarray(batch["fine_labels"], dtype=np.int64))
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta["fine_label_names"]]
    except KeyError as e:
        raise DataError(f"cannot read {file}: missing key {e}") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(f"cannot read {file}: expected data [N, 3072] and N fine_labels, got data "
                         f"{list(data.shape)} and {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        raise DataError(f"cannot read {file}: labels outside the {len(names)} classes of {root / 'meta'}")
    images = rearrange(torch.from_numpy(data.copy()), "n (c h w) -> n c h w", c=3, h=32, w=32)
    return ImageSet(_resize(images, size), labels, names, fingerprint)


# -- image files -------------------------------------------------------------------------------------------------


def _read_image(path: Path, size: int | None) -> np.ndarray:
    """One file -> uint8 [size, size, 3]: shorter side resized to ``size``, then centre-cropped square."""
    from PIL import Image, UnidentifiedImageError  # imported here: only the file sources need Pillow

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size, size):
                w, h = im.size
                s = size / min(w, h)
                im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC, reducing_gap=3.0)
                left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
                im = im.crop((left, top, left + size, top + size))
            arr = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"missing image file {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None
    return arr


def _stack(paths: list[Path], labels: list[int], classes: list[str], size: int | None, where: Path,
           layout: str, index_files: tuple[Path, ...] = ()) -> ImageSet:
    """The images ``paths`` read and stacked; the fingerprint also covers the ``index_files`` that listed them."""
    if not paths:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {where}; expected {layout}")
    fingerprint = fingerprint_files([*index_files, *paths])
    # Pillow releases the GIL while decoding, so threads read Tiny ImageNet's 100k JPEGs several times faster.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(lambda p: _read_image(p, size), paths))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:  # without a size, the files must already agree
        raise DataError(f"images under {where} differ in size ({sorted(shapes)[:3]}...); pass size=")
    images = rearrange(torch.from_numpy(np.stack(arrays)), "n h w c -> n c h w").contiguous()
    if images.shape[-1] != images.shape[-2]:
        images = _resize(images, min(images.shape[-2:]))
    return ImageSet(images, torch.tensor(labels, dtype=torch.long), classes, fingerprint)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def tiny_imagenet_images(root: str | Path, split: Split = "train", size: int | None = None) -> ImageSet:
    """Tiny ImageNet (``tiny-imagenet-200`` layout); split ``test`` reads the labelled ``val`` folder.

    Classes are the wnids in the order of ``root/wnids.txt``.

    >>> s = tiny_imagenet_images("~/data/tiny-imagenet-200", "test")  # doctest: +SKIP
    """
    root = _dataset_folder(root, "Tiny ImageNet", TINY_IMAGENET_LAYOUT)
    wnids_file = root / "wnids.txt"
    if not wnids_file.is_file():
        raise DataError(f"Tiny ImageNet: missing file {wnids_file}; expected {TINY_IMAGENET_LAYOUT}")
    wnids = [w.strip() for w in wnids_file.read_text().splitlines() if w.strip()]
    if not wnids:
        raise DataError(f"Tiny ImageNet: {wnids_file} lists no wnids; expected one class id a line")
    index = {w: i for i, w in enumerate(wnids)}
    paths, labels, listed = [], [], (wnids_file,)
    if split == "test":
        ann = root / "val" / "val_annotations.txt"
        if not ann.is_file():
            raise DataError(f"Tiny ImageNet: missing file {ann}; expected {TINY_IMAGENET_LAYOUT}")
        listed += (ann,)
        for n, line in enumerate(ann.read_text().splitlines(), 1):
            parts = line.split("\t")
            if not line.strip():
                continue
            if len(parts) < 2 or parts[1] not in index:
                raise DataError(f"cannot read {ann} line {n}: expected '<file>\\t<wnid>...' with a wnid "
                                 f"listed in {wnids_file}, got {line!r}")
            paths.append(root / "val" / "images" / parts[0])
            labels.append(index[parts[1]])
    else:
        for w in wnids:
            folder = root / "train" / w / "images"
            if not folder.is_dir():
                raise DataError(f"Tiny ImageNet: missing folder {folder} (wnid {w} of {wnids_file}); expected "
                                 f"{TINY_IMAGENET_LAYOUT}")
            files = _image_files(folder)
            paths += files
            labels += [index[w]] * len(files)
    return _stack(paths, labels, wnids, size, root, TINY_IMAGENET_LAYOUT, listed)


def load_image_folder(root: str | Path, size: int | None = 32, classes: list[str] | None = None) -> ImageSet:
    """Any ``root/<class>/<image>`` tree (png, jpg, jpeg, bmp); classes sorted by name.

    Each image's shorter side is resized to ``size`` and its centre cropped square. ``classes`` fixes the class
    list (e.g. a test folder read with the train folder's classes, so labels agree even if one is missing).

    >>> s = load_image_folder("~/data/my_classes", 64)  # doctest: +SKIP
    """
    root = _dataset_folder(root, "image folder", FOLDER_LAYOUT)
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not found:
        raise DataError(f"image folder: no class folders under {root}; expected {FOLDER_LAYOUT}")
    if classes is not None and set(found) - set(classes):
        raise DataError(f"class folders {sorted(set(found) - set(classes))} under {root} are not among the "
                         f"classes {classes}")
    classes = found if classes is None else list(classes)
    paths, labels = [], []
    for i, c in enumerate(classes):
        files = _image_files(root / c) if (root / c).is_dir() else []
        paths += files
        labels += [i] * len(files)
    return _stack(paths, labels, classes, size, root, f"at least one image in the class folders {classes}")


SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val"), "unlabeled": ("unlabeled",)}
HOLD_OUT_EVERY = 5  # a folder without split folders: every 5th image of each class is the test split


def load_folder_split(root: str | Path, split: str, size: int | None = 32) -> ImageSet:
    """The ``split`` of an image folder: the one split rule of every ``source=folder`` world.

    - ``root/train``, ``root/test`` (or ``root/val``) and ``root/unlabeled`` present: each split is its own
      ``<split>/<class>/<image>`` tree, read with the classes of ``root/train`` so that a label names the same
      class in every split (a split may lack a class).
    - No split folder at all: ``root/<class>/<image>`` is split in place, the same on every call: every 5th image
      of each class (files sorted by name) is the test split, the others the train split; there is no unlabeled
      split. A class with fewer than 5 images has none in the test split.
    - Split folders, but not the one asked for: ValueError naming those found. Holding images out of
      ``root/train`` instead would change the training set whenever a test folder is added or removed, and
      reading the train images as the test split would score a model on what it was trained on.

    >>> s = load_folder_split("~/data/my_classes", "test", 64)  # doctest: +SKIP
    """
    if split not in SPLIT_FOLDERS:
        raise ConfigError(f"split: got {split!r}; allowed: {', '.join(map(repr, SPLIT_FOLDERS))}")
    root = _dataset_folder(root, "image folder", FOLDER_LAYOUT)
    present = [name for names in SPLIT_FOLDERS.values() for name in names if (root / name).is_dir()]
    if present:
        folder = next((root / name for name in SPLIT_FOLDERS[split] if (root / name).is_dir()), None)
        if folder is None:
            wanted = " or ".join(f"{root / name}" for name in SPLIT_FOLDERS[split])
            raise DataError(f"image folder: no {split} split under {root}: it has the split folders {present} but "
                             f"not {wanted}; expected {wanted}/<class>/<image>, or no split folders at all (then "
                             f"every {HOLD_OUT_EVERY}th image of each class is the test split)")
        train = root / "train"
        classes = sorted(p.name for p in train.iterdir() if p.is_dir()) if train.is_dir() else None
        return load_image_folder(folder, size, classes)
    if split == "unlabeled":
        raise DataError(f"image folder: no unlabeled split under {root}; expected {root / 'unlabeled'}/<class>/"
                         f"<image> beside {root / 'train'} and {root / 'test'}")
    data = load_image_folder(root, size)
    rank = torch.zeros_like(data.labels)  # each image's position within its class (files are sorted by name)
    for c in range(len(data.classes)):
        idx = (data.labels == c).nonzero().squeeze(1)
        rank[idx] = torch.arange(len(idx))
    held_out = rank % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1
    keep = held_out if split == "test" else ~held_out
    if split == "test" and not keep.any():
        raise DataError(f"image folder: the test split of {root} is empty (every {HOLD_OUT_EVERY}th image of each "
                         f"class, and no class has {HOLD_OUT_EVERY}); expected at least {HOLD_OUT_EVERY} images in "
                         f"a class, or root/train and root/test folders")
    return ImageSet(data.images[keep], data.labels[keep], data.classes, data.fingerprint)
