"""Files written whole or not at all, and the temporary files a killed writer leaves behind.

Every file the project writes (checkpoints, configs, reports, cached view banks) goes through :func:`atomic_write`:
a temporary ``.NAME.tmp<PID>@<HOST>`` beside it, fsync, rename. A process killed at any moment leaves the previous
file or the new one, never a partial one; the temporary file it may leave is removed by the next writer in that
folder (:func:`remove_stale_temps`), once its process is gone or, for a writer on another host sharing the folder,
once nothing has touched the file for a while. Standard library only: every layer uses it.

>>> with atomic_write("runs/demo/notes.txt") as fh:     # doctest: +SKIP
...     fh.write("complete or absent")
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

# The temporary name atomic_write gives NAME (checkpoints of older versions left out the host).
TEMP = re.compile(r"^\.(?P<name>.+)\.tmp(?P<pid>\d+)(?:@(?P<host>.+))?$")


def temp_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place: the PID and host let a later writer tell
    whether this one is still alive."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}@{socket.gethostname()}")


def _fsync_dir(folder: Path) -> None:
    try:  # makes the rename itself durable; not every filesystem lets a folder be opened
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path`` (fsync, rename).

    On an exception the temporary file is removed and ``path`` is left as it was. An OSError that names no file
    (a full disk) is raised naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.filename is not None:
            raise
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """``data`` as indented JSON, atomically."""
    with atomic_write(path) as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")


def keep(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy of ``src`` atomically: a hard link (no bytes copied), or a copy where links fail."""
    tmp = temp_path(dst)
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def writer_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host may still be writing (this process is not: it is the one cleaning)."""
    if os.name == "nt":  # os.kill would terminate the process there: only the age rule applies
        return True
    if pid <= 0 or pid == os.getpid():  # os.kill(0 or less) would signal a process group
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike, *, target: Callable[[str], bool] = lambda name: True,
                       max_age: float | None = None) -> list[Path]:
    """Remove the temporary files in ``folder`` of targets ``target(name)`` accepts whose writer is gone: its
    process no longer runs on this host, or (with ``max_age``) nothing has written the file for ``max_age``
    seconds, which also frees those of writers on other hosts. Returns the files removed."""
    folder, removed = Path(folder), []
    if not folder.is_dir():
        return removed
    host, now = socket.gethostname(), time.time()
    for p in folder.iterdir():
        m = TEMP.match(p.name)
        if m is None or not target(m["name"]):
            continue
        try:
            age = now - p.stat().st_mtime
        except FileNotFoundError:  # its writer renamed it into place meanwhile
            continue
        local = m["host"] in (None, host)
        if (local and not writer_alive(int(m["pid"]))) or (max_age is not None and age > max_age):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
