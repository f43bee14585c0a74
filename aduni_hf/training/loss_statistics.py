"""What the training logs add to the loss, in the paper's terms: each class's loss (Fig. 2) and the class make-up of
the contrast sets (Sec. 2.3's memory argument), tallied from the `LossOutput` of every step."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from ..losses import LossOutput


class LossStatistics:
    """Per-class loss and contrast-set counts over one logging period; `pop_logs` returns them and starts anew.

    Args:
        class_names: id -> name of every class.
        train_labels: the training split's labels; the majority and rarest classes are its most and least frequent.
    """

    def __init__(self, class_names: Mapping[int, str], train_labels: Sequence[int]) -> None:
        self.class_names = dict(class_names)
        self.num_classes = len(self.class_names)
        counts = torch.bincount(torch.as_tensor(list(train_labels)), minlength=self.num_classes).double()
        self.majority = int(counts.argmax())
        self.rarest = int(counts.masked_fill(counts == 0, math.inf).argmin())
        self._reset()

    def _reset(self) -> None:
        self.loss_sum: torch.Tensor | None = (
            None  # per-class sum and count of the row losses, on their device
        )
        self.loss_count: torch.Tensor | None = None
        self.contrast_counts: torch.Tensor | None = None  # summed class counts of the contrast sets
        self.contrast_sets = 0

    def add(self, output: LossOutput) -> None:
        """Tally one loss computation; no host synchronisation (the tallies stay on the loss's device)."""
        values, labels = output.row_losses, output.row_labels
        sums = torch.zeros(self.num_classes, dtype=torch.float64, device=values.device)
        sums.index_add_(0, labels, values.double())
        counts = torch.bincount(labels, minlength=self.num_classes).double()
        if self.loss_sum is None:
            self.loss_sum, self.loss_count = sums, counts
        else:
            self.loss_sum += sums
            self.loss_count += counts
        if output.contrast_labels is not None:
            seen = torch.bincount(output.contrast_labels.reshape(-1), minlength=self.num_classes).double()
            self.contrast_counts = seen if self.contrast_counts is None else self.contrast_counts + seen
            self.contrast_sets += 1

    def pop_logs(self) -> dict[str, float]:
        """`class_loss_<class>`: the mean loss of each class's anchors (or samples) over the period; with a contrast
        set, the mean number of samples of the majority class, of a minority class and of the rarest class in one
        contrast set (`contrast_majority`, `contrast_minority`, `contrast_rarest`: 70 vs 14 per AdUni batch, 795 vs
        68 in PaCo's queue on APTOS2019 in the paper)."""
        logs: dict[str, float] = {}
        if self.contrast_counts is not None:
            mean = self.contrast_counts.cpu() / self.contrast_sets
            minority = torch.cat([mean[: self.majority], mean[self.majority + 1 :]])
            logs.update(
                contrast_majority=float(mean[self.majority]),
                contrast_minority=float(minority.mean()),
                contrast_rarest=float(mean[self.rarest]),
            )
        if self.loss_sum is not None:
            sums, counts = self.loss_sum.cpu(), self.loss_count.cpu()
            logs.update(
                {
                    f"class_loss_{self.class_names.get(c, c)}": float(sums[c] / counts[c])
                    for c in range(self.num_classes)
                    if counts[c] > 0
                }
            )
        self._reset()
        return logs
