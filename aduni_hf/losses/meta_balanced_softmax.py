"""BALMS: Balanced Softmax with the Meta Sampler in a decoupled second stage (a Table 1 baseline).

Reference: Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual Recognition", NeurIPS 2020, and its released
code (jiawei-ren/BalancedMetaSoftmax-Classification: data/MetaSampler.py, run_networks.meta_forward). What it
computes, and the choices made here, are in docs/method.md ("BALMS and its Meta Sampler").

Stage 1 is plain cross-entropy on one view with instance-balanced sampling (the `balms` method,
aduni_hf/methods/balms.py). Stage 2 trains a re-initialised classifier on the frozen encoder with Balanced Softmax (`MetaBalancedSoftmaxLoss`) on batches drawn
by the Meta Sampler (`MetaSampler`):

- The sampler has one learnable logit w_c per class. Each of the B slots of a batch picks one of the N training
  examples by a hard Gumbel-softmax over all N, with logits log sigmoid(w_{y_n}): example n is drawn with
  probability proportional to sigmoid(w_{y_n}), class c with probability proportional to n_c * sigmoid(w_c).
- Before every classifier step, a meta step: the batch's per-example Balanced Softmax losses, weighted by the
  straight-through one-hot of the draw, take one differentiable SGD step of the classifier (the optimiser's
  learning rate, momentum and weight decay); the stepped classifier's plain cross-entropy on a class-balanced
  meta batch from the training fold is back-propagated into w, and Adam (lr 0.01) updates w.

The straight-through gradient. The official code keeps the B x N soft sample y (a softmax at temperature 1 of
z_n = log sigmoid(w_{y_n}) + g_n, g Gumbel noise) and weights the loss x_b of slot b by sum_n x_b * yhard_bn.detach()
* yst_bn, where yst = yhard - y.detach() + y. Its value is x_b, and its gradient reaches only the drawn column n*:

    d weight_b / d w_c = y_{b,n*} * ([y_{n*} = c] - m_{b,c}) * (1 - sigmoid(w_c)),   m_{b,c} = sum_{n: y_n = c} y_{b,n}

(softmax Jacobian, then d log sigmoid(w) / dw = 1 - sigmoid(w)). `MetaSampler` reduces each soft sample to these
B x C coefficients when it draws the batch, with the sigmoid of that moment, as the official graph saves it; the
loss's weight of slot b is 1 + sum_c a_{b,c} (w_c - stop_gradient(w_c)): exactly 1, with exactly that gradient.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..data.samplers import EpochSampler
from ..data.transforms import view_seed
from ..data.views import DrawKey
from .balanced_softmax_loss import BalancedSoftmaxLoss
from .class_prior import checked_class_counts

# Adam's defaults (torch.optim.Adam), as the official `optimizer_meta`.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
# The Gumbel noise of batch k of epoch e is seeded by view_seed(seed, e, k, NOISE_STREAM, 0): an index no image has,
# so the noise stream stays apart from the augmentation seeds (seed, epoch, draw, index, view).
NOISE_STREAM = 2**32 - 1


def initial_sampler_logits(class_counts: Sequence[int] | Tensor, init_pow: float) -> Tensor:
    """w_c = logit(q_c / (min q + max q)), q_c = pi_c^(-init_pow) (MetaSampler.py's initialisation), float32 (C,).

    init_pow 0 (the CIFAR configs) gives w = 0: every weight sigmoid(w) = 0.5 and sampling starts instance-balanced.
    A class without training images gets w = 0; it is never drawn.
    """
    counts = checked_class_counts(class_counts, len(class_counts))
    present = counts > 0
    prior = counts[present] / counts.sum()
    q = prior.pow(-init_pow)
    share = q / (q.min() + q.max())
    logits = torch.zeros(len(counts), dtype=torch.float64)
    logits[present] = torch.log(share / (1 - share))
    return logits.float()


@dataclass(frozen=True)
class MetaDraw:
    """One batch drawn by the Meta Sampler: where it is in training, what it holds, and its gradient coefficients.

    Attributes:
        epoch, batch: the epoch and the batch's position in it (from 0).
        indices: (B,) the drawn training examples.
        labels: (B,) their classes.
        coefficients: (B, C) float32, d(weight of slot b) / d w_c at the draw (see the module docstring).
    """

    epoch: int
    batch: int
    indices: Tensor
    labels: Tensor
    coefficients: Tensor


class MetaBalancedSoftmaxLoss(BalancedSoftmaxLoss):
    """Balanced Softmax whose batches come from a learned Meta Sampler: the sampler's class logits, their Adam
    state and the meta step (`meta_step`). The sampler weights and Adam state are the loss's state, saved with
    every checkpoint (method_state.safetensors) and restored on resume.

    Args:
        num_classes, class_counts: as `BalancedSoftmaxLoss`.
        meta_learning_rate: Adam learning rate of the sampler logits (official 0.01).
        meta_init_pow: init_pow of the sampler initialisation (official 0 for CIFAR, 0.1 for ImageNet-LT).
        meta_samples_per_class: the class-aware meta batches' run of one class (official 1: the released main.py
            builds the meta set's `ClassAwareSampler` with its default `num_samples_cls=1`). The trainer draws them.
    """

    def __init__(
        self,
        num_classes: int,
        class_counts: Sequence[int] | Tensor,
        meta_learning_rate: float = 0.01,
        meta_init_pow: float = 0.0,
        meta_samples_per_class: int = 1,
    ) -> None:
        super().__init__(num_classes, class_counts)
        if meta_learning_rate <= 0:
            raise ValueError(f"meta_learning_rate must be > 0, got {meta_learning_rate}")
        if meta_samples_per_class < 1:
            raise ValueError(f"meta_samples_per_class must be >= 1, got {meta_samples_per_class}")
        self.meta_learning_rate = meta_learning_rate
        self.meta_samples_per_class = int(meta_samples_per_class)
        self.sampler_logits = nn.Parameter(initial_sampler_logits(class_counts, meta_init_pow))  # w (C,)
        self.register_buffer("adam_step", torch.zeros((), dtype=torch.long))
        self.register_buffer("adam_exp_avg", torch.zeros(num_classes))
        self.register_buffer("adam_exp_avg_sq", torch.zeros(num_classes))
        self.pending: dict[tuple[int, int], MetaDraw] = {}  # draws not yet trained on, by (epoch, batch)

    # ---- drawing ----------------------------------------------------------------------------------------
    def sampling_weights(self) -> Tensor:
        """sigmoid(w): the unnormalised per-example sampling weight of each class, detached, float32 (C,)."""
        return torch.sigmoid(self.sampler_logits.detach().float())

    def draw(self, labels: Tensor, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Draw `batch_size` examples of the training set with `labels` (N,) by hard Gumbel-softmax, from
        `generator` only. Returns the drawn indices (B,) and their straight-through coefficients (B, C)."""
        labels = labels.cpu()
        sigma = self.sampling_weights().cpu()
        uniform = torch.rand(batch_size, len(labels), generator=generator, dtype=torch.float32)
        gumbel = -torch.log(-torch.log(uniform.clamp_min(torch.finfo(torch.float32).tiny)))
        scores = torch.log(sigma)[labels] + gumbel  # (B, N)
        indices = scores.argmax(dim=1)
        soft = torch.softmax(scores, dim=1)  # temperature 1, as torch's gumbel_softmax default
        chosen = soft.gather(1, indices[:, None])  # (B, 1): y_{b, n*}
        class_mass = torch.zeros(batch_size, self.num_classes).index_add_(1, labels, soft)  # m (B, C)
        own = F.one_hot(labels[indices], self.num_classes).float()
        coefficients = chosen * (own - class_mass) * (1 - sigma)
        return indices, coefficients

    def slot_weights(self, coefficients: Tensor) -> Tensor:
        """The straight-through weight of every slot (B,): value exactly 1, gradient `coefficients` w.r.t. w."""
        w = self.sampler_logits
        return 1 + (coefficients.to(w.device) * (w - w.detach())).sum(dim=1)

    def take_draw(self, epoch: int, batch: int, labels: Tensor) -> MetaDraw:
        """The pending draw of batch `batch` of `epoch`; draws before it (batches a resumed run skips) are dropped.
        Raises a RuntimeError when it is missing or its labels differ from the batch's."""
        key = (epoch, batch)
        for stale in [k for k in self.pending if k < key]:
            del self.pending[stale]
        draw = self.pending.pop(key, None)
        if draw is None:
            raise RuntimeError(
                f"the Meta Sampler has no draw for batch {batch} of epoch {epoch} (pending: {sorted(self.pending)}); "
                "the training batches must come from its MetaSampler, one process, no gradient accumulation"
            )
        if not torch.equal(draw.labels, labels.detach().cpu()):
            raise RuntimeError(
                f"batch {batch} of epoch {epoch}: its labels differ from the Meta Sampler's draw for it"
            )
        return draw

    # ---- the meta step ----------------------------------------------------------------------------------
    def per_example_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Balanced Softmax per example (B,), as the official `reduction='none'`."""
        dtype = torch.promote_types(logits.dtype, torch.float32)  # float32, or float64 for the tests
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return F.cross_entropy(logits.to(dtype) + self.log_prior.to(dtype), labels, reduction="none")

    def meta_gradient(
        self,
        classifier: nn.Module,
        features: Tensor,
        labels: Tensor,
        coefficients: Tensor,
        meta_features: Tensor,
        meta_labels: Tensor,
        *,
        learning_rate: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        momentum_buffers: Mapping[str, Tensor | None] | None = None,
    ) -> Tensor:
        """d(meta loss)/d w (C,) of one meta step (run_networks.meta_forward, with torch.func instead of `higher`).

        theta' = theta - lr * (mu * buf + g + wd * theta) is PyTorch's SGD step on a copy of the classifier
        (buf: its momentum buffer, the step without it when there is none yet), g the gradient of the
        slot-weighted mean Balanced Softmax loss of the batch, kept differentiable in w; the meta loss is the mean
        cross-entropy of the stepped classifier on the meta batch. The classifier itself is not changed.
        """
        params = {name: p.detach().requires_grad_(True) for name, p in classifier.named_parameters()}
        logits = functional_call(classifier, params, (features.detach(),))
        inner = (self.per_example_loss(logits, labels) * self.slot_weights(coefficients)).mean()
        grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
        buffers = momentum_buffers or {}
        stepped = {}
        for (name, p), g in zip(params.items(), grads, strict=True):
            step = g + weight_decay * p
            if buffers.get(name) is not None:
                step = step + momentum * buffers[name]
            stepped[name] = p - learning_rate * step
        meta_logits = functional_call(classifier, stepped, (meta_features.detach(),))
        meta_loss = F.cross_entropy(
            meta_logits.to(torch.promote_types(meta_logits.dtype, torch.float32)), meta_labels
        )
        (gradient,) = torch.autograd.grad(meta_loss, [self.sampler_logits])
        return gradient

    @torch.no_grad()
    def adam_update(self, gradient: Tensor) -> None:
        """One Adam step of the sampler logits (torch.optim.Adam's defaults: betas 0.9, 0.999, eps 1e-8)."""
        beta1, beta2 = ADAM_BETAS
        self.adam_step += 1
        step = int(self.adam_step)
        self.adam_exp_avg.mul_(beta1).add_(gradient, alpha=1 - beta1)
        self.adam_exp_avg_sq.mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
        corrected = self.adam_exp_avg / (1 - beta1**step)
        denominator = (self.adam_exp_avg_sq / (1 - beta2**step)).sqrt().add_(ADAM_EPS)
        self.sampler_logits.sub_(self.meta_learning_rate * corrected / denominator)

    def meta_step(self, classifier: nn.Module, *args, **kwargs) -> Tensor:
        """`meta_gradient`, then the Adam step of the sampler logits; returns the gradient."""
        gradient = self.meta_gradient(classifier, *args, **kwargs)
        self.adam_update(gradient)
        return gradient


class MetaSampler(EpochSampler):
    """The Meta Sampler: floor(N / B) batches of B draws per epoch (MetaSampler.py's `n_samples // batch_size`),
    each batch drawn when the data loader asks for its first index, with the loss's sampling weights of that
    moment, and recorded in `loss.pending` for the meta step of its training step.

    The Gumbel noise of batch k of epoch e is a pure function of (seed, e, k); the weights change with training,
    so the draws depend on them. A data loader that prefetches draws a batch a few steps before it trains on it
    (accelerate's loader looks one batch ahead), with the weights of then, as the official loader does.
    """

    def __init__(
        self, labels: Sequence[int], loss: MetaBalancedSoftmaxLoss, batch_size: int, seed: int = 0
    ) -> None:
        super().__init__(labels, seed=seed, num_classes=loss.num_classes)
        self._require_samples()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.loss = loss
        self.batch_size = batch_size
        self.num_batches = max(1, len(self.labels) // batch_size)

    def batch_generator(self, epoch: int, batch: int) -> torch.Generator:
        """The generator of the Gumbel noise of `batch` of `epoch`: seeded by (seed, epoch, batch) only."""
        return torch.Generator().manual_seed(view_seed(self.seed, epoch, batch, NOISE_STREAM, 0))

    def __iter__(self) -> Iterator[DrawKey]:
        epoch = self.epoch
        for batch in range(self.num_batches):
            indices, coefficients = self.loss.draw(
                self.labels, self.batch_size, self.batch_generator(epoch, batch)
            )
            self.loss.pending[(epoch, batch)] = MetaDraw(
                epoch, batch, indices, self.labels[indices], coefficients
            )
            for slot, index in enumerate(indices.tolist()):
                yield DrawKey(epoch, batch * self.batch_size + slot, index)

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def class_probabilities(self, epoch: int) -> torch.Tensor:
        """The class shares of the draws under the current weights: n_c * sigmoid(w_c), normalised."""
        mass = self.class_counts.double() * self.loss.sampling_weights().double().cpu()
        return mass / mass.sum()
