"""The view-bank cache and the data on disk behind it: keys that follow the files, damaged caches found and
rendered again, temp files of killed saves removed, and one clear error for every bad data folder."""
import dataclasses
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

import envs
from envs.augment import Augmentations
from envs.iebench import IEBench
from envs.saccades import Saccades
from envs.sequences import BANK_FORMAT, STALE_TEMP_SECONDS, ViewBank
from iebench_tree import write_tree
from seqjepa.options import DataError
from test_augment import write_cifar
from test_saccades import write_stl10

ROOT = Path(__file__).resolve().parents[1]
OBJECTS = "seqjepa/RotatingObjects-v0"


def small_world() -> envs.World:
    return envs.make_world(OBJECTS, image_size=16)


def bank_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("bank-*.pt"))


def rewrite(path: Path, write) -> None:
    """Rewrite ``path`` with ``write(path)`` and make sure its mtime moves, as it does for a later write on a file
    system with coarse timestamps."""
    before = path.stat().st_mtime_ns
    write(path)
    after = path.stat()
    if after.st_mtime_ns == before:
        os.utime(path, ns=(after.st_atime_ns, before + 1_000_000_000))


# -- the key covers the data --------------------------------------------------------------------------------------


def test_overwritten_3diebench_images_are_rendered_again(tmp_path):
    root, cache = write_tree(tmp_path / "3diebench"), tmp_path / "cache"
    build = lambda: IEBench(root=str(root), image_size=16)  # noqa: E731  (a fresh world reads the files again)
    first = ViewBank.cached("seqjepa/3DIEBench-v0", build(), objects=2, views=3, seed=0, cache_dir=str(cache))
    again = ViewBank.cached("seqjepa/3DIEBench-v0", build(), objects=2, views=3, seed=0, cache_dir=str(cache))
    assert torch.equal(first.views, again.views) and len(bank_files(cache)) == 1  # unchanged data: reused
    for image in root.glob("*/*/image_*.jpg"):
        rewrite(image, lambda p: Image.new("RGB", (32, 32), (255, 255, 255)).save(p, quality=95))
    changed = ViewBank.cached("seqjepa/3DIEBench-v0", build(), objects=2, views=3, seed=0, cache_dir=str(cache))
    assert len(bank_files(cache)) == 2
    assert not torch.equal(first.views, changed.views) and (changed.views > 250).all()  # the new, white images


def _folder(d: Path) -> tuple[dict, Path, Callable[[Path], None]]:
    for c, colour in (("ant", (200, 10, 10)), ("bee", (10, 10, 200))):
        (d / c).mkdir()
        for i in range(5):
            Image.new("RGB", (16, 16), tuple(v + 9 * i for v in colour)).save(d / c / f"{i}.png")
    return (dict(source="folder", root=str(d), image_size=16), d / "bee" / "0.png",
            lambda p: Image.new("RGB", (16, 16), (0, 255, 0)).save(p))


def _cifar(d: Path) -> tuple[dict, Path, Callable[[Path], None]]:
    write_cifar(d)
    return dict(source="cifar100", root=str(d), image_size=16), d / "train", lambda p: write_cifar(d, seed=1)


def _stl10(d: Path) -> tuple[dict, Path, Callable[[Path], None]]:
    write_stl10(d)
    return (dict(source="stl10", root=str(d), scene_size=32, image_size=8, fixations="uniform"), d / "train_X.bin",
            lambda p: p.write_bytes(np.full(p.stat().st_size, 77, np.uint8).tobytes()))


def _saliency_file(d: Path) -> tuple[dict, Path, Callable[[Path], None]]:
    maps = np.zeros((4, 1, 32, 32), np.float32)
    maps[:, 0, 8, 8] = 1.0  # every first fixation on one pixel; the change moves it
    np.save(d / "saliency_train.npy", maps)
    return (dict(num_classes=2, per_class=2, scene_size=32, image_size=8,
                 saliency_maps=str(d / "saliency_{split}.npy")),
            d / "saliency_train.npy", lambda p: np.save(p, np.roll(maps, (12, 16), axis=(2, 3))))


