"""The official AdUni optimisation recipe (docs/method.md, "Schedules"): SGD with momentum and weight decay on every
parameter, and the released code's per-epoch warm-up then cosine, as a LambdaLR over optimiser steps."""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from ..schedules import official_learning_rate
from .training_args import AdUniTrainingArguments


def official_optimizer(model: nn.Module, args: AdUniTrainingArguments) -> torch.optim.SGD:
    """SGD on the parameters that train (a frozen encoder's are left out), the recipe's momentum and weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(
        params, lr=args.learning_rate, momentum=args.sgd_momentum, weight_decay=args.weight_decay
    )


def _lr_factor(step: int, steps_per_epoch: int, base_lr: float, **schedule) -> float:
    """LambdaLR factor of optimiser step `step`: the official per-epoch learning rate over the base one."""
    return official_learning_rate(step // steps_per_epoch, base_lr=base_lr, **schedule) / base_lr


def official_scheduler(
    optimizer: torch.optim.Optimizer, args: AdUniTrainingArguments, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate of the epoch of each step: warm-up over `warmup_epochs`, then cosine on the raw epoch to
    `min_learning_rate` at `cosine_epochs` (default: the training's epochs)."""
    factor = partial(
        _lr_factor,
        steps_per_epoch=steps_per_epoch,
        base_lr=args.learning_rate,
        warmup_epochs=args.warmup_epochs,
        cosine_epochs=args.cosine_epochs or math.ceil(args.num_train_epochs),
        min_lr=args.min_learning_rate,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def steps_per_epoch(num_samples: int, args: AdUniTrainingArguments) -> int:
    """Optimiser steps per epoch on each process for an epoch of `num_samples` draws, as the Trainer counts them."""
    batches = math.ceil(num_samples / args.per_device_train_batch_size)
    batches_per_rank = math.ceil(batches / args.world_size)
    return max(1, math.ceil(batches_per_rank / args.gradient_accumulation_steps))
