"""Registry of training losses keyed by method name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

LOSSES: dict[str, type[nn.Module]] = {}


def register_loss(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a loss available as `method: <name>` in a recipe."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in LOSSES:
            raise KeyError(f"loss {name!r} is already registered ({LOSSES[name].__qualname__})")
        LOSSES[name] = cls
        return cls

    return wrap


def build_loss(name: str, **kwargs: object) -> nn.Module:
    """Instantiate the loss registered as `name`; unknown names list the valid choices."""
    if name not in LOSSES:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name](**kwargs)