# source -> (env id, writes the data under a folder and returns the world options, a file and how to change it)
SOURCES = {"augmentations-folder": ("seqjepa/Augmentations-v0", _folder),
           "augmentations-cifar100": ("seqjepa/Augmentations-v0", _cifar),
           "saccades-stl10": ("seqjepa/Saccades-v0", _stl10),
           "saccades-saliency-file": ("seqjepa/Saccades-v0", _saliency_file)}


@pytest.mark.parametrize("source", SOURCES)
def test_changed_files_give_a_new_key_and_a_new_bank(source, tmp_path):
    env_id, setup = SOURCES[source]
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    options, changed_file, change = setup(data)
    first_world = envs.make_world(env_id, **options)
    assert first_world.data_fingerprint() is not None
    # 8 objects: every episode of these tiny sets is in the bank, so a changed image shows
    first = ViewBank.cached(env_id, first_world, objects=8, views=3, seed=0, cache_dir=str(cache))
    rewrite(changed_file, change)
    world = envs.make_world(env_id, **options)
    assert ViewBank.key(env_id, world, 8, 3, 0) != ViewBank.key(env_id, first_world, 8, 3, 0)
    bank = ViewBank.cached(env_id, world, objects=8, views=3, seed=0, cache_dir=str(cache))
    assert len(bank_files(cache)) == 2 and not torch.equal(bank.views, first.views)
    assert torch.equal(bank.views, ViewBank.render(world, 8, 3, 0).views)  # rendered from the new files


def test_worlds_without_files_keep_their_keys():
    world = small_world()
    assert world.data_fingerprint() is None
    assert Saccades(num_classes=2, per_class=2, scene_size=32, image_size=8).data_fingerprint() is None
    assert Augmentations(image_size=16, num_classes=2, per_class=2).data_fingerprint() is None
    spec = {"world": OBJECTS, "options": dataclasses.asdict(world.options), "objects": 3, "views": 2, "seed": 0,
            "format": BANK_FORMAT}  # the key before data fingerprints: their cached banks are still found
    old_key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    assert ViewBank.key(OBJECTS, world, 3, 2, 0) == old_key


# -- damaged caches ---------------------------------------------------------------------------------------------


class Payload:
    def __reduce__(self):
        return (os.getcwd, ())  # harmless even if it ran; it must not even be looked up


def _flip_a_byte(p: Path) -> None:
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    p.write_bytes(bytes(raw))


DAMAGES = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "not a complete zip archive"),
    "empty": (lambda p: p.write_bytes(b""), "not a complete zip archive"),
    "garbage": (lambda p: p.write_bytes(os.urandom(p.stat().st_size)), "not a complete zip archive"),
    "flipped byte": (_flip_a_byte, r"CRC-32 of its member \S+ does not match"),
    "another payload": (lambda p: torch.save({"views": Payload()}, p), r"not a view bank: UnpicklingError"),
    "another bank": (lambda p: torch.save({"views": torch.zeros(2, dtype=torch.uint8)}, p), r"holds \['views'\]"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_bank_is_named_moved_aside_and_rendered_again(damage, tmp_path, monkeypatch):
    world = small_world()
    good = ViewBank.cached(OBJECTS, world, objects=3, views=2, seed=0, cache_dir=str(tmp_path))
    [path] = bank_files(tmp_path)
    write, reason = DAMAGES[damage]
    write(path)
    damaged = path.read_bytes()
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(k.get("weights_only")) or real_load(*a, **k))
    messages = []
    bank = ViewBank.cached(OBJECTS, world, objects=3, views=2, seed=0, cache_dir=str(tmp_path), log=messages.append)
    assert torch.equal(bank.views, good.views) and torch.equal(bank.params, good.params)
    [message] = [m for m in messages if not m.startswith("view bank: ")]  # not the progress lines
    assert "\n" not in message and str(path) in message and re.search(reason, message), message
    assert (tmp_path / (path.name + ".corrupt")).read_bytes() == damaged  # kept for a look, out of the way
    assert all(weights_only is True for weights_only in loads)
    assert torch.equal(ViewBank.cached(OBJECTS, world, objects=3, views=2, seed=0, cache_dir=str(tmp_path)).views,
                       good.views)  # the new file is whole


