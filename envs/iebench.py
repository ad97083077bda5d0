"""3DIEBench (and 3DIEBench-OOD) from disk: the pre-rendered views of the real dataset as a world.

Layout (the SIE / seq-JEPA release)::

    root/<synset>/<object>/image_{i}.jpg     256x256 renders
    root/<synset>/<object>/latent_{i}.npy    7 floats: rot x, y, z (extrinsic "xyz" Euler), floor hue,
                                             spot theta, spot phi, spot hue
    root/train_images.npy, val_images.npy    object paths like '/02691156/dc8d.../' (leading '/' stripped)
    root/train_labels.npy, val_labels.npy    int64 class of each object

``split="train"`` reads ``train_*``, ``split="test"`` reads ``val_*`` (the SIE split, where "val" is the test set).
3DIEBench-OOD has the same layout with only views ``image_2..image_5``: views are discovered per object.

The world state is (episode, view index). Actions are **only what the data gives**: ``step(action)`` moves to the
view of the same object whose relative action from the current view is nearest to the requested one (the
quaternion sign is ignored); ``sample_action`` picks a random other
view and returns the action to it, so a random-policy rollout visits distinct pre-rendered views exactly. Images
are read lazily per render through a small LRU cache and resized to ``image_size`` (uint8, not normalised).
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from seqjepa.options import DataError, opt

from . import rotations as rt
from .base import Factor, State, World, fingerprint_files

ENV_VAR = "SEQJEPA_3DIEBENCH"
_VIEW = re.compile(r"image_(\d+)\.jpg$")
_VIEW_FILE = re.compile(r"(?:image_(\d+)\.jpg|latent_(\d+)\.npy)$")
INDEX_FILES = tuple(f"{split}_{name}" for split in ("train", "val")
                    for name in ("images.npy", "images.txt", "labels.npy"))


def load_index(root: Path, prefix: str) -> tuple[list[str], np.ndarray]:
    """Object paths (leading '/' stripped) and int64 labels of ``prefix`` ("train" or "val")."""
    npy, txt, lab = root / f"{prefix}_images.npy", root / f"{prefix}_images.txt", root / f"{prefix}_labels.npy"
    if npy.is_file():
        try:
            paths = [str(p) for p in np.load(npy, allow_pickle=False).reshape(-1)]
        except ValueError as e:  # an object array of str needs pickle, which we never load
            if not txt.is_file():
                raise DataError(f"cannot read {npy}: it needs pickle ({e}); write its paths one per line to "
                                 f"{txt}, e.g. python -c \"import numpy as np; open('{txt}','w').write("
                                 f"'\\n'.join(map(str, np.load('{npy}', allow_pickle=True))))\"") from None
            paths = None
    elif txt.is_file():
        paths = None
    else:
        raise DataError(f"missing file {npy} (or {txt}); expected the 3DIEBench index under world.options.root")
    if paths is None:
        paths = [line.strip() for line in txt.read_text().splitlines() if line.strip()]
    if not lab.is_file():
        raise DataError(f"missing file {lab}; expected the 3DIEBench labels under world.options.root")
    try:
        labels = np.load(lab, allow_pickle=False).reshape(-1).astype(np.int64)
    except (ValueError, OSError) as e:
        raise DataError(f"cannot read {lab}: {e}") from None
    if len(labels) != len(paths):
        raise DataError(f"{lab}: {len(labels)} labels for {len(paths)} objects in the {prefix} index")
    return [p.strip("/") for p in paths], labels


class IEBench(World):
    """The real 3DIEBench: 55 ShapeNet classes, pre-rendered views, relative rotation (and hue) actions."""

    needs_data = True  # tests build it over tests/iebench_tree.py

    @dataclass
    class Options:
        root: str = opt("", f"dataset folder (synset/object/image_i.jpg + index files); default ${ENV_VAR}")
        split: Literal["train", "test"] = opt("train", "train: train_*.npy; test: val_*.npy (the SIE split)")
        image_size: int = opt(128, "side of the square views in pixels (images are resized on load)",
                              ge=8, le=256)
        actions: Literal["rotation", "color", "rotation+color"] = opt(
            "rotation", "rotation: 4-d relative quaternion; color: (d floor hue, d spot hue), the plain difference "
                        "of the hue latents; rotation+color: 6-d")
        views: int = opt(50, "use view indices below this (3DIEBench has 50 per object)", ge=1, le=10000)
        ood: bool = opt(False, "root is 3DIEBench-OOD (only views image_2..image_5 exist)")
        canonical_quat: bool = opt(True, "quaternion sign with w >= 0 (q and -q are the same rotation)")
        cache_images: int = opt(512, "decoded images kept in memory (LRU)", ge=0)

    name = "3DIEBench / 3DIEBench-OOD from disk: pre-rendered views of 55 ShapeNet classes (needs the data)"
    action_doc = ("relative rotation R_from^-1 R_to as a unit quaternion (x, y, z, w); with actions=color or "
                  "rotation+color (d floor hue, d spot hue): the plain difference of the hue latents in [0, 1], as the "
                  "official code and SIE read it (so in [-1, 1], not wrapped); a step moves to "
                  "the pre-rendered view nearest to the requested action")
    param_names = ("rot_x", "rot_y", "rot_z", "floor_hue", "spot_theta", "spot_phi", "spot_hue")
    # The official normalisation of 3DIEBench (main_transformed_views.py; SIE's constants).
    pixel_mean = (0.5016, 0.5037, 0.5060)
    pixel_std = (0.1030, 0.0999, 0.0969)

    def __init__(self, options: Options | None = None, device: str | torch.device = "cpu", **kwargs):
        opts = self.resolve_options(options, kwargs)
        if not opts.root:
            opts.root = os.environ.get(ENV_VAR, "")
        if not opts.root:
            raise DataError(f"world.options.root: no 3DIEBench folder given; set world.options.root=PATH or the "
                             f"environment variable {ENV_VAR}")
        root = Path(opts.root).expanduser()
        if not root.is_dir():
            raise DataError(f"world.options.root: {root} is not a folder; expected the 3DIEBench"
                             f"{'-OOD' if opts.ood else ''} root (synset/object/image_i.jpg + index files)")
        self.options, self.device, self.root = opts, torch.device(device), root
        self._paths, labels = load_index(root, "train" if opts.split == "train" else "val")
        if not self._paths:
            raise DataError(f"world.options.root: the {opts.split} index under {root} lists no objects")
        # Classes from both splits when both are there, so train and test agree on num_classes.
        other = "val" if opts.split == "train" else "train"
        try:
            every = np.concatenate([labels, load_index(root, other)[1]])
        except ValueError:
            every = labels
        self.num_classes = int(every.max()) + 1
        self._labels = torch.as_tensor(labels, device=self.device)
        self.num_episodes = len(self._paths)
        self.image_size = opts.image_size
        self.param_dim = 7
        self.action_dim = {"rotation": 4, "color": 2, "rotation+color": 6}[opts.actions]
        self.factors = {"rotation": {"rotation": Factor(0, 4, "mlp")}, "color": {"color": Factor(0, 2, "linear")},
                        "rotation+color": {"rotation": Factor(0, 4, "mlp"), "color": Factor(4, 6, "linear")}
                        }[opts.actions]
        self.action_low = -torch.ones(self.action_dim, device=self.device)
        self.action_high = torch.ones(self.action_dim, device=self.device)
        self._views: dict[int, tuple[Tensor, Tensor]] = {}   # episode -> (view indices, latents [V, 7])
        self._images: OrderedDict[tuple[int, int], Tensor] = OrderedDict()

    # --- the data on disk -----------------------------------------------------------------------------------
    def _folder(self, episode: int) -> Path:
        return self.root / self._paths[episode]

    def data_fingerprint(self) -> str:
        """The index files and the view files (image and latent, below ``views``) of every object of the split.

        One stat per file: a few seconds for the ~4 million files of 3DIEBench's train split, little beside
        loading a bank of it. A missing object folder counts as such (rendering names it).
        """
        files = [str(self.root / name) for name in INDEX_FILES]
        for path in self._paths:
            folder = self.root / path
            try:
                with os.scandir(folder) as entries:
                    files += [e.path for e in entries
                              if (m := _VIEW_FILE.match(e.name)) and int(m.group(1) or m.group(2)) < self.options.views]
            except (FileNotFoundError, NotADirectoryError):
                files.append(str(folder))
        return fingerprint_files(files)

    def object_views(self, episode: int) -> tuple[Tensor, Tensor]:
        """View indices present for ``episode`` (sorted, below ``views``) and their latents [V, 7] (cached)."""
        if episode not in self._views:
            folder = self._folder(episode)
            if not folder.is_dir():
                raise DataError(f"missing folder {folder} (object {episode} of the {self.options.split} index)")
            ids = sorted(int(m.group(1)) for f in os.listdir(folder) if (m := _VIEW.match(f)))
            ids = [i for i in ids if i < self.options.views]
            if not ids:
                raise DataError(f"no views in {folder}: expected image_<i>.jpg with i < {self.options.views}")
            latents = []
            for i in ids:
                file = folder / f"latent_{i}.npy"
                if not file.is_file():
                    raise DataError(f"missing file {file}")
                try:
                    lat = np.load(file, allow_pickle=False)
                except (ValueError, OSError, EOFError) as e:
                    raise DataError(f"cannot read {file}: {e}") from None
                if lat.shape != (7,) or not np.isfinite(lat).all():
                    raise DataError(f"bad latent in {file}: got shape {lat.shape}; expected 7 finite floats "
                                     f"(rot x, y, z, floor hue, spot theta, spot phi, spot hue)")
                latents.append(lat.astype(np.float32))
            self._views[episode] = (torch.tensor(ids, device=self.device),
                                    torch.as_tensor(np.stack(latents), device=self.device))
        return self._views[episode]

    def load_image(self, episode: int, view: int) -> Tensor:
        """The view as uint8 [3, S, S], resized to ``image_size``; LRU-cached."""
        key = (episode, view)
        if key in self._images:
            self._images.move_to_end(key)
            return self._images[key]
        from PIL import Image, UnidentifiedImageError

        file = self._folder(episode) / f"image_{view}.jpg"
        if not file.is_file():
            raise DataError(f"missing file {file}")
        try:
            with Image.open(file) as im:
                im = im.convert("RGB")
                if im.size != (self.image_size, self.image_size):
                    im = im.resize((self.image_size, self.image_size), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8).copy()
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
            raise DataError(f"cannot read image {file}: {e}") from None
        img = torch.from_numpy(arr).permute(2, 0, 1).contiguous().to(self.device)
        if self.options.cache_images:
            self._images[key] = img
            while len(self._images) > self.options.cache_images:
                self._images.popitem(last=False)
        return img

    # --- the World interface --------------------------------------------------------------------------------
    def _state(self, episodes: Tensor, slots: Tensor) -> State:
        """State for view *slots* (positions in each object's view list)."""
        views, params = [], []
        for e, s in zip(episodes.tolist(), slots.tolist()):
            ids, lat = self.object_views(e)
            views.append(ids[s])
            params.append(lat[s])
        n = len(episodes)
        return {"episode": episodes, "label": self._labels[episodes],
                "view": torch.stack(views) if n else torch.zeros(0, dtype=torch.long, device=self.device),
                "params": torch.stack(params) if n else torch.zeros(0, 7, device=self.device)}

    def _slot(self, episode: int, view: int) -> int:
        return int((self.object_views(episode)[0] == view).nonzero()[0, 0])

    def reset(self, n: int, generator: torch.Generator, episodes: Tensor | None = None) -> State:
        episodes = self.episodes_for(n, generator, episodes)
        u = torch.rand(n, generator=generator, device=self.device)
        counts = torch.tensor([len(self.object_views(e)[0]) for e in episodes.tolist()], device=self.device)
        return self._state(episodes, (u * counts).long().clamp_max(counts - 1))

    def step(self, state: State, action: Tensor, generator: torch.Generator) -> State:
        a = self.check_action(action.to(self.device, torch.float32))
        slots = []
        for i, e in enumerate(state["episode"].tolist()):
            _, lat = self.object_views(e)
            rel = self.relative(state["params"][i].expand_as(lat), lat)      # [V, A]
            slots.append(int(self.action_distance(rel, a[i]).argmin()))
        return {**state, **self._state(state["episode"], torch.tensor(slots, dtype=torch.long))}

    def action_distance(self, rel: Tensor, a: Tensor) -> Tensor:
        """Squared distance of actions ``rel`` [V, A] to ``a`` [A]: quaternion sign ignored."""
        d = torch.zeros(len(rel), device=rel.device)
        if "rotation" in self.factors:
            q = rt.normalize_quat(a[:4])
            d = d + torch.minimum(((rel[:, :4] - q) ** 2).sum(-1), ((rel[:, :4] + q) ** 2).sum(-1))
        if "color" in self.factors:
            c = self.factors["color"].slice
            d = d + ((rel[:, c] - a[c]) ** 2).sum(-1)
        return d

    def sample_action(self, state: State, generator: torch.Generator) -> Tensor:
        targets = []
        u = torch.rand(len(state["episode"]), generator=generator, device=self.device)
        for i, (e, v) in enumerate(zip(state["episode"].tolist(), state["view"].tolist())):
            ids, lat = self.object_views(e)
            cur = self._slot(e, v)
            if len(ids) > 1:  # a random *other* view
                k = min(int(u[i] * (len(ids) - 1)), len(ids) - 2)
                cur = k + (k >= cur)
            targets.append(lat[cur])
        if not targets:
            return torch.zeros(0, self.action_dim, device=self.device)
        return self.relative(state["params"], torch.stack(targets))

    def relative(self, p_from: Tensor, p_to: Tensor) -> Tensor:
        out = []
        if "rotation" in self.factors:
            R = rt.euler_to_matrix(p_from[..., :3]).transpose(-1, -2) @ rt.euler_to_matrix(p_to[..., :3])
            q = rt.matrix_to_quat(R)
            out.append(rt.canonical_quat(q) if self.options.canonical_quat else q)
        if "color" in self.factors:
            out.append(p_to[..., [3, 6]] - p_from[..., [3, 6]])
        return torch.cat(out, -1)

    def absolute(self, params: Tensor) -> dict[str, Tensor]:
        return {"rotation": rt.canonical_quat(rt.matrix_to_quat(rt.euler_to_matrix(params[..., :3])))}

    def render(self, state: State) -> Tensor:
        s = self.image_size
        if len(state["episode"]) == 0:
            return torch.zeros(0, 3, s, s, dtype=torch.uint8, device=self.device)
        return torch.stack([self.load_image(e, v) for e, v in zip(state["episode"].tolist(),
                                                                  state["view"].tolist())])


__all__ = ["ENV_VAR", "IEBench", "load_index"]
