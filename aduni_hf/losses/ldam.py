"""LDAM-DRW: label-distribution-aware margins on a cosine classifier, with deferred re-weighting.

Reference: Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss", NeurIPS 2019,
and the released code (kaidic/LDAM-DRW: `LDAMLoss` in losses.py, the `DRW` train rule in cifar_train.py).
For a sample of class y with cosine logits z (C,) in [-1, 1] and training class counts n (C,):

    m_c   = max_margin * (n_min / n_c)^(1/4)        (K / n_c^(1/4), K so that the largest margin is max_margin)
    z'_c  = s * (z_c - m_y [c == y])                 (margin on the true class only, then every logit times s)
    L     = cross-entropy(z', y, weight=w)            (w = None before the DRW switch)

Deferred re-weighting: before the switch every class weighs 1 (the official `beta = 0`); from the switch on
w_c = (1 - beta) / (1 - beta^n_c) (the effective-number weights, beta = 0.9999), normalised so that
sum_c w_c = C. The weighted mean is PyTorch's: sum_i w_{y_i} L_i / sum_i w_{y_i} over the batch, as the official
`F.cross_entropy(..., weight=...)`. The official CIFAR schedule switches at epoch 160 of 200, its first learning
rate decay; a cosine schedule has no such step, so the switch here is at the fraction `drw_start` of training
(0.8: epoch 320 of 400, the same 160/200 ratio).

LDAM needs the normalised classifier of the official code (`NormedLinear`, cosine logits in [-1, 1]): the
`ldam_drw` method (aduni_hf/methods/ldam_drw.py) trains it with `AdUniConfig.classifier_type = "cosine"`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .class_prior import checked_class_counts
from .method_loss import LossOutput, MethodLoss, view_major_labels


def ldam_margins(class_counts: Sequence[int] | Tensor, max_margin: float = 0.5) -> Tensor:
    """(C,) float64 margins max_margin * (n_min / n_c)^(1/4), n_min the smallest positive count. A class with no
    training image is treated as the rarest class: it gets the largest margin, max_margin."""
    counts = _counts(class_counts)
    present = counts > 0
    rarest = counts[present].min()
    counts = torch.where(present, counts, rarest)
    return max_margin * (rarest / counts) ** 0.25


def drw_class_weights(class_counts: Sequence[int] | Tensor, beta: float = 0.9999) -> Tensor:
    """(C,) float64 class weights (1 - beta) / (1 - beta^n_c), normalised to sum to C (Cui et al.'s effective
    number, as LDAM-DRW uses it). A class with no training image weighs as the rarest class (the formula is
    infinite at n_c = 0); it is never a target, so that choice only enters the normalisation."""
    counts = _counts(class_counts)
    present = counts > 0
    counts = torch.where(present, counts, counts[present].min())
    weights = (1.0 - beta) / (1.0 - beta**counts)
    return weights / weights.sum() * len(weights)


def _counts(class_counts: Sequence[int] | Tensor) -> Tensor:
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    if counts.ndim != 1 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(f"class_counts must be non-negative counts with a positive sum, got {class_counts}")
    return counts


class LDAMDRWLoss(MethodLoss):
    """LDAM loss with deferred re-weighting (Cao et al. 2019) on the cosine logits of the model.

    Args:
        num_classes: number of classes C.
        class_counts: training count of every class (non-negative, positive sum); margins and DRW weights come
            from it (see `ldam_margins` and `drw_class_weights` for a class with no image).
        max_margin: the margin of the rarest class (official 0.5).
        ldam_scale: s, the factor of every logit after the margin (official 30).
        drw_beta: beta of the effective-number weights after the switch (official 0.9999), in [0, 1).
        drw_start: fraction of training after which DRW weights apply, in [0, 1] (0.8: from epoch 320 of 400;
            1 never re-weights, 0 always does).

    The loss learns where training is through `set_epoch(epoch, num_epochs)`; until the first call it is at
    epoch 0 (before the switch, unless `drw_start` is 0).

    Shapes: logits (V*N, C) view-major cosine similarities in [-1, 1], labels (N,) -> (), the weighted mean over
    the V*N rows, computed in float32 (float64 inputs stay float64), also under bf16/fp16 autocast.
    """

    def __init__(
        self,
        num_classes: int,
        class_counts: Sequence[int] | Tensor,
        max_margin: float = 0.5,
        ldam_scale: float = 30.0,
        drw_beta: float = 0.9999,
        drw_start: float = 0.8,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        counts = checked_class_counts(class_counts, num_classes)
        if not max_margin >= 0:
            raise ValueError(f"max_margin must be >= 0, got {max_margin}")
        if not ldam_scale > 0:
            raise ValueError(f"ldam_scale must be > 0, got {ldam_scale}")
        if not 0 <= drw_beta < 1:
            raise ValueError(f"drw_beta must be in [0, 1), got {drw_beta}")
        if not 0 <= drw_start <= 1:
            raise ValueError(f"drw_start must be in [0, 1] (a fraction of training), got {drw_start}")
        self.num_classes = num_classes
        self.max_margin = float(max_margin)
        self.scale = float(ldam_scale)
        self.drw_beta = float(drw_beta)
        self.drw_start = float(drw_start)
        self.epoch = 0
        self.num_epochs: int | None = None
        # (C,) each, float32 as the logits they meet (float64 in the formulas)
        self.register_buffer("margins", ldam_margins(counts, max_margin).float(), persistent=False)
        self.register_buffer("drw_weights", drw_class_weights(counts, drw_beta).float(), persistent=False)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, max_margin={self.max_margin}, ldam_scale={self.scale}, "
            f"drw_beta={self.drw_beta}, drw_start={self.drw_start}"
        )

    def set_epoch(self, epoch: int, num_epochs: int) -> None:
        """Tell the loss that training is at (0-based) `epoch` of `num_epochs`; DRW weights apply from epoch
        `drw_start_epoch(num_epochs)` on."""
        if not num_epochs >= 1:
            raise ValueError(f"num_epochs must be >= 1, got {num_epochs}")
        if not epoch >= 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch, self.num_epochs = epoch, num_epochs

    def drw_start_epoch(self, num_epochs: int) -> int:
        """The first epoch with DRW weights: ceil(drw_start * num_epochs) (320 of 400, 160 of 200). Rounded to
        1e-6 first, so that 0.7 * 10 = 7.000000000000001 gives 7."""
        return math.ceil(round(self.drw_start * num_epochs, 6))

    @property
    def drw_active(self) -> bool:
        if self.num_epochs is None:  # no set_epoch yet: epoch 0
            return self.drw_start == 0
        return self.epoch >= self.drw_start_epoch(self.num_epochs)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return self.compute(logits, labels).loss

    def compute(self, logits: Tensor, labels: Tensor) -> LossOutput:
        row_labels = view_major_labels(logits, labels, self.num_classes)
        dtype = torch.promote_types(logits.dtype, torch.float32)  # float32, or float64 for gradcheck
        with torch.autocast(device_type=logits.device.type, enabled=False):
            true_class = F.one_hot(row_labels, self.num_classes).to(dtype)  # (V*N, C)
            margin = self.margins.to(dtype)[row_labels]  # (V*N,) m_y of every row
            adjusted = self.scale * (logits.to(dtype) - true_class * margin[:, None])  # (V*N, C)
            weight = self.drw_weights.to(dtype) if self.drw_active else None
            per_row = F.cross_entropy(adjusted, row_labels, reduction="none")
            if weight is None:
                loss = per_row.mean()
            else:
                row_weights = weight[row_labels]  # F.cross_entropy's weighted mean: sum w_y l / sum w_y
                loss = (row_weights * per_row).sum() / row_weights.sum()
            return LossOutput(loss, per_row.detach(), row_labels)  # rows unweighted, for the per-class logs

    def from_outputs(self, outputs, labels: Tensor) -> LossOutput:
        """The loss of a model output (`.logits`, the cosine classifier's) of a view-major batch."""
        return self.compute(outputs.logits, labels)
