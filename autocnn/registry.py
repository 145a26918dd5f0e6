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
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

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
