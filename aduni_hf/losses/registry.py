"""The methods a recipe can name (`method: aduni`), each a loss registered with `@LOSSES.register(name)`."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..registry import Registry

LOSSES: Registry[type[nn.Module]] = Registry("method")


def build_loss(method: str, num_classes: int, class_counts: Sequence[int], /, **options: Any) -> nn.Module:
    """The loss registered as `method`, for `num_classes` classes with the training split's `class_counts`.

    A loss takes the options its constructor names (`temperature`, `beta`, ...) and ignores the rest, so one
    recipe can hold the fields of every method; `class_counts` reaches the losses that take it.
    """
    loss_class = LOSSES[method]
    accepted = inspect.signature(loss_class).parameters
    kwargs = {name: value for name, value in options.items() if name in accepted}
    if "class_counts" in accepted:
        kwargs["class_counts"] = class_counts
    return loss_class(num_classes=num_classes, **kwargs)
