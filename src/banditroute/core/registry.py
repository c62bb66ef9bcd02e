"""Name -> entry tables: one shape for every registry (policies, environments, datasets, embedding
models, off-policy estimators, LLM routing data).

A :class:`Registry` is a ``dict`` (iterate it, test membership, read ``entries[name]``) that knows
what it holds, so an unknown name is one :class:`~banditroute.core.validation.InputError` worded the
same everywhere, and a name can be added only once — by the module that owns the entry
(:meth:`Registry.register`), which is how a higher layer (e.g. ``twostage``) adds a policy without the
lower layer naming it. :func:`resolve` imports a ``"module:attribute"`` target lazily, so a
registry can list entries whose dependencies are optional extras.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from typing import Any, TypeVar

from banditroute.core.validation import InputError

E = TypeVar("E")


class Registry(dict[str, E]):
    """Entries by name, for one ``kind`` of thing (used in error messages)."""

    def __init__(self, kind: str, entries: Mapping[str, E] | None = None) -> None:
        super().__init__(entries or {})
        self.kind = kind

    def lookup(self, name: str) -> E:
        """The entry registered as ``name``; an unknown name lists the known ones."""
        if name not in self:
            raise InputError(f"unknown {self.kind} {name!r}; known: {', '.join(self)}")
        return self[name]

    def register(self, name: str, entry: E) -> E:
        """Add ``entry`` under ``name``; a name already taken is a programming error."""
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self[name] = entry
        return entry

    def names(self) -> list[str]:
        return list(self)


def resolve(target: str) -> Any:
    """Import ``"package.module:attribute"`` and return the attribute."""
    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr)
