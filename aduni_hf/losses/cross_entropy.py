"""Plain cross-entropy on one view: the CE row of the paper's Table 1."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .registry import LOSSES


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
        rows, num_images = logits.shape[0], labels.shape[0]
        if logits.ndim != 2 or logits.shape[1] != self.num_classes or rows % max(num_images, 1):
            raise ValueError(
                f"expected logits (V*N, {self.num_classes}) for N={num_images}, got {tuple(logits.shape)}"
            )
        return F.cross_entropy(logits.float(), labels.repeat(rows // num_images))

    def from_outputs(self, outputs, labels: Tensor, alpha: float) -> Tensor:
        return self(outputs.logits, labels)
