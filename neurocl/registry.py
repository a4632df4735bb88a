"""The one registry mechanism: named things of one kind (rules, model kinds, datasets, figures,
executors), each registered where it is defined and looked up with a did-you-mean.

A registry knows the modules that define its entries and imports them on the first lookup, so
that listing the rules does not import every rule at start-up, and a new entry is one module
plus its registration (and its module's name in that list)::

    RULES = Registry("rule", modules=("neurocl.rules.consolidation", ...))

    @RULES.register            # a class with a ``name``
    class EWC(Rule): ...

    RULES.register(spec, name="mnist-t10k")   # any object under a name
    RULES.lookup("ecw")        # UnknownName: unknown rule 'ecw' (did you mean 'ewc'?)
    RULES.get("ecw")           # None, as any mapping
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownName(KeyError):
    """A name no entry of the registry has; the message lists the closest ones."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class Registry(Mapping, Generic[T]):
    """A mapping from names to entries of one kind, filled by the modules that define them."""

    def __init__(self, kind: str, modules: tuple[str, ...] = ()):
        self.kind = kind
        self.modules = modules
        self._entries: dict[str, T] = {}
        self._loaded = not modules

    def register(self, obj: T | None = None, *, name: str | None = None) -> Any:
        """Add ``obj`` under ``name`` (default: its ``name`` attribute); usable as a decorator.

        Registering another object under a taken name is an error (two rules, say, that
        would silently replace each other); registering the same object again is not.
        """
        if obj is None:
            return lambda o: self.register(o, name=name)
        key = name if name is not None else getattr(obj, "name")
        old = self._entries.get(key)
        if old is not None and old is not obj and old != obj:
            raise ValueError(f"{self.kind} '{key}' is registered twice")
        self._entries[key] = obj
        return obj

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True  # before importing: a module may look itself up while loading
            for module in self.modules:
                importlib.import_module(module)

    def lookup(self, name: str) -> T:
        """The entry called ``name``; :class:`UnknownName` with a did-you-mean if there is none."""
        self._load()
        if name in self._entries:
            return self._entries[name]
        raise UnknownName(self.unknown(name))

    def unknown(self, name: Any) -> str:
        """The message for a name that is not registered."""
        self._load()
        close = difflib.get_close_matches(str(name), list(self._entries), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(self._entries))})"
        return f"unknown {self.kind} '{name}'{hint}"

    def names(self) -> list[str]:
        self._load()
        return list(self._entries)

    def __getitem__(self, name: str) -> T:
        return self.lookup(name)

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._entries)})"

