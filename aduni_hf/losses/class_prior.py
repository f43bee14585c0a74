"""The training class prior, checked once: the logit adjustment of AduC, PaCo and Balanced Softmax."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

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
