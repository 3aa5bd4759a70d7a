"""One registry type for every name -> object table of the suite (pools, models, recipes, datasets, claims, ...)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Names mapped to objects, unique, with errors that list the valid names.

    ``kind`` names what is registered ("pool", "model") in messages; ``error`` is the exception type raised for an
    unknown name (``KeyError`` by default; a package may use its own ``ValueError`` subclass).
    """

    def __init__(self, kind: str, *, error: type[Exception] = KeyError) -> None:
        self.kind = kind
        self.error = error
        self._items: dict[str, T] = {}

    def add(self, name: str, obj: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj
        return obj

    def register(self, *names: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``names`` (default: its ``__name__``)."""

        def wrap(obj: T) -> T:
            for name in names or (obj.__name__,):  # type: ignore[attr-defined]
                self.add(name, obj)
            return obj

        return wrap

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise self.error(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())
