"""The Adaptive Unified Contrastive (AduC) loss of AdUni, exactly as the official code computes it.

Reference: Cong et al., "Adaptive Unified Contrastive Learning for Imbalanced Classification", MLMI 2022,
Eq. 3, and the released `SupConLoss_Classcenter` (thomascong121/AdUni@61d8c18, losses.py), described in
docs/method.md, "The AduC loss". For every anchor i of the 2N augmented samples:

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
from torch import Tensor

from ..distributed import gather_contrast_set
from ..schedules import AlphaSchedule
from .class_prior import log_class_prior
from .method_loss import LossOutput, MethodLoss

# The official code adds 1e-12 to the weighted positive count (and 1e-9 inside log(prior): class_prior.PRIOR_EPS).
NORMALISER_EPS = 1e-12


def aduc_per_anchor(
    features: Tensor,
    logits: Tensor,
    labels: Tensor,
    alpha: float,
    beta: float,
    temperature: float,
    contrast_features: Tensor | None = None,
    contrast_labels: Tensor | None = None,
    anchor_offset: int = 0,
    normalise: bool = True,
) -> Tensor:
    """Per-anchor AduC loss before the T/T_b scale, in the dtype of its inputs.

    Shapes (m anchors, M samples in the contrast set):
        features: (m, d) L2-normalised projections of the anchors.
        logits: (m, C) their classifier logits, already shifted by log prior when logit adjustment is on.
        labels: (m,) their class indices.
        contrast_features, contrast_labels: (M, d), (M,) the samples every anchor is contrasted with; default
            the anchors themselves. Anchor i is sample `anchor_offset + i` of the contrast set (several
            processes: the global batch, this rank's rows at its offset).
        returns: (m,) the bracketed term of the module docstring, negated and divided by
            beta + alpha |P(i)| (the released code); `normalise=False` leaves the sum as the paper's Eq. 3.
    """
    if contrast_features is None:
        contrast_features, contrast_labels = features, labels
    m, num_classes = logits.shape
    anchors = torch.arange(m, device=features.device)
    self_mask = torch.zeros(m, contrast_features.shape[0], dtype=torch.bool, device=features.device)
    self_mask[anchors, anchors + anchor_offset] = True  # (m, M)
    similarity = (features @ contrast_features.T) / temperature  # (m, M)
    similarity = similarity.masked_fill(self_mask, float("-inf"))  # self is not in the denominator
    row = torch.cat([logits, similarity], dim=1)  # (m, C + M)
    log_prob = row - torch.logsumexp(row, dim=1, keepdim=True)  # (m, C + M)
    log_prob = log_prob.masked_fill(F.pad(self_mask, (num_classes, 0)), 0.0)  # -inf * 0 would be NaN

    same_class = (labels[:, None] == contrast_labels[None, :]) & ~self_mask  # (m, M): P(i)
    weights = torch.cat(
        [beta * F.one_hot(labels, num_classes).to(log_prob.dtype), alpha * same_class.to(log_prob.dtype)],
        dim=1,
    )  # (m, C + M): beta on the own-class column, alpha on same-class samples
    weighted_sum = -(weights * log_prob).sum(dim=1)  # (m,)
    if not normalise:
        return weighted_sum
    normaliser = beta + alpha * same_class.sum(dim=1).to(log_prob.dtype) + NORMALISER_EPS  # (m,)
    return weighted_sum / normaliser


class AduCLoss(MethodLoss):
    """AduC: classifier logits and the batch's views in one softmax (Cong et al. 2022, Eq. 3).

    Args:
        num_classes: number of classes C.
        class_counts: training count of every class; when given (and `logit_adjustment` is on), the logits
            are shifted by log(n_c / N + 1e-9) inside the loss (logit adjustment, as the official code).
            Inference uses the raw logits.
        temperature: T of the sample similarities (official 0.1). The classifier logits get none.
        base_temperature: T_b; the loss is multiplied by T / T_b (official 0.07, i.e. x1.4286).
        beta: weight of the own-class column (official 1).
        logit_adjustment: False ignores `class_counts` (no shift).
        gather_distributed: under several processes, contrast this rank's anchors with the views of the
            global batch (all-gathered with gradient), as the official single-process batch does. False keeps
            the contrast set per process.
        classifier_temperature: divides the (adjusted) class columns; 1 as the released code (`supt = 1`),
            the recipe's `temperature` for the paper's Eq. 2-3, which write every term over tau.
        positive_normalisation: divide each anchor's sum by beta + alpha |P(i)| (released code); False keeps
            the paper's plain sum over P(i).
        beta_from_alpha: beta = 1 - alpha at every step (the released code's 'linear' alpha mode) instead of
            the constant `beta`.
        (docs/method.md, "Paper and code: every difference".)
        alpha_schedule: alpha over training, for the trainer's `from_outputs` (default: the official schedule
            with its defaults); `set_epoch` moves it on. A direct call takes alpha as an argument instead.

    Shapes:
        features: (V*N, d) L2-normalised, view-major: rows 0..N-1 are view 1 of the N images, rows N..2N-1
            view 2, and so on.
        logits: (V*N, C).
        labels: (N,) int64.
        alpha: float >= 0, the weight of same-class views (scheduled from 1 to 0.01 in AdUni).
        returns: () mean over the V*N anchors, computed in float32 (float64 inputs stay float64), also under
            bf16/fp16 autocast. Under several processes: the mean over this rank's anchors, each contrasted
            with the global batch; with DDP's gradient averaging that trains on the global-batch loss.
    """

    def __init__(
        self,
        num_classes: int,
        class_counts: Sequence[int] | Tensor | None = None,
        temperature: float = 0.1,
        base_temperature: float = 0.07,
        beta: float = 1.0,
        logit_adjustment: bool = True,
        gather_distributed: bool = True,
        classifier_temperature: float = 1.0,
        positive_normalisation: bool = True,
        beta_from_alpha: bool = False,
        alpha_schedule: AlphaSchedule | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if base_temperature <= 0:
            raise ValueError(f"base_temperature must be > 0, got {base_temperature}")
        if classifier_temperature <= 0:
            raise ValueError(f"classifier_temperature must be > 0, got {classifier_temperature}")
        if beta <= 0 and not beta_from_alpha:
            raise ValueError(
                f"beta must be > 0 (the own-class column is every anchor's positive), got {beta}"
            )
        self.num_classes = num_classes
        self.temperature = float(temperature)
        self.base_temperature = float(base_temperature)
        self.beta = float(beta)
        self.classifier_temperature = float(classifier_temperature)
        self.positive_normalisation = positive_normalisation
        self.beta_from_alpha = beta_from_alpha
        self.gather_distributed = gather_distributed
        log_prior = torch.zeros(num_classes)
        self.logit_adjustment = logit_adjustment and class_counts is not None
        if self.logit_adjustment:
            log_prior = log_class_prior(class_counts, num_classes)
        self.register_buffer("log_prior", log_prior, persistent=False)  # (C,)
        self.alpha_schedule = alpha_schedule if alpha_schedule is not None else AlphaSchedule()
        self.alpha = self.alpha_schedule.alpha_max  # every schedule's value at epoch 0, before set_epoch

    def set_epoch(self, epoch: int, num_epochs: int) -> None:
        """alpha of `epoch` under the loss's schedule, for the training steps of that epoch."""
        self.alpha = self.alpha_schedule(epoch, num_epochs)

    def epoch_logs(self) -> dict[str, float]:
        return {"alpha": self.alpha}

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, temperature={self.temperature}, "
            f"base_temperature={self.base_temperature}, beta={self.beta}, logit_adjustment={self.logit_adjustment}"
        )

    def forward(self, features: Tensor, logits: Tensor, labels: Tensor, alpha: float) -> Tensor:
        return self.compute(features, logits, labels, alpha).loss

    def from_outputs(self, outputs, labels: Tensor) -> LossOutput:
        """The loss of a model output (`.features`, `.logits`) of a view-major batch, at the epoch's alpha."""
        return self.compute(outputs.features, outputs.logits, labels, self.alpha)

    def compute(self, features: Tensor, logits: Tensor, labels: Tensor, alpha: float) -> LossOutput:
        """The loss (see the class docstring for the shapes) with every anchor's value and its contrast set."""
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
            features = features.to(dtype)
            row_labels = labels.repeat(rows // num_images)  # view-major: label of row r is labels[r % N]
            # Under several processes the anchors are this rank's rows, the contrast set the global batch.
            contrast_features, contrast_labels, offset = gather_contrast_set(
                features, row_labels, enabled=self.gather_distributed
            )
            # (V*N, C): logit adjustment, and the paper's temperature on the class columns if asked for
            class_columns = (logits.to(dtype) + self.log_prior.to(dtype)) / self.classifier_temperature
            per_anchor = aduc_per_anchor(
                features,
                class_columns,
                row_labels,
                alpha=float(alpha),
                beta=1.0 - float(alpha) if self.beta_from_alpha else self.beta,
                temperature=self.temperature,
                contrast_features=contrast_features,
                contrast_labels=contrast_labels,
                anchor_offset=offset,
                normalise=self.positive_normalisation,
            )
            per_anchor = per_anchor * (self.temperature / self.base_temperature)
            return LossOutput(per_anchor.mean(), per_anchor.detach(), row_labels, contrast_labels.detach())
