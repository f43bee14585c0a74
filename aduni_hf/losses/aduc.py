"""The Adaptive Unified Contrastive (AduC) loss of AdUni, exactly as the official code computes it.

Reference: Cong et al., "Adaptive Unified Contrastive Learning for Imbalanced Classification", MLMI 2022,
Eq. 3, and the released `SupConLoss_Classcenter` (thomascong121/AdUni@61d8c18, losses.py), described in
reference/methods.md 2.3. For every anchor i of the 2N augmented samples:

    row_i    = [ l_i1 + log pi_1, ..., l_iC + log pi_C  |  z_i.z_j / T for the 2N samples j ]
    log D_i  = logsumexp over the C class columns and the samples j != i
    L_i      = -(T / T_b) * [ beta * (row_i,y_i - log D_i) + alpha * sum_{j in P(i)} (row_ij - log D_i) ]
                          / ( beta + alpha * |P(i)| + 1e-12 )

with P(i) the other samples of anchor i's class (its other view included), and the loss the plain mean of
L_i over all 2N anchors. The classifier logits carry no temperature; T_b only rescales the loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import register_loss

# The official code adds 1e-9 inside log(prior) and 1e-12 to the weighted positive count.
PRIOR_EPS = 1e-9
NORMALISER_EPS = 1e-12


def aduc_per_anchor(
    features: Tensor, logits: Tensor, labels: Tensor, alpha: float, beta: float, temperature: float
) -> Tensor:
    """Per-anchor AduC loss before the T/T_b scale, in the dtype of its inputs.

    Shapes (M = views x images, every row an anchor):
        features: (M, d) L2-normalised projections.
        logits: (M, C) classifier logits, already shifted by log prior when logit adjustment is on.
        labels: (M,) class index of every row.
        returns: (M,) the bracketed term of the module docstring, negated and normalised.
    """
    m, num_classes = logits.shape
    self_mask = torch.eye(m, dtype=torch.bool, device=features.device)  # (M, M)
    similarity = (features @ features.T) / temperature  # (M, M)
    similarity = similarity.masked_fill(self_mask, float("-inf"))  # self is not in the denominator
    row = torch.cat([logits, similarity], dim=1)  # (M, C + M)
    log_prob = row - torch.logsumexp(row, dim=1, keepdim=True)  # (M, C + M)
    log_prob = log_prob.masked_fill(F.pad(self_mask, (num_classes, 0)), 0.0)  # -inf * 0 would be NaN

    same_class = (labels[:, None] == labels[None, :]) & ~self_mask  # (M, M): P(i)
    weights = torch.cat(
        [beta * F.one_hot(labels, num_classes).to(log_prob.dtype), alpha * same_class.to(log_prob.dtype)],
        dim=1,
    )  # (M, C + M): beta on the own-class column, alpha on same-class samples
    normaliser = beta + alpha * same_class.sum(dim=1).to(log_prob.dtype) + NORMALISER_EPS  # (M,)
    return -(weights * log_prob).sum(dim=1) / normaliser


@register_loss("aduni")
class AduCLoss(nn.Module):
    """AduC: classifier logits and the batch's views in one softmax (Cong et al. 2022, Eq. 3).

    Args:
        num_classes: number of classes C.
        class_counts: training count of every class; when given, the logits are shifted by
            log(n_c / N + 1e-9) inside the loss (logit adjustment, as the official code). Inference uses the
            raw logits.
        temperature: T of the sample similarities (official 0.1). The classifier logits get none.
        base_temperature: T_b; the loss is multiplied by T / T_b (official 0.07, i.e. x1.4286).
        beta: weight of the own-class column (official 1).

    Shapes:
        features: (V*N, d) L2-normalised, view-major: rows 0..N-1 are view 1 of the N images, rows N..2N-1
            view 2, and so on.
        logits: (V*N, C).
        labels: (N,) int64.
        alpha: float >= 0, the weight of same-class views (scheduled from 1 to 0.01 in AdUni).
        returns: () mean over the V*N anchors, computed in float32 (float64 inputs stay float64), also under
            bf16/fp16 autocast.
    """

    num_views = 2
    uses_alpha = True

    def __init__(
        self,
        num_classes: int,
        class_counts: Sequence[int] | Tensor | None = None,
        temperature: float = 0.1,
        base_temperature: float = 0.07,
        beta: float = 1.0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if base_temperature <= 0:
            raise ValueError(f"base_temperature must be > 0, got {base_temperature}")
        if beta <= 0:
            raise ValueError(
                f"beta must be > 0 (the own-class column is every anchor's positive), got {beta}"
            )
        self.num_classes = num_classes
        self.temperature = float(temperature)
        self.base_temperature = float(base_temperature)
        self.beta = float(beta)
        log_prior = torch.zeros(num_classes)
        if class_counts is not None:
            counts = torch.as_tensor(class_counts, dtype=torch.float64)
            if counts.shape != (num_classes,) or (counts < 0).any() or counts.sum() <= 0:
                raise ValueError(
                    f"class_counts must be {num_classes} non-negative counts with a positive sum, got {class_counts}"
                )
            log_prior = torch.log(counts / counts.sum() + PRIOR_EPS).float()
        self.logit_adjustment = class_counts is not None
        self.register_buffer("log_prior", log_prior, persistent=False)  # (C,)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, temperature={self.temperature}, "
            f"base_temperature={self.base_temperature}, beta={self.beta}, logit_adjustment={self.logit_adjustment}"
        )

    def forward(self, features: Tensor, logits: Tensor, labels: Tensor, alpha: float) -> Tensor:
        if features.ndim != 2 or logits.ndim != 2 or labels.ndim != 1:
            raise ValueError(
                f"expected features (V*N, d), logits (V*N, C) and labels (N,), got {tuple(features.shape)}, "
                f"{tuple(logits.shape)} and {tuple(labels.shape)}"
            )
        rows, num_images = features.shape[0], labels.shape[0]
        if logits.shape != (rows, self.num_classes) or num_images == 0 or rows % num_images:
            raise ValueError(
                f"expected logits ({rows}, {self.num_classes}) and V*N feature rows for N={num_images} labels, "
                f"got features {tuple(features.shape)} and logits {tuple(logits.shape)}"
            )
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        dtype = torch.promote_types(features.dtype, torch.float32)  # float32, or float64 for gradcheck
        with torch.autocast(device_type=features.device.type, enabled=False):
            adjusted = logits.to(dtype) + self.log_prior.to(dtype)  # (V*N, C) logit adjustment
            per_anchor = aduc_per_anchor(
                features.to(dtype),
                adjusted,
                labels.repeat(rows // num_images),  # view-major: label of row r is labels[r % N]
                alpha=float(alpha),
                beta=self.beta,
                temperature=self.temperature,
            )
            return per_anchor.mean() * (self.temperature / self.base_temperature)

    def from_outputs(self, outputs, labels: Tensor, alpha: float) -> Tensor:
        """The loss of a model output (`.features`, `.logits`) of a view-major batch."""
        return self(outputs.features, outputs.logits, labels, alpha)

    @classmethod
    def from_args(cls, args, num_classes: int, class_counts: Sequence[int]) -> AduCLoss:
        """Build from a recipe's `MethodArguments` and the training split's class counts."""
        return cls(
            num_classes,
            class_counts=class_counts if args.logit_adjustment else None,
            temperature=args.temperature,
            base_temperature=args.base_temperature,
            beta=args.beta,
        )
