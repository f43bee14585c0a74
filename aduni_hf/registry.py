"""One idiom for everything a recipe chooses by name: methods, samplers, data sets, augmentations, alpha schedules.

A `Registry` maps names to objects (classes or functions). An entry registers itself with a decorator in its own
file, so adding a method, a sampler or a data set is one new file plus its import in the package that holds the
registry. Scripts and argument dataclasses take their choices from the registry (`names()`), never from a list of
their own.

```python
SAMPLERS = Registry("sampler")

@SAMPLERS.register("none")
class RandomEpochSampler(EpochSampler): ...

SAMPLERS["none"]      # the class; an unknown name raises ValueError listing the choices
SAMPLERS.names()      # ['none', ...]
```
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (`kind` names it in messages, e.g. "method")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: make the decorated object available as `name`; a name taken twice raises `KeyError`."""

        def wrap(entry: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is already registered ({self._entries[name]!r})")
            self._entries[name] = entry
            return entry

        return wrap

    def unregister(self, name: str) -> T:
        """Remove `name` (an entry registered for a while, e.g. by a test); returns its entry."""
        return self._entries.pop(name)

    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {self.names()}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def check(self, name: str, field: str) -> None:
        """Raise `ValueError` naming the recipe `field` when `name` is not registered."""
        if name not in self._entries:
            raise ValueError(f"{field}={name!r} is unknown; choose one of {self.names()}")

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


__all__ = ["Registry"]
