"""The supervised contrastive loss (SupCon, `L_out`), as the official code computes it.

Reference: Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, Eq. 2 (`L_out`), and the released
`SupConLoss` (HobbitLong/SupContrast, losses.py, `contrast_mode='all'`), which CICL's first stage uses unchanged
(YMarrakchi/CICL, main_supcon.py: T = 0.1, T_b = 0.07 left at its default). For every anchor i of the V*N
augmented samples:

    log p_ij = z_i.z_j / T - log sum_{a != i} exp(z_i.z_a / T)          (self out of the denominator only)
    L_i      = -(T / T_b) * sum_{j in P(i)} log p_ij / max(|P(i)|, 1)

with P(i) the other samples of anchor i's class (its other views included, positives stay in the denominator),
and the loss the plain mean of L_i over all V*N anchors. This is AduC (docs/method.md, "The AduC loss") with the
classifier columns removed: no classifier term, no logit adjustment, normalised by |P(i)| instead of
beta + alpha |P(i)|. An anchor without a positive (one view and a class alone in the batch) contributes 0, as
after the official fix of SupContrast issue #141 (its normaliser is clamped to 1). T_b only rescales the loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..distributed import gather_contrast_set
from .method_loss import LossOutput, MethodLoss


def supcon_per_anchor(
    features: Tensor,
    labels: Tensor,
    temperature: float,
    contrast_features: Tensor | None = None,
    contrast_labels: Tensor | None = None,
    anchor_offset: int = 0,
) -> Tensor:
    """Per-anchor SupCon loss before the T/T_b scale, in the dtype of its inputs.

    Shapes (m anchors, M samples in the contrast set):
        features: (m, d) L2-normalised projections of the anchors.
        labels: (m,) their class indices.
        contrast_features, contrast_labels: (M, d), (M,) the samples every anchor is contrasted with; default
            the anchors themselves. Anchor i is sample `anchor_offset + i` of the contrast set.
        returns: (m,) -sum_{j in P(i)} log p_ij / max(|P(i)|, 1).
    """
    if contrast_features is None:
        contrast_features, contrast_labels = features, labels
    m = features.shape[0]
    anchors = torch.arange(m, device=features.device)
    self_mask = torch.zeros(m, contrast_features.shape[0], dtype=torch.bool, device=features.device)
    self_mask[anchors, anchors + anchor_offset] = True  # (m, M)
    similarity = (features @ contrast_features.T) / temperature  # (m, M)
    similarity = similarity.masked_fill(self_mask, float("-inf"))  # self is not in the denominator
    log_prob = similarity - torch.logsumexp(similarity, dim=1, keepdim=True)  # (m, M)
    log_prob = log_prob.masked_fill(self_mask, 0.0)  # -inf * 0 would be NaN
    positives = (labels[:, None] == contrast_labels[None, :]) & ~self_mask  # (m, M): P(i)
    count = positives.sum(dim=1).clamp(min=1).to(log_prob.dtype)  # (m,), SupContrast #141
    return -(positives.to(log_prob.dtype) * log_prob).sum(dim=1) / count


class SupConLoss(MethodLoss):
    """SupCon `L_out` over every view of the batch (Khosla et al. 2020; the loss of CICL's first stage).

    Not a method of its own: the `cicl` method (aduni_hf/methods/cicl.py) trains its first stage with it.

    Args:
        num_classes: number of classes C (only for the contrast-set logs; the loss has no classifier term).
        temperature: T of the similarities (CICL 0.1).
        base_temperature: T_b; the loss is multiplied by T / T_b (official 0.07, i.e. x1.4286 at T = 0.1).
        gather_distributed: under several processes, contrast this rank's anchors with the views of the global
            batch (all-gathered with gradient), as one process holding the whole batch would. False keeps the
            contrast set per process.

    Shapes:
        features: (V*N, d) L2-normalised, view-major: rows 0..N-1 are view 1 of the N images, rows N..2N-1
            view 2, and so on.
        labels: (N,) int64.
        returns: () mean over the V*N anchors, computed in float32 (float64 inputs stay float64), also under
            bf16/fp16 autocast.
    """

    def __init__(
        self,
        num_classes: int,
        temperature: float = 0.1,
        base_temperature: float = 0.07,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not base_temperature > 0:
            raise ValueError(f"base_temperature must be > 0, got {base_temperature}")
        self.num_classes = num_classes
        self.temperature = float(temperature)
        self.base_temperature = float(base_temperature)
        self.gather_distributed = gather_distributed

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, base_temperature={self.base_temperature}"

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        return self.compute(features, labels).loss

    def compute(self, features: Tensor, labels: Tensor) -> LossOutput:
        if features.ndim != 2 or labels.ndim != 1:
            raise ValueError(
                f"expected features (V*N, d) and labels (N,), got {tuple(features.shape)} and {tuple(labels.shape)}"
            )
        rows, num_images = features.shape[0], labels.shape[0]
        if num_images == 0 or rows % num_images:
            raise ValueError(
                f"expected V*N feature rows for N={num_images} labels, got {tuple(features.shape)}"
            )
        dtype = torch.promote_types(features.dtype, torch.float32)  # float32, or float64 for gradcheck
        with torch.autocast(device_type=features.device.type, enabled=False):
            features = features.to(dtype)
            row_labels = labels.repeat(rows // num_images)  # view-major: label of row r is labels[r % N]
            contrast_features, contrast_labels, offset = gather_contrast_set(
                features, row_labels, enabled=self.gather_distributed
            )
            per_anchor = supcon_per_anchor(
                features,
                row_labels,
                self.temperature,
                contrast_features=contrast_features,
                contrast_labels=contrast_labels,
                anchor_offset=offset,
            )
            per_anchor = per_anchor * (self.temperature / self.base_temperature)
            return LossOutput(per_anchor.mean(), per_anchor.detach(), row_labels, contrast_labels.detach())

    def from_outputs(self, outputs, labels: Tensor) -> LossOutput:
        """The loss of a model output (`.features`) of a view-major batch; the logits are not used."""
        return self.compute(outputs.features, labels)
