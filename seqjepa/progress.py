"""Progress of steps that can run for minutes (training, probe fits, feature passes, planners): a tqdm bar on a
terminal, otherwise a line every ``EVERY`` seconds through the caller's ``log``, so a log file never goes quiet for
long and a short step adds nothing to it.

>>> with Progress("eval: path_integration", unit="epochs", log=print, bar=False) as p:
...     p.update(note="rotation/full/M=1")
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Literal

EVERY = 10.0  # seconds between two progress lines when there is no bar


def wants_bar(setting: Literal["auto", "on", "off"] = "auto") -> bool:
    """``train.progress``'s rule: on, off, or auto = only when stderr is a terminal."""
    return setting == "on" or (setting == "auto" and sys.stderr.isatty())


class Progress:
    """Counts ``unit``s of one step; ``update(n, note)`` after each (``n=0`` only refreshes the note).

    ``bar``: a tqdm bar on stderr (removed when the step ends); else ``log`` gets ``desc: done/total unit, note
    (elapsed)`` (without a total: ``desc: note (elapsed)``) at most every ``every`` seconds.
    """

    def __init__(self, desc: str, *, total: int | None = None, unit: str = "steps",
                 log: Callable[[str], None] = print, bar: bool = False, every: float | None = None):
        self.desc, self.total, self.unit, self.log = desc, total, unit, log
        self.every = EVERY if every is None else every
        self.done, self.t0 = 0, time.monotonic()
        self.last = self.t0
        self.bar = None
        if bar:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit=f" {unit}", leave=False, dynamic_ncols=True)

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        if self.bar is not None:
            if note:
                self.bar.set_postfix_str(note, refresh=False)
            if n:
                self.bar.update(n)
            else:
                self.bar.refresh()
            return
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            if self.total is not None:
                what = f"{self.done}/{self.total} {self.unit}" + (f", {note}" if note else "")
            else:  # a count with no total says little: the note (what is being done) is the news
                what = note or f"{self.done} {self.unit}"
            self.log(f"{self.desc}: {what} ({now - self.t0:.0f} s)")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
