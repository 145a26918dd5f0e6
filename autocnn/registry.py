"""One small name -> object registry, instantiated once per concept (blocks, attention, presets, ...).

Registries are plain objects that tests can list; duplicate names raise so two modules can never
silently shadow each other.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from autocnn.errors import AutocnnError

T = TypeVar("T")


class UnknownNameError(AutocnnError, ValueError):
    """A name that is not registered; the message lists the valid choices."""


class Registry(Generic[T]):
    """Names in registration order. With `catalog`, only names listed there may register: the layer
    registries implement the torch-free names of `autocnn.catalog`, so the two cannot drift apart."""

    def __init__(self, kind: str, catalog: "Registry | None" = None) -> None:
        self.kind = kind
        self._catalog = catalog
        self._items: dict[str, T] = {}

    @classmethod
    def implementing(cls, catalog: "Registry") -> "Registry":
        """An empty registry of the same kind that accepts only the names `catalog` lists."""
        return cls(catalog.kind, catalog)

    def register(self, name: str, obj: T | None = None):
        """Register `obj` under `name`; without `obj`, return a decorator."""
        if obj is not None:
            self._add(name, obj)
            return obj

        def decorator(item: T) -> T:
            self._add(name, item)
            return item

        return decorator

    def _add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if self._catalog is not None and name not in self._catalog:
            raise ValueError(f"{self.kind} {name!r} is not in autocnn.catalog; list it there first")
        self._items[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; choose from {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self):
        return self._items.items()


Factory = Callable[..., T]
