"""PaCo, Parametric Contrastive Learning (Cui et al., ICCV 2021), as the official code computes it.

Reference: the official repository JIA-Lab-research/Parametric-Contrastive-Learning (formerly
dvlab-research/...), `PaCo/LT`: `moco/builder.py` (momentum key encoder, labelled queue) and `losses.py`
(`PaCoLoss`). A training step, for a batch of B images with two views:

    q = features of view 1 by the model (with gradient), logits = its classifier logits (view 1 only)
    theta_k <- m * theta_k + (1 - m) * theta_q                  (parameters only, before the key forward)
    k = features of view 2 by the key encoder (no gradient)
    contrast set = [q (B); k (B); queue (K)] with labels [y; y; queue labels]   (the queue before this step)
    enqueue k and y (all processes' keys), FIFO

and for every query i (the anchors are the B queries only):

    class columns  u_ic = l_ic + log(pi_c + 1e-9)       (raw logits without logit adjustment)
    sample columns s_ij = q_i . f_j / T                  for the 2B + K contrast entries j (self: j = i)
    log D_i  = log( sum_c exp(u_ic) + gamma * sum_{j != i} exp(s_ij) )
    P(i)     = { j != i : y_j = y_i }                    (its own key k_i and same-label queue entries included)
    L_i      = -[ beta * (u_i,y_i - log D_i) + alpha * sum_{j in P(i)} (s_ij - log D_i) ] / (beta + alpha * |P(i)|)

and the loss is the mean of L_i over the B queries. PaCo's scale T / T_b has T_b = T by default, so it is 1:
AdUni's `base_temperature` does not apply here (it is no option of these losses). As in the official code, the
largest entry of each row is subtracted before the exponentials and 1e-12 is added to the shifted sum inside the
log; the normaliser has no eps.

Choices where the official code needs DistributedDataParallel or is silent:
- No shuffle-BN: the official code permutes the key batch across GPUs (DDP only; its single-GPU path is the
  usual workaround of dropping it). The key encoder here sees its process's batch, like the query encoder.
- The key encoder's BatchNorm buffers are not averaged: as in the official `_momentum_update_key_encoder`,
  only parameters follow the model; the running statistics of the key encoder evolve by its own forward, in
  the train/eval mode of the model.
- The key encoder is a copy of the model; at the start of the first training step (`global_batch_size` still 0) its
  weights and buffers are set to the model's, so a loss built before the model's weights were loaded starts
  from the trained model's weights, as the official encoders start equal. After a resume the copy comes from
  the checkpoint's method state.
- The queue starts as the official one: Gaussian features normalised along dim=0 (over the K entries, not
  per feature: an official quirk, its issue #20) and uniform random labels, drawn from a generator with a
  fixed seed (construction is deterministic and leaves the global random state alone).
- K must be a multiple of the global batch (the official assertion), checked at the first enqueue. A smaller
  last batch of an epoch (the Trainer does not drop it; the official loader does) is written at the pointer
  modulo K, so the queue stays FIFO.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distributed import all_gather_no_grad, world_size
from ..schedules import AlphaSchedule
from .class_prior import log_class_prior
from .method_loss import LossOutput, MethodLoss

LOG_EPS = 1e-12  # official: log(sum of the shifted exponentials + 1e-12)
QUEUE_SEED = 0  # the initial random queue is a pure function of this seed and the shapes


def paco_per_anchor(
    features: Tensor,
    logits: Tensor,
    labels: Tensor,
    contrast_features: Tensor,
    contrast_labels: Tensor,
    alpha: float,
    beta: float,
    gamma: float,
    temperature: float,
) -> Tensor:
    """Per-anchor PaCo loss L_i of the module docstring, in the dtype of its inputs.

    Shapes (m anchors, M contrast entries):
        features: (m, d) projections of the anchors; anchor i is entry i of the contrast set.
        logits: (m, C) their classifier logits, already shifted by log prior when logit adjustment is on.
        labels: (m,) their class indices.
        contrast_features, contrast_labels: (M, d), (M,), M >= m.
        returns: (m,).
    """
    m, num_classes = logits.shape
    anchors = torch.arange(m, device=features.device)
    not_self = torch.ones(m, contrast_features.shape[0], dtype=torch.bool, device=features.device)
    not_self[anchors, anchors] = False  # (m, M): only column i of anchor i is self
    similarity = (features @ contrast_features.T) / temperature  # (m, M)
    row = torch.cat([logits, similarity], dim=1)  # (m, C + M)
    row = row - row.max(dim=1, keepdim=True).values.detach()  # for stability; cancels but for the eps
    in_denominator = torch.cat([torch.ones_like(logits), gamma * not_self.to(row.dtype)], dim=1)  # (m, C + M)
    log_prob = row - torch.log((row.exp() * in_denominator).sum(dim=1, keepdim=True) + LOG_EPS)
    positives = (labels[:, None] == contrast_labels[None, :]) & not_self  # (m, M): P(i)
    weights = torch.cat(
        [beta * F.one_hot(labels, num_classes).to(row.dtype), alpha * positives.to(row.dtype)], dim=1
    )  # (m, C + M): beta on the own-class column, alpha on the positives; the self column weighs 0
    normaliser = beta + alpha * positives.sum(dim=1).to(row.dtype)  # (m,)
    return -(weights * log_prob).sum(dim=1) / normaliser


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / DataParallel (`.module`) or torch.compile (`._orig_mod`)."""
    while True:
        inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


