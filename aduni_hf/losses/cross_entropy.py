"""Plain cross-entropy on one view: the CE row of the paper's Table 1."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .method_loss import LossOutput, MethodLoss, view_major_labels


class CrossEntropyLoss(MethodLoss):
    """Cross-entropy of the classifier logits, averaged over every view of the batch.

    Shapes: logits (V*N, C) view-major, labels (N,) -> ().
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return self.compute(logits, labels).loss

    def compute(self, logits: Tensor, labels: Tensor) -> LossOutput:
        row_labels = view_major_labels(logits, labels, self.num_classes)
        per_row = F.cross_entropy(logits.float(), row_labels, reduction="none")
        return LossOutput(per_row.mean(), per_row.detach(), row_labels)

    def from_outputs(self, outputs, labels: Tensor) -> LossOutput:
        return self.compute(outputs.logits, labels)
