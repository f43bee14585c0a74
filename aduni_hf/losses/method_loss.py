"""What every training loss gives the trainer: `MethodLoss`, the interface, and `LossOutput`, its result.

A loss of a method takes the model's output of a view-major batch (`from_outputs`), or runs the model itself
(`forward_views`, for a loss with its own encoder such as PaCo's momentum key encoder: `own_forward = True`).
Either way it returns a `LossOutput`: the scalar to back-propagate and what the logs need (every row's loss and
class, and the labels of the contrast set), so that nothing is read back from attributes set during forward.

A loss that changes with training (AduC's alpha, LDAM's deferred re-weighting) learns where training is through
one channel, `set_epoch(epoch, num_epochs)`, called at every epoch start by `AlphaScheduleCallback`, and says
what it is at in `epoch_logs()` (AduC: `{"alpha": ...}`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn


@dataclass
class LossOutput:
    """One training loss computation.

    Attributes:
        loss: () the scalar to back-propagate.
        row_losses: (R,) detached, the loss of every anchor or sample (before any class weighting), for the
            per-class training loss of the paper's Fig. 2.
        row_labels: (R,) the class of every row.
        contrast_labels: (M,) the classes of the samples the anchors were contrasted with (the batch's views for
            AduC and SupCon, the batch and the queue for PaCo); None for losses without a contrast set.
        logits: (B, C) the classifier logits of the first view, for losses that run the model themselves; None
            when the trainer ran it.
    """

    loss: Tensor
    row_losses: Tensor
    row_labels: Tensor
    contrast_labels: Tensor | None = None
    logits: Tensor | None = None


class MethodLoss(nn.Module):
    """Base class of the losses methods train with (`aduni_hf.methods`): the interface `AdUniTrainer` calls."""

    # True: the loss runs the model itself on the views (`forward_views`), and cannot be computed from the model
    # output of a view-major batch, so `contrast_chunk_size` cannot split it.
    own_forward: ClassVar[bool] = False

    def from_outputs(self, outputs, labels: Tensor) -> LossOutput:
        """The loss of a model output (`.features`, `.logits`, V*N view-major rows) for the N image `labels`."""
        raise NotImplementedError(
            f"{type(self).__name__} computes its loss from its own forward: forward_views"
        )

    def forward_views(self, model: nn.Module, pixel_values: Tensor, labels: Tensor) -> LossOutput:
        """A training step's loss on (B, V, 3, H, W) views that runs `model` itself (`own_forward` losses)."""
        raise NotImplementedError(f"{type(self).__name__} takes the model's output: from_outputs")

    def set_epoch(self, epoch: int, num_epochs: int) -> None:
        """Training is at (0-based) `epoch` of `num_epochs`; a loss without epoch-dependent state ignores it."""

    def epoch_logs(self) -> dict[str, float]:
        """The epoch-dependent values to log with the training loss (e.g. `{"alpha": 0.95}`)."""
        return {}


def view_major_labels(logits: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """The label of every row of view-major `logits` (V*N, C) for the N image `labels`: row r is image r % N.

    Raises a ValueError naming the shapes when the logits are not V*N rows of `num_classes` columns.
    """
    rows, num_images = logits.shape[0], labels.shape[0]
    if logits.ndim != 2 or logits.shape[1] != num_classes or num_images == 0 or rows % num_images:
        raise ValueError(
            f"expected logits (V*N, {num_classes}) for N={num_images}, got {tuple(logits.shape)}"
        )
    return labels.repeat(rows // num_images)
