"""The training recipe table of the model cards: the settings that define a run, with the values in force.

One function, `recipe_summary`, writes it for every card (a run's, a fold's, a cross-validation's summary and the
card pushed while training), so they cannot disagree. It shows what took effect: the official optimiser and
schedule or the Trainer's (never both), epochs or `max_steps`, the global batch, the fields the method reads
(`Method.fields`), the precision and the switches that are on; not the Trainer's other fields.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..methods import Method, MethodArguments
from ..training import AdUniTrainingArguments
from .arguments import DataArguments, ModelArguments
from .run_data import resolve_augmentation_device
from .staged_training import describe_stage, resolve_stage

_WHERE_AUGMENTED = {"device": "on the training device", "loader": "on the data-loader workers"}


def weights_source(model_args: ModelArguments) -> str:
    """Where the encoder's first weights come from, for the card (a local path named by its last part only: the
    card may be public)."""
    if model_args.model_name_or_path:
        return f"from {model_args.model_name_or_path}"
    if model_args.backbone_pretrained:
        source = model_args.backbone_pretrained
        where = f"the local {Path(source).name}" if Path(source).expanduser().exists() else source
        return f"initialised with the pretrained weights {where}, loaded by timm"
    return "from scratch"


def data_description(data_args: DataArguments) -> str:
    """The data set and its folds (the same for every fold of a cross-validation: the test fold is not in it)."""
    name = Path(data_args.dataset_path).name if data_args.dataset_path else data_args.dataset
    if data_args.dataset_path is None and data_args.dataset == "digits_lt":
        name += f" (imbalance ratio {data_args.imbalance_ratio:g})"
    folds = (
        "its prepared folds"
        if data_args.dataset_path
        else f"{data_args.num_folds} folds (fold seed {data_args.fold_seed})"
    )
    return f"{name}, {folds}, {data_args.val_fraction:.0%} of the training folds for validation"


def optimiser_rows(args: AdUniTrainingArguments) -> dict[str, str]:
    """The optimiser and the learning-rate schedule in force: the official recipe's or the Trainer's."""
    if args.optimizer_recipe == "official":
        horizon = args.cosine_epochs or math.ceil(args.num_train_epochs)  # as official_scheduler
        return {
            "optimiser": f"SGD, lr {args.learning_rate:g}, momentum {args.sgd_momentum:g}, weight decay "
            f"{args.weight_decay:g} (all parameters)",
            "learning-rate schedule": f"linear warm-up over {args.warmup_epochs} epochs, then cosine to "
            f"{args.min_learning_rate:g} at epoch {horizon} (the learning rate changes once per epoch)",
        }
    optim = str(getattr(args.optim, "value", args.optim))
    optimiser = f"{optim}, lr {args.learning_rate:g}, weight decay {args.weight_decay:g}"
    if "adam" in optim:
        optimiser += f" (betas {args.adam_beta1:g}, {args.adam_beta2:g}; eps {args.adam_epsilon:g})"
    if args.optim_args:
        optimiser += f", {args.optim_args}"
    schedule = str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type))
    if args.lr_scheduler_kwargs:
        schedule += f" {args.lr_scheduler_kwargs}"
    if args.warmup_steps:
        warmup = args.warmup_steps
        schedule += f", warm-up {warmup:.0%} of the steps" if warmup < 1 else f", warm-up {warmup:g} steps"
    return {"optimiser": optimiser, "learning-rate schedule": schedule}


def length_and_batch(args: AdUniTrainingArguments) -> dict[str, str]:
    """How long the run trains (max_steps, when set, overrides num_train_epochs) and its global batch."""
    length = (
        f"{args.max_steps} optimiser steps (max_steps)"
        if args.max_steps > 0
        else f"{args.num_train_epochs:g}"
    )
    processes, accumulation = args.world_size, args.gradient_accumulation_steps
    batch = (
        f"{args.per_device_train_batch_size} per device × {processes} process{'es' if processes > 1 else ''} × "
        f"{accumulation} accumulation step{'s' if accumulation > 1 else ''} = "
        f"{args.per_device_train_batch_size * processes * accumulation}"
    )
    return {"epochs": length, "batch": batch}


def precision_and_switches(args: AdUniTrainingArguments) -> dict[str, str]:
    """The numeric precision, the clipping and the training switches that are on (none shown when all are off)."""
    if args.bf16:
        precision = "bf16 autocast (weights, optimiser and losses float32)"
    else:
        precision = "fp16 mixed precision" if args.fp16 else "float32"
    switches = [
        name
        for name, on in (
            ("freeze_bn", args.freeze_bn),
            ("sync_bn", args.sync_bn and args.world_size > 1),
            ("drop_last_train_batch", args.drop_last_train_batch),
        )
        if on
    ]
    if args.contrast_chunk_size:
        switches.append(f"contrast_chunk_size {args.contrast_chunk_size}")
    data_seed = f" (data order: data_seed {args.data_seed})" if args.data_seed is not None else ""
    rows = {
        "seed": f"{args.seed}{data_seed}",
        "precision": precision,
        "gradient clipping": f"norm {args.max_grad_norm:g}" if args.max_grad_norm else "none",
    }
    if switches:
        rows["training switches"] = ", ".join(switches)
    return rows


def recipe_summary(
    model_args: ModelArguments,
    data_args: DataArguments,
    method_args: MethodArguments,
    args: AdUniTrainingArguments,
    method: Method,
) -> dict[str, str]:
    """The cards' recipe table: each setting that defines the run, in the paper's terms, with its value in force
    (the augmentation's device as this machine resolves it, the defaults the arguments filled in)."""
    device = resolve_augmentation_device(data_args, args.device)
    first_stage = resolve_stage(method.stages[0], 0, method_args)
    summary = {
        "method": method.name,
        "data set": data_description(data_args),
        "backbone": f"{model_args.backbone} ({weights_source(model_args)})",
        "image size": f"{model_args.image_size}×{model_args.image_size}",
        "augmentation": f"{data_args.augmentation} ({_WHERE_AUGMENTED[device]})",
        **optimiser_rows(args),
        **length_and_batch(args),
        "sampler": first_stage.sampler,
    }
    if method.num_stages > 1:
        for index, stage in enumerate(method.stages):
            summary[f"stage {index + 1}"] = describe_stage(
                resolve_stage(stage, index, method_args), index, args, method_args
            )
    summary.update({name: str(value) for name, value in method.card_summary(method_args).items()})
    summary.update(precision_and_switches(args))
    return summary