def test_without_a_log_the_damage_is_a_warning(tmp_path):
    ViewBank.cached(OBJECTS, small_world(), objects=3, views=2, seed=0, cache_dir=str(tmp_path))
    [path] = bank_files(tmp_path)
    path.write_bytes(b"")
    with pytest.warns(UserWarning, match=f"view bank {re.escape(str(path))} is damaged"):
        ViewBank.cached(OBJECTS, small_world(), objects=3, views=2, seed=0, cache_dir=str(tmp_path))


# -- temp files of killed saves ---------------------------------------------------------------------------------


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_stale_temp_files_of_the_key_are_removed_and_live_ones_kept(tmp_path):
    world = small_world()
    key, other_key = ViewBank.key(OBJECTS, world, 3, 2, 0), ViewBank.key(OBJECTS, world, 3, 2, 1)
    host, dead, old = socket.gethostname(), dead_pid(), time.time() - STALE_TEMP_SECONDS - 60
    files = {  # name -> removed?
        f".bank-{key}.pt.tmp{dead}@{host}": True,               # its process is gone
        f".bank-{key}.pt.tmp{os.getppid()}@{host}": False,      # a save in progress in another process here
        f".bank-{key}.pt.tmp{dead}@elsewhere": False,           # a host whose processes cannot be seen, written lately
        f".bank-{key}.pt.tmp{dead + 1}@elsewhere.old": True,     # ... and untouched for longer than a save takes
        f".bank-{other_key}.pt.tmp{dead}@{host}": False,        # another bank's: not this build's business
    }
    for name in files:
        (tmp_path / name).write_bytes(b"partial")
    os.utime(tmp_path / f".bank-{key}.pt.tmp{dead + 1}@elsewhere.old", (old, old))
    ViewBank.cached(OBJECTS, world, objects=3, views=2, seed=0, cache_dir=str(tmp_path))
    for name, removed in files.items():
        assert (tmp_path / name).exists() != removed, name


