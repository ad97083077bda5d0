"""A tiny 3DIEBench tree in the real format, for tests: 2 synsets x 2 objects x 4 views of 32x32 JPEGs.

Object 0 of each synset is in the train split, object 1 in the val (test) split. ``ood=True`` writes views
image_2..image_5 only, with Euler angles in the OOD range, like 3DIEBench-OOD.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

SYNSETS = ("02691156", "03001627")


def write_tree(root: str | Path, *, ood: bool = False, size: int = 32, views: int = 4, seed: int = 0) -> Path:
    root = Path(root)
    rng = np.random.default_rng(seed)
    index = {"train": ([], []), "val": ([], [])}
    ids = range(2, 6) if ood else range(views)
    for label, synset in enumerate(SYNSETS):
        for k in range(2):
            obj = f"{synset}obj{k}"
            folder = root / synset / obj
            folder.mkdir(parents=True, exist_ok=True)
            for i in ids:
                euler = rng.uniform(-math.pi / 2, math.pi / 2, 3)
                if ood:
                    euler = np.sign(euler) * (math.pi - np.abs(euler) / 2)  # |angle| in (pi/2, pi]
                latent = np.concatenate([euler, [rng.uniform(), rng.uniform(0, math.pi / 4),
                                                 rng.uniform(0, 2 * math.pi), rng.uniform()]])
                np.save(folder / f"latent_{i}.npy", latent)
                colour = (int(200 * latent[3]) + 20, 40 * i + 20, 120 * label + 40)
                Image.new("RGB", (size, size), colour).save(folder / f"image_{i}.jpg", quality=95)
            split = "train" if k == 0 else "val"
            index[split][0].append(f"/{synset}/{obj}/")
            index[split][1].append(label)
    for split, (paths, labels) in index.items():
        np.save(root / f"{split}_images.npy", np.array(paths))          # unicode array: no pickle needed
        np.save(root / f"{split}_labels.npy", np.array(labels, dtype=np.int64))
    return root
