"""Plain cross-entropy on one view: the CE row of the paper's Table 1."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .registry import LOSSES, view_major_labels


@LOSSES.register("ce")
class CrossEntropyLoss(nn.Module):
    """Cross-entropy of the classifier logits, averaged over every view of the batch.

    Shapes: logits (V*N, C) view-major, labels (N,) -> ().
    """

    num_views = 1
    uses_alpha = False

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        row_labels = view_major_labels(logits, labels, self.num_classes)
        per_row = F.cross_entropy(logits.float(), row_labels, reduction="none")
        self.row_losses = (per_row.detach(), row_labels)  # for the per-class logs
        return per_row.mean()

    def from_outputs(self, outputs, labels: Tensor, alpha: float) -> Tensor:
        return self(outputs.logits, labels)