@pytest.mark.slow
def test_a_save_killed_midway_leaves_a_temp_file_that_the_next_build_removes(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, sys, torch
        sys.path.insert(0, {str(ROOT)!r})
        import envs
        from envs.sequences import ViewBank

        def killed_midway(obj, f):  # half a file written, then kill -9
            f.write(b"PK partial bank")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = killed_midway
        world = envs.make_world({OBJECTS!r}, image_size=16)
        ViewBank.cached({OBJECTS!r}, world, objects=3, views=2, seed=0, cache_dir={str(tmp_path)!r})
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    [left] = list(tmp_path.iterdir())
    assert re.fullmatch(r"\.bank-\w+\.pt\.tmp\d+@.+", left.name) and not bank_files(tmp_path)
    bank = ViewBank.cached(OBJECTS, small_world(), objects=3, views=2, seed=0, cache_dir=str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == [bank_files(tmp_path)[0].name]
    assert bank.views.shape == (3, 2, 3, 16, 16)


def test_a_failed_save_leaves_nothing(tmp_path, monkeypatch):
    def disk_full(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space") as e:
        ViewBank.cached(OBJECTS, small_world(), objects=3, views=2, seed=0, cache_dir=str(tmp_path))
    assert e.value.filename is not None and Path(e.value.filename).name.startswith("bank-")  # named by its file
    assert list(tmp_path.iterdir()) == []


# -- bad data folders: one line naming the path, what is wrong and what was expected ----------------------------


def _cifar_without_meta(d: Path) -> dict:
    write_cifar(d / "cifar")
    (d / "cifar" / "meta").unlink()
    return dict(source="cifar100", root=str(d / "cifar"))


def _file(d: Path) -> str:
    (d / "file").write_text("not a folder")
    return str(d / "file")


def _empty_class_folders(d: Path) -> dict:
    for c in ("ant", "bee"):
        (d / "img" / c).mkdir(parents=True)
    return dict(source="folder", root=str(d / "img"))


def _train_split_only(d: Path) -> str:
    for i in range(2):
        (d / "img" / "train" / "ant").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(d / "img" / "train" / "ant" / f"{i}.png")
    return str(d / "img")


def _tiny_without_wnids(d: Path) -> dict:
    (d / "tiny" / "train").mkdir(parents=True)
    return dict(source="tinyimagenet", root=str(d / "tiny"))


def _no_saliency_file(d: Path) -> dict:
    return dict(num_classes=2, per_class=2, scene_size=32, image_size=8, saliency_maps=str(d / "maps_{split}.npy"))


def _bank_in(cache_dir: str) -> None:
    ViewBank.cached(OBJECTS, small_world(), objects=3, views=2, seed=0, cache_dir=cache_dir)


# case -> (makes the bad data under a folder and builds what reads it, what the one line says)
BAD_DATA = {
    "cifar100 without meta": (lambda d: Augmentations(**_cifar_without_meta(d)),
                              r"CIFAR-100: missing file \S+/cifar/meta; expected the cifar-100-python folder"),
    "cifar100 root is a file": (lambda d: Augmentations(source="cifar100", root=_file(d)),
                                r"CIFAR-100: \S+/file is a file, not a folder; expected the cifar-100-python"),
    "cifar100 root missing": (lambda d: Augmentations(source="cifar100", root=str(d / "nowhere")),
                              r"CIFAR-100: \S+/nowhere not found; expected"),
    "folder without class folders": (lambda d: Augmentations(source="folder", root=str(d)),
                                     r"image folder: no class folders under \S+; expected root/<class>/<image>"),
    "folder with empty class folders": (lambda d: Augmentations(**_empty_class_folders(d)),
                                        r"no images \(.png.*\) found under \S+/img; expected at least one image in "
                                        r"the class folders \['ant', 'bee'\]"),
    "folder root is a file (augmentations)": (lambda d: Augmentations(source="folder", root=_file(d)),
                                              r"image folder: \S+/file is a file, not a folder; expected"),
    "folder root is a file (saccades)": (lambda d: Saccades(source="folder", root=_file(d)),
                                         r"image folder: \S+/file is a file, not a folder; expected"),
    "folder without its test split (augmentations)": (
        lambda d: Augmentations(source="folder", root=_train_split_only(d), split="test"),
        r"image folder: no test split under \S+/img: it has the split folders \['train'\]"),
    "folder without its test split (saccades)": (
        lambda d: Saccades(source="folder", root=_train_split_only(d), split="test"),
        r"image folder: no test split under \S+/img: it has the split folders \['train'\]"),
    "tinyimagenet without wnids.txt": (lambda d: Augmentations(**_tiny_without_wnids(d)),
                                       r"Tiny ImageNet: missing file \S+/tiny/wnids.txt; expected the "
                                       r"tiny-imagenet-200 folder"),
    "tinyimagenet root is a file": (lambda d: Augmentations(source="tinyimagenet", root=_file(d)),
                                    r"Tiny ImageNet: \S+/file is a file, not a folder"),
    "stl10 root is a file": (lambda d: Saccades(source="stl10", root=_file(d)),
                             r"STL-10: \S+/file is a file, not a folder; expected the stl10_binary folder"),
    "missing saliency file": (lambda d: Saccades(**_no_saliency_file(d)),
                              r"^saliency maps: \S+/maps_train.npy not found; expected a .npy of saliency maps"),
    "cache_dir is a file": (lambda d: _bank_in(_file(d)),
                            r"world.cache_dir: \S+/file is a file; expected a folder for the view-bank caches"),
    "cache_dir under a file": (lambda d: _bank_in(str(Path(_file(d)) / "cache")),
                               r"world.cache_dir: cannot create \S+/file/cache \(.+\); expected a folder"),
}


@pytest.mark.parametrize("case", BAD_DATA)
def test_bad_data_folders_give_one_clear_line(case, tmp_path):
    build, expected = BAD_DATA[case]
    with pytest.raises(DataError) as e:  # what run.py reports as one line, exit 2
        build(tmp_path)
    message = str(e.value)
    assert "\n" not in message
    assert re.search(expected, message), message
    assert str(tmp_path) in message
