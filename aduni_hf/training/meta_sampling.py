"""`MetaSamplingTrainer`: a stage whose batches a learned sampler draws (BALMS's second stage).

Every training step first takes the meta step of the loss (`MetaBalancedSoftmaxLoss.meta_step`, run_networks.py's
`meta_forward`), then the ordinary classifier step on the same batch:

1. the batch's draw (its straight-through coefficients) is taken from the loss, where `MetaSampler` left it;
2. the frozen encoder embeds the batch and a class-balanced meta batch of the training fold (each forward in the
   encoder's mode, so BatchNorm in train mode updates its statistics with both, as the official run does);
3. the loss differentiates one SGD step of the classifier, with this step's learning rate, momentum buffers and
   weight decay from the optimiser, and updates the sampler weights with Adam;
4. the Trainer's step: Balanced Softmax on the batch, backward, optimiser.

The meta batch of optimiser step t is a pure function of (seed, t): batch t mod L of epoch t div L of the
class-aware sampler (L its batches per epoch), so a resumed run draws the same meta batches. The sampler takes
`meta_samples_per_class` images of each class in turn: 1, as the released main.py, which builds the meta set's
`ClassAwareSampler` with only `is_infinite=True` (its `num_samples_cls` defaults to 1); recipes before that field
drew 4, classifier-balancing's cRT setting.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..data import collate_views
from ..data.samplers import build_sampler
from ..data.views import DrawKey
from ..losses.meta_balanced_softmax import MetaBalancedSoftmaxLoss, MetaSampler
from .model_setup import set_frozen_modes
from .trainer import AdUniTrainer
from .training_args import AdUniTrainingArguments

META_BATCH_SAMPLER = "class_aware"
# Meta batches are items of the training set too; their keys use epochs from here on, so that their augmentations,
# seeded by (seed, epoch, draw, index, view), are drawn apart from the training batches'.
META_EPOCH_OFFSET = 1 << 20


class MetaSamplingTrainer(AdUniTrainer):
    """`AdUniTrainer` for a loss with a Meta Sampler (`MetaBalancedSoftmaxLoss`): the training batches come from
    `MetaSampler`, and every training step is preceded by the meta step. One process, no gradient accumulation,
    the official SGD (the meta step differentiates that SGD step)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.loss_fn, MetaBalancedSoftmaxLoss):
            raise TypeError(
                f"MetaSamplingTrainer needs a MetaBalancedSoftmaxLoss, got {type(self.loss_fn).__name__}"
            )
        self._meta_keys: tuple[int, list[DrawKey]] | None = None  # (meta epoch, its keys)
        self._meta_sampler = None  # the class-aware sampler of the meta batches, built on first use
        # Read once: the label column (an Arrow read) and what follows from it
        self._class_counts = torch.bincount(
            torch.as_tensor(self.train_dataset.labels), minlength=self.loss_fn.num_classes
        )
        # MetaSampler's epochs are floor(N / B) full batches (one process, no gradient accumulation)
        self._batches_per_epoch = max(
            1, int(self._class_counts.sum()) // self.args.per_device_train_batch_size
        )

    @classmethod
    def check_arguments(cls, args: AdUniTrainingArguments, image_size: int) -> None:
        super().check_arguments(args, image_size)
        if args.world_size > 1:
            raise ValueError(
                f"the Meta Sampler of balms's second stage trains on one process (its weights change every step); "
                f"this run has {args.world_size}. Run balms without accelerate launch's several processes"
            )
        if args.gradient_accumulation_steps != 1:
            raise ValueError(
                f"gradient_accumulation_steps={args.gradient_accumulation_steps}: the meta step of balms's Meta Sampler "
                "belongs to one optimiser step per batch; set gradient_accumulation_steps to 1 for balms"
            )

    def _get_train_sampler(self, train_dataset=None) -> MetaSampler:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return MetaSampler(dataset.labels, self.loss_fn, self.args.per_device_train_batch_size, seed=seed)

    # ---- the meta batches -------------------------------------------------------------------------------
    def meta_batch(self, step: int) -> tuple[Tensor, Tensor]:
        """The class-balanced meta batch of optimiser step `step`: pixel values (B, 3, H, W) and labels (B,)."""
        batch_size = self.args.per_device_train_batch_size
        if self._meta_sampler is None:  # built once: its draws are a pure function of (seed, epoch)
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            self._meta_sampler = build_sampler(
                META_BATCH_SAMPLER,
                self.train_dataset.labels,
                seed=seed + 1,
                num_classes=self.loss_fn.num_classes,
                num_samples_cls=self.loss_fn.meta_samples_per_class,
            )
        sampler = self._meta_sampler
        per_epoch = len(sampler) // batch_size
        if per_epoch < 1:
            raise ValueError(
                f"the class-aware meta sampler draws {len(sampler)} per epoch, fewer than a batch"
            )
        epoch, batch = divmod(step, per_epoch)
        if self._meta_keys is None or self._meta_keys[0] != epoch:
            sampler.set_epoch(epoch)
            keys = [DrawKey(META_EPOCH_OFFSET + epoch, key.draw, key.index) for key in sampler]
            self._meta_keys = (epoch, keys)
        keys = self._meta_keys[1][batch * batch_size : (batch + 1) * batch_size]
        items = collate_views([self.train_dataset[key] for key in keys])
        items = {name: value.to(self.args.device) for name, value in items.items()}
        return self.training_views(items)[:, 0], items["labels"]

    # ---- the meta step ----------------------------------------------------------------------------------
    def _sgd_settings(self) -> tuple[torch.optim.SGD, dict]:
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)  # accelerate wraps the optimiser
        if not isinstance(optimizer, torch.optim.SGD):
            raise TypeError(
                f"the meta step differentiates an SGD step; this stage's optimiser is {type(optimizer)}"
            )
        weight = self.model.classifier.dense.weight
        group = next(g for g in optimizer.param_groups if any(p is weight for p in g["params"]))
        if group["nesterov"] or group["dampening"]:
            raise ValueError(
                "the meta step differentiates plain SGD with momentum: no Nesterov, no dampening"
            )
        return optimizer, group

    def meta_step(self, images: Tensor, labels: Tensor) -> Tensor:
        """The meta step before optimiser step `state.global_step` on the batch (`images` (B, 3, H, W), `labels`)."""
        step = self.state.global_step
        epoch, batch = divmod(step, self._batches_per_epoch)
        draw = self.loss_fn.take_draw(epoch, batch, labels)
        meta_images, meta_labels = self.meta_batch(step)
        encoder, classifier = self.model.base_model, self.model.classifier
        device = images.device
        with torch.no_grad():
            features = encoder(pixel_values=images).pooler_output
            meta_features = encoder(pixel_values=meta_images.to(device, images.dtype)).pooler_output
        optimizer, group = self._sgd_settings()
        buffers = {
            name: optimizer.state.get(parameter, {}).get("momentum_buffer")
            for name, parameter in classifier.named_parameters()
        }
        return self.loss_fn.meta_step(
            classifier,
            features,
            labels,
            draw.coefficients,
            meta_features,
            meta_labels.to(device),
            learning_rate=group["lr"],
            momentum=group["momentum"],
            weight_decay=group["weight_decay"],
            momentum_buffers=buffers,
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        pixel_values = self.training_views(inputs)
        if pixel_values is not None:  # a training batch (B, 1, 3, H, W)
            set_frozen_modes(self.model, self.encoder_mode == "eval", self.args.freeze_bn)
            self.meta_step(pixel_values[:, 0], inputs["labels"])
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # where the sampler stands: each class's share of the draws
            mass = self._class_counts.double() * self.loss_fn.sampling_weights().double().cpu()
            shares = mass / mass.sum()  # MetaSampler.class_probabilities, without re-reading the labels
            names = self.model.config.id2label
            logs.update({f"meta_share_{names.get(c, c)}": float(s) for c, s in enumerate(shares)})
        super().log(logs, start_time)
