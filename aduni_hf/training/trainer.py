"""`AdUniTrainer`: the Trainer with AdUni's two-view batches, its loss, sampler and optimisation recipe."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import torch
from huggingface_hub import ModelCard
from torch import nn
from transformers import Trainer
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from ..data.samplers import EpochSampler, build_sampler
from ..schedules import official_learning_rate
from ..utils import write_atomic
from .callbacks import AlphaScheduleCallback, EpochProgressCallback


def _official_lr_factor(step: int, steps_per_epoch: int, base_lr: float, **schedule) -> float:
    """LambdaLR factor of optimiser step `step`: the official per-epoch learning rate over the base one."""
    return official_learning_rate(step // steps_per_epoch, base_lr=base_lr, **schedule) / base_lr


class AdUniTrainer(Trainer):
    """Trainer for AdUni and the other methods of the `losses` registry.

    - Training items carry `pixel_values` of shape (B, V, 3, H, W): V independently augmented views. They go
      through the model as ONE view-major batch (V*B images: BatchNorm sees every view, rows i and i+B are two
      views of image i), and `loss_fn.from_outputs(outputs, labels, alpha)` gives the loss.
    - Evaluation items carry one view (B, 3, H, W); the loss is cross-entropy and the logits go to
      `compute_metrics`.
    - alpha comes from the `AlphaScheduleCallback` among the callbacks (one is added with the official defaults
      if the loss uses alpha and none is given) and is written into the training logs.
    - The train sampler is `sampler` from the `aduni_hf.data.SAMPLERS` registry, a pure function of
      (seed, epoch).
    - The console shows a progress bar (in a terminal) and one compact line per epoch (`EpochProgressCallback`).
    - With `args.optimizer_recipe == "official"`: SGD with momentum and weight decay on every parameter, and
      the per-epoch warm-up + cosine learning rate of the released code (docs/method.md, "Schedules").

    Args:
        loss_fn: a loss of the `aduni_hf.losses` registry (for example `AduCLoss`).
        sampler: name of the training sampler (`aduni_hf.data.SAMPLERS`).
        Everything else as `transformers.Trainer`.
    """

    # compute_loss returns a per-batch mean, so Trainer divides it by the gradient-accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, loss_fn: nn.Module, sampler: str = "none", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # One compact line per epoch (and a bar in a terminal) instead of a dict per log.
        self.remove_callback(ProgressCallback)
        self.remove_callback(PrinterCallback)
        self.add_callback(EpochProgressCallback())
        self.loss_fn = loss_fn.to(self.args.device)
        self.sampler_name = sampler
        self.model_card: ModelCard | None = None  # the results card; see create_model_card
        self.alpha_callback = next(
            (cb for cb in self.callback_handler.callbacks if isinstance(cb, AlphaScheduleCallback)), None
        )
        if self.alpha_callback is None and getattr(loss_fn, "uses_alpha", False):
            self.alpha_callback = AlphaScheduleCallback()
            self.add_callback(self.alpha_callback)

    @property
    def alpha(self) -> float:
        return self.alpha_callback.alpha if self.alpha_callback is not None else 0.0

    # ---- data -------------------------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset=None) -> EpochSampler:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return build_sampler(self.sampler_name, dataset.labels, seed=seed)

    # ---- loss -------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        pixel_values, labels = inputs["pixel_values"], inputs["labels"]
        if pixel_values.ndim == 5:  # training: (B, V, 3, H, W)
            batch, views = pixel_values.shape[:2]
            view_major = pixel_values.transpose(0, 1).reshape(views * batch, *pixel_values.shape[2:])
            outputs = model(pixel_values=view_major)
            loss = self.loss_fn.from_outputs(outputs, labels, alpha=self.alpha)
            return (loss, {"logits": outputs.logits[:batch]}) if return_outputs else loss
        outputs = model(pixel_values=pixel_values, labels=labels)  # evaluation: one view, CE as eval_loss
        return (outputs.loss, {"logits": outputs.logits}) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self.alpha_callback is not None:
            logs["alpha"] = self.alpha
        super().log(logs, start_time)

    def create_model_card(self, **kwargs) -> None:
        """Write `self.model_card` (the results card `run_training` renders from model_card.md) as README.md.

        `Trainer.push_to_hub` calls this before uploading, so the Hub gets our card rather than the Trainer's
        draft, which carries no results. Without a card set, the Trainer's draft is written.
        """
        if self.model_card is None:
            return super().create_model_card(**kwargs)
        if self.is_world_process_zero():
            write_atomic(Path(self.args.output_dir) / "README.md", str(self.model_card))

    # ---- optimisation -----------------------------------------------------------------------------------
    def _official_recipe(self) -> bool:
        return getattr(self.args, "optimizer_recipe", "trainer") == "official"

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        if not self._official_recipe():
            return super().create_optimizer(model)
        if self.optimizer is None:
            params = [p for p in (model or self.model).parameters() if p.requires_grad]
            self.optimizer = torch.optim.SGD(
                params,
                lr=self.args.learning_rate,
                momentum=self.args.sgd_momentum,
                weight_decay=self.args.weight_decay,
            )
        return self.optimizer

    def steps_per_epoch(self) -> int:
        """Optimiser steps per epoch on this rank, as the Trainer counts them."""
        num_samples = len(self._get_train_sampler())
        batches = math.ceil(num_samples / self.args.per_device_train_batch_size)
        batches_per_rank = math.ceil(batches / self.args.world_size)
        return max(1, math.ceil(batches_per_rank / self.args.gradient_accumulation_steps))

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        if not self._official_recipe():
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            factor = partial(
                _official_lr_factor,
                steps_per_epoch=self.steps_per_epoch(),
                base_lr=self.args.learning_rate,
                warmup_epochs=self.args.warmup_epochs,
                cosine_epochs=self.args.cosine_epochs or math.ceil(self.args.num_train_epochs),
                min_lr=self.args.min_learning_rate,
            )
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, factor)
        return self.lr_scheduler
