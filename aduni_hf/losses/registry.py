"""The methods a recipe can name (`method: aduni`), each a loss registered with `@LOSSES.register(name)`."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..registry import Registry

LOSSES: Registry[type[nn.Module]] = Registry("method")


def build_loss(
    method: str | type[nn.Module], num_classes: int, class_counts: Sequence[int], /, **options: Any
) -> nn.Module:
    """The loss registered as `method` (or the loss class `method`), for `num_classes` classes with the training
    split's `class_counts`.

    A loss takes the options its constructor names (`temperature`, `beta`, ...) and ignores the rest, so one
    recipe can hold the fields of every method; `class_counts` reaches the losses that take it.
    """
    loss_class = LOSSES[method] if isinstance(method, str) else method
    accepted = inspect.signature(loss_class).parameters
    kwargs = {name: value for name, value in options.items() if name in accepted}
    if "class_counts" in accepted:
        kwargs["class_counts"] = class_counts
    return loss_class(num_classes=num_classes, **kwargs)


def view_major_labels(logits: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """The label of every row of view-major `logits` (V*N, C) for the N image `labels`: row r is image r % N.

    Raises a ValueError naming the shapes when the logits are not V*N rows of `num_classes` columns.
    """
    rows, num_images = logits.shape[0], labels.shape[0]
    if logits.ndim != 2 or logits.shape[1] != num_classes or num_images == 0 or rows % num_images:
        raise ValueError(f"expected logits (V*N, {num_classes}) for N={num_images}, got {tuple(logits.shape)}")
    return labels.repeat(rows // num_images)


# The official AduC and PaCo code add 1e-9 inside log(prior) (docs/method.md, "The AduC loss").
PRIOR_EPS = 1e-9


def checked_class_counts(class_counts: Sequence[int] | Tensor, num_classes: int) -> Tensor:
    """`class_counts` as float64 (C,), or a ValueError: C non-negative counts with a positive sum."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    if counts.shape != (num_classes,) or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(
            f"class_counts must be {num_classes} non-negative counts with a positive sum, got {class_counts}"
        )
    return counts


def log_class_prior(class_counts: Sequence[int] | Tensor, num_classes: int) -> Tensor:
    """log(n_c / N + 1e-9) as float32 (C,): the logit adjustment of AduC, PaCo and Balanced Softmax."""
    counts = checked_class_counts(class_counts, num_classes)
    return torch.log(counts / counts.sum() + PRIOR_EPS).float()