class PaCoLoss(MethodLoss):
    """PaCo: a momentum key encoder, a labelled queue and the parametric contrastive loss (Cui et al. 2021).

    Args:
        num_classes: number of classes C.
        class_counts: training count of every class; with `logit_adjustment` the class columns are the logits
            plus log(n_c / N + 1e-9) (official "center rebalance"). Inference uses the raw logits.
        model: the `AdUniForImageClassification` being trained. A copy of it (not trained by the optimiser:
            its parameters do not require gradient and are no parameters of the model) is the key encoder, a
            submodule of this loss, saved with every checkpoint. The model itself is not kept.
        temperature: T of the sample columns (official 0.05 to 0.2). The class columns get none; T_b = T.
        paco_alpha: alpha, the weight of every positive sample (official 0.05, CIFAR 0.01).
        paco_beta: beta, the weight of the own-class column (official 1).
        paco_gamma: gamma, the weight of the samples in the denominator (official 1; 0 before the official
            fix of 2021-09-07, which leaves the samples out of the denominator).
        queue_size: K, a multiple of the global batch (per-device batch x processes).
        paco_momentum: m of the key encoder (official 0.999).
        logit_adjustment: False ignores `class_counts`.
        alpha_schedule: None (PaCo): alpha is the constant `paco_alpha`; an AduC schedule (PaCo+AduC): alpha
            follows it over training instead (`set_epoch`).

    Training state (persistent buffers and submodules, all in `state_dict()`):
        key_encoder: the momentum copy of the model.
        queue: (K, d) key features; queue_labels: (K,) int64; queue_ptr: () int64, the next slot.
        global_batch_size: () int64, 0 before the first step, then the global batch of the first step.

    `forward_views(model, pixel_values (B, V>=2, 3, H, W), labels (B,))` is a training step; its `LossOutput`
    carries the logits of view 1. `forward(features_q, features_k, logits, labels, alpha, queue, queue_labels)`
    is the loss alone. The loss is computed in float32 (float64 inputs stay float64), also under autocast.
    Under several processes every process's keys and labels are gathered (no gradient) into every queue,
    and the contrast set is this process's queries and keys plus the queue, as the official code.
    """

    own_forward = True  # the key view goes through the momentum key encoder

    def __init__(
        self,
        num_classes: int,
        class_counts: Sequence[int] | Tensor | None = None,
        model: nn.Module | None = None,
        temperature: float = 0.1,
        paco_alpha: float = 0.05,
        paco_beta: float = 1.0,
        paco_gamma: float = 1.0,
        queue_size: int = 1024,
        paco_momentum: float = 0.999,
        logit_adjustment: bool = True,
        alpha_schedule: AlphaSchedule | None = None,
    ) -> None:
        super().__init__()
        if model is None:
            raise ValueError(
                f"{type(self).__name__} needs `model`, the model being trained: its momentum copy is the key encoder"
            )
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if paco_alpha < 0:
            raise ValueError(f"paco_alpha must be >= 0, got {paco_alpha}")
        if paco_beta <= 0:
            raise ValueError(
                f"paco_beta must be > 0 (the own-class column is every anchor's positive), got {paco_beta}"
            )
        if paco_gamma < 0:
            raise ValueError(f"paco_gamma must be >= 0, got {paco_gamma}")
        if not isinstance(queue_size, int) or isinstance(queue_size, bool) or queue_size < 1:
            raise ValueError(f"queue_size must be a positive integer, got {queue_size!r}")
        if not 0.0 <= paco_momentum <= 1.0:
            raise ValueError(f"paco_momentum must be in [0, 1], got {paco_momentum}")
        model = _unwrap(model)
        dim = getattr(getattr(model, "config", None), "projection_dim", None)
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"model must have config.projection_dim (the size of its features), got {dim!r}")
        self.num_classes = num_classes
        self.temperature = float(temperature)
        self.paco_alpha = float(paco_alpha)
        self.paco_beta = float(paco_beta)
        self.paco_gamma = float(paco_gamma)
        self.queue_size = queue_size
        self.paco_momentum = float(paco_momentum)
        self.alpha_schedule = alpha_schedule
        # every schedule's value at epoch 0 is its alpha_max; set_epoch moves it on
        self.alpha = self.paco_alpha if alpha_schedule is None else alpha_schedule.alpha_max

        log_prior = torch.zeros(num_classes)
        self.logit_adjustment = logit_adjustment and class_counts is not None
        if self.logit_adjustment:
            log_prior = log_class_prior(class_counts, num_classes)
        self.register_buffer("log_prior", log_prior, persistent=False)  # (C,), rebuilt from the counts

        self.key_encoder = copy.deepcopy(model)
        for parameter in self.key_encoder.parameters():
            parameter.requires_grad_(False)
            parameter.grad = None

        generator = torch.Generator().manual_seed(QUEUE_SEED)
        queue = F.normalize(torch.randn(queue_size, dim, generator=generator), dim=0)  # official: dim=0
        queue_labels = torch.randint(0, num_classes, (queue_size,), generator=generator)
        device = next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device
        self.register_buffer("queue", queue.to(device))  # (K, d)
        self.register_buffer("queue_labels", queue_labels.to(device))  # (K,) int64
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.int64, device=device))
        self.register_buffer("global_batch_size", torch.zeros((), dtype=torch.int64, device=device))

    def set_epoch(self, epoch: int, num_epochs: int) -> None:
        """With an alpha schedule (PaCo+AduC), alpha of `epoch`; plain PaCo keeps `paco_alpha`."""
        if self.alpha_schedule is not None:
            self.alpha = self.alpha_schedule(epoch, num_epochs)

    def epoch_logs(self) -> dict[str, float]:
        return {} if self.alpha_schedule is None else {"alpha": self.alpha}

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, temperature={self.temperature}, alpha="
            f"{'scheduled' if self.alpha_schedule is not None else self.paco_alpha}, beta={self.paco_beta}, gamma={self.paco_gamma}, "
            f"queue_size={self.queue_size}, momentum={self.paco_momentum}, logit_adjustment={self.logit_adjustment}"
        )

    # ---- the loss -------------------------------------------------------------------------------------------
    def forward(
        self,
        features_q: Tensor,
        features_k: Tensor,
        logits: Tensor,
        labels: Tensor,
        alpha: float,
        queue: Tensor,
        queue_labels: Tensor,
    ) -> Tensor:
        """The PaCo loss of B queries against the contrast set [features_q; features_k; queue].

        Shapes: features_q, features_k (B, d); logits (B, C) raw (the log prior is added here); labels (B,);
        queue (K, d); queue_labels (K,). Returns () the mean over the B queries.
        """
        return self.compute(features_q, features_k, logits, labels, alpha, queue, queue_labels).loss

    def compute(
        self,
        features_q: Tensor,
        features_k: Tensor,
        logits: Tensor,
        labels: Tensor,
        alpha: float,
        queue: Tensor,
        queue_labels: Tensor,
    ) -> LossOutput:
        """`forward`, with every query's loss and the contrast set's labels."""
        batch = labels.shape[0]
        if (
            features_q.ndim != 2
            or features_k.shape != features_q.shape
            or features_q.shape[0] != batch
            or logits.shape != (batch, self.num_classes)
            or labels.ndim != 1
            or queue.ndim != 2
            or queue.shape[1] != features_q.shape[1]
            or queue_labels.shape != (queue.shape[0],)
        ):
            raise ValueError(
                f"expected features_q, features_k (B, d), logits (B, {self.num_classes}), labels (B,), queue (K, d) "
                f"and queue_labels (K,), got {tuple(features_q.shape)}, {tuple(features_k.shape)}, "
                f"{tuple(logits.shape)}, {tuple(labels.shape)}, {tuple(queue.shape)} and {tuple(queue_labels.shape)}"
            )
        if batch == 0:
            raise ValueError("PaCo needs at least one query")
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        dtype = torch.promote_types(features_q.dtype, torch.float32)  # float32, or float64 for gradcheck
        with torch.autocast(device_type=features_q.device.type, enabled=False):
            contrast_features = torch.cat([features_q.to(dtype), features_k.to(dtype), queue.to(dtype)])
            contrast_labels = torch.cat([labels, labels, queue_labels.to(labels.dtype)])
            per_anchor = paco_per_anchor(
                features_q.to(dtype),
                logits.to(dtype) + self.log_prior.to(dtype),  # (B, C) logit adjustment
                labels,
                contrast_features,
                contrast_labels,
                alpha=float(alpha),
                beta=self.paco_beta,
                gamma=self.paco_gamma,
                temperature=self.temperature,
            )
            # x T / T_b = 1
            return LossOutput(per_anchor.mean(), per_anchor.detach(), labels, contrast_labels.detach())

    # ---- a training step --------------------------------------------------------------------------------------
    def forward_views(self, model: nn.Module, pixel_values: Tensor, labels: Tensor) -> LossOutput:
        """One training step on (B, V>=2, 3, H, W) views, at the epoch's alpha; the output carries the logits of
        view 1.

        View 1 goes through `model` (the queries, with gradient), view 2 through the key encoder after its
        momentum update; the current keys and labels are enqueued after the contrast set was taken.
        """
        if pixel_values.ndim != 5 or pixel_values.shape[1] < 2 or labels.shape != (pixel_values.shape[0],):
            raise ValueError(
                f"expected pixel_values (B, V>=2, 3, H, W) and labels (B,), got {tuple(pixel_values.shape)} "
                f"and {tuple(labels.shape)}"
            )
        query_model = _unwrap(model)
        if int(self.global_batch_size) == 0:  # the first training step: start from the model as it is now
            self._copy_from(query_model)
        outputs = model(pixel_values=pixel_values[:, 0])
        with torch.no_grad():
            self._momentum_update(query_model)
            self.key_encoder.train(query_model.training)
            keys = self.key_encoder(pixel_values=pixel_values[:, 1]).features
        output = self.compute(
            outputs.features,
            keys,
            outputs.logits,
            labels,
            self.alpha,
            self.queue.clone(),  # the queue before this step's keys
            self.queue_labels.clone(),
        )
        self._enqueue(keys, labels)
        output.logits = outputs.logits
        return output

    def _pairs(self, model: nn.Module, tensors: str):
        """(model tensor, key encoder tensor) by name, for `tensors` "parameters" or "buffers"."""
        own = list(getattr(model, f"named_{tensors}")())
        key = list(getattr(self.key_encoder, f"named_{tensors}")())
        if [name for name, _ in own] != [name for name, _ in key]:
            raise RuntimeError(
                f"the key encoder's {tensors} do not match the model's: build the loss with this model"
            )
        return [(a, b) for (_, a), (_, b) in zip(own, key, strict=True)]

    @torch.no_grad()
    def _copy_from(self, model: nn.Module) -> None:
        for source, target in self._pairs(model, "parameters") + self._pairs(model, "buffers"):
            target.copy_(source)

    @torch.no_grad()
    def _momentum_update(self, model: nn.Module) -> None:
        """theta_k <- m * theta_k + (1 - m) * theta_q on parameters only (official `_momentum_update_key_encoder`)."""
        m = self.paco_momentum
        for param_q, param_k in self._pairs(model, "parameters"):
            param_k.mul_(m).add_(param_q.detach().to(param_k.dtype), alpha=1.0 - m)

    @torch.no_grad()
    def _enqueue(self, keys: Tensor, labels: Tensor) -> None:
        """Write every process's keys and labels at the pointer (modulo K), then move the pointer."""
        local = keys.shape[0]
        keys = all_gather_no_grad(keys.detach().to(self.queue.dtype))
        labels = all_gather_no_grad(labels.detach().to(self.queue_labels.dtype))
        batch, size = keys.shape[0], self.queue_size
        first = int(self.global_batch_size)
        if first == 0:
            if size % batch:
                raise ValueError(
                    f"queue_size ({size}) must be a multiple of the global batch size ({batch} = per-device batch "
                    f"{local} x {world_size()} processes), as in the official PaCo code"
                )
            self.global_batch_size.fill_(batch)
        elif batch > first:
            raise ValueError(
                f"the global batch size grew from {first} to {batch}; queue_size ({size}) was checked against {first}"
            )
        ptr = int(self.queue_ptr)
        slots = (ptr + torch.arange(batch, device=self.queue.device)) % size
        self.queue[slots] = keys.to(self.queue.device)
        self.queue_labels[slots] = labels.to(self.queue.device)
        self.queue_ptr.fill_((ptr + batch) % size)
