"""Balanced Softmax: cross-entropy of the logits shifted by the log class prior, a Table 1 baseline.

Reference: Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual Recognition", NeurIPS 2020, and the released
`balanced_softmax_loss` (jiawei-ren/BalancedMetaSoftmax-Classification, loss/BalancedSoftmaxLoss.py). This is the
one-stage "Balanced Softmax (end-to-end)" variant of that repository: the whole network trains with this loss and
instance-balanced sampling. It is not BALMS: there is no decoupled second stage and no Meta Sampler.

For a sample of class y with logits l (C,) and training class counts n (C,):

    L = -log softmax(l + log pi)_y,    pi_c = n_c / N,   N = sum_c n_c

which equals the cross-entropy of l + log n_c (a shift common to all classes cancels in the softmax), so only the
ratios between the counts matter and very large counts are harmless. The shift applies in training only: the
model's logits, and so every prediction and the pipeline, stay the raw logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .class_prior import log_class_prior
from .method_loss import LossOutput, MethodLoss, view_major_labels


class BalancedSoftmaxLoss(MethodLoss):
    """Cross-entropy of `logits + log(prior)`, averaged over every view of the batch (Ren et al. 2020).

    Args:
        num_classes: number of classes C.
        class_counts: training count of every class (non-negative, positive sum). The prior is
            log(n_c / N + 1e-9), as AduC's logit adjustment computes it: a class with no training image gets
            log(1e-9) = -20.7 rather than -inf, so the loss stays finite (the official code would add log 0).

    Shapes: logits (V*N, C) view-major, labels (N,) -> (), the mean over the V*N rows, computed in float32
    (float64 inputs stay float64), also under bf16/fp16 autocast.
    """

    def __init__(self, num_classes: int, class_counts: Sequence[int] | Tensor) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        log_prior = log_class_prior(class_counts, num_classes)
        self.register_buffer("log_prior", log_prior, persistent=False)  # (C,)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return self.compute(logits, labels).loss

    def compute(self, logits: Tensor, labels: Tensor) -> LossOutput:
        row_labels = view_major_labels(logits, labels, self.num_classes)
        dtype = torch.promote_types(logits.dtype, torch.float32)  # float32, or float64 for gradcheck
        with torch.autocast(device_type=logits.device.type, enabled=False):
            adjusted = logits.to(dtype) + self.log_prior.to(dtype)  # (V*N, C)
            per_row = F.cross_entropy(adjusted, row_labels, reduction="none")
            return LossOutput(per_row.mean(), per_row.detach(), row_labels)

    def from_outputs(self, outputs, labels: Tensor) -> LossOutput:
        return self.compute(outputs.logits, labels)
