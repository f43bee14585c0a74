"""The model as training switches want it: BatchNorm frozen (`freeze_bn`) or synchronised across GPU processes
(`sync_bn`), the memory layout (`channels_last`), and the frozen parts back in eval mode after each `model.train()`."""

from __future__ import annotations

from torch import nn

from .training_args import AdUniTrainingArguments


def batch_norm_layers(model: nn.Module) -> list[nn.Module]:
    """Every BatchNorm layer of `model` (1-, 2- and 3-d, and SyncBatchNorm)."""
    return [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]


def prepare_for_training(model: nn.Module, args: AdUniTrainingArguments) -> nn.Module:
    """`model` with `freeze_bn` (BatchNorm parameters out of training), `sync_bn` (one BatchNorm over the global
    batch of several GPU processes; `check_model` refuses it elsewhere) and the memory format applied."""
    if args.freeze_bn:
        for module in batch_norm_layers(model):
            module.requires_grad_(False)
    if args.sync_bn and args.world_size > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.to(memory_format=args.memory_format)


def set_frozen_modes(model: nn.Module, encoder_eval: bool, freeze_bn: bool) -> None:
    """After the Trainer's `model.train()`: a frozen encoder (`model.base_model`) and frozen BatchNorm layers back
    in eval mode, so that they normalise with, and keep, their running statistics."""
    if encoder_eval:
        model.base_model.eval()
    if freeze_bn:
        for module in batch_norm_layers(model):
            module.eval()


__all__ = ["batch_norm_layers", "prepare_for_training", "set_frozen_modes"]
