"""One registry convention for every set of named things a setting picks from: worlds, methods, agents, suites.

A :class:`Registry` maps names to objects in registration order. Looking up a name it does not hold raises the same
one-line :class:`~seqjepa.options.ConfigError` everywhere, naming the setting, the value and what is allowed, so a
typo in ``world.env``, ``model.method``, ``world.agent`` or ``eval.suites`` reads alike. The registry lives in the
layer that knows its objects (envs, seqjepa.baselines, agents, eval); this module sits with the options at the
bottom, so each of them can import it.

>>> colours = Registry("colour", "paint.colour")
>>> colours.register("red", (255, 0, 0))
(255, 0, 0)
>>> colours.register("blue", (0, 0, 255))
(0, 0, 255)
>>> colours["red"], colours.names(), "green" in colours
((255, 0, 0), ('red', 'blue'), False)
>>> colours["green"]
Traceback (most recent call last):
...
seqjepa.options.ConfigError: paint.colour: unknown colour 'green'; allowed: red, blue
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from seqjepa.options import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> objects of one ``kind``, chosen by the setting ``setting`` (e.g. ``"method"``, ``"model.method"``).

    Read like a mapping (``reg[name]``, ``name in reg``, iteration over names in registration order, ``items()``),
    except that an unknown name raises :class:`ConfigError` rather than KeyError: a name reaching a registry came
    from a setting, and the person who typed it needs to see what is allowed.
    """

    def __init__(self, kind: str, setting: str, entries: Mapping[str, T] | None = None):
        self.kind, self.setting = kind, setting
        self._entries: dict[str, T] = {}
        for name, obj in (entries or {}).items():
            self.register(name, obj)

    def register(self, name: str, obj: T) -> T:
        """Add ``obj`` under ``name`` and return it; registering a name again replaces its object in place (a
        plug-in module imported twice, or a world redefined in a notebook)."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind} registry: a name must be a non-empty string, got {name!r}")
        self._entries[name] = obj
        return obj

    def lookup(self, name: str, setting: str | None = None) -> T:
        """The object registered as ``name``; ConfigError naming ``setting`` (default: the registry's) if none."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: an unhashable value read from a config file
            raise self.unknown(name, setting) from None

    __getitem__ = lookup

    def unknown(self, name: object, setting: str | None = None, extra: str = "") -> ConfigError:
        """The error for a name this registry does not hold; ``extra``: more allowed values, listed first."""
        allowed = ", ".join([*([extra] if extra else []), *self._entries]) or "(none registered)"
        return ConfigError(f"{setting or self.setting}: unknown {self.kind} {name!r}; allowed: {allowed}")

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def describe(self) -> str:
        """The names as a help string lists them: ``a, b, c``."""
        return ", ".join(self._entries)

    def items(self):
        return self._entries.items()

    def values(self):
        return self._entries.values()

    def get(self, name: str, default: T | None = None) -> T | None:
        return self._entries.get(name, default)

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._entries
        except TypeError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))  # a snapshot: registering while iterating is not an error

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.setting!r}, [{self.describe()}])"


__all__ = ["Registry"]
