"""Every check of a recipe's fields together, in one place, before any data is read or any model is built.

Each field was checked on its own when its dataclass was built (a wrong type or an out-of-range value); here the
combinations that cannot train as asked are refused with a `RecipeError` naming the fields, and the ones that are
merely unused are reported. `check_recipe` runs first in `run_training` (and before the first fold of a
cross-validation), so a recipe that would fail after hours of training fails in seconds instead.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from typing import Any

import torch

from ..data import check_source
from ..data.device_augmentation import DeviceAugmentation
from ..methods import Method, MethodArguments
from ..modeling_aduni import create_backbone
from ..training import AdUniTrainingArguments
from .arguments import DataArguments, ModelArguments
from .errors import RecipeError
from .run_data import prepared_metadata, raw_data_error

logger = logging.getLogger(__name__)

# Trainer fields that only `optimizer_recipe: trainer` uses, and ours that only `optimizer_recipe: official` uses.
TRAINER_RECIPE_FIELDS = (
    "optim", "optim_args", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps",
    "adam_beta1", "adam_beta2", "adam_epsilon",
)  # fmt: skip
OFFICIAL_RECIPE_FIELDS = ("warmup_epochs", "min_learning_rate", "cosine_epochs", "sgd_momentum")
ALWAYS_USED_METHOD_FIELDS = ("method", "sampler")


def changed_fields(values: Any, names: tuple[str, ...]) -> list[str]:
    """The `names` whose value in the dataclass instance `values` differs from the field's default."""
    defaults = {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(values)
        if f.name in names
    }
    return [
        name
        for name in names
        if getattr(getattr(values, name), "value", getattr(values, name)) != defaults[name]
    ]


def check_recipe(
    model_args: ModelArguments,
    data_args: DataArguments,
    method_args: MethodArguments,
    training_args: AdUniTrainingArguments,
    method: Method,
) -> None:
    """Refuse the combinations of fields that cannot train as asked; warn about fields the run does not use."""
    _check_backbone_pretrained(model_args)
    _check_selection(data_args, training_args)
    _check_optimizer_recipe(training_args)
    _check_method(model_args, method_args, training_args, method)
    _check_prepared_data(model_args, data_args)
    _check_raw_data(data_args)
    _check_augmentation_device(model_args, data_args)


def _check_backbone_pretrained(model_args: ModelArguments) -> None:
    """The encoder weights to start from are there and fit the encoder, before any data is read: timm loads them
    as the run will (a Hub model is downloaded into the cache), into an encoder on the meta device (nothing is
    allocated; shapes and keys are still checked)."""
    if model_args.backbone_pretrained is None:
        return
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter", category=UserWarning)
            create_backbone(model_args.config, pretrained=True)
    except (ValueError, OSError) as err:
        raise RecipeError(str(err)) from err


def _check_selection(data_args: DataArguments, training_args: AdUniTrainingArguments) -> None:
    if training_args.load_best_model_at_end and data_args.val_fraction == 0:
        raise RecipeError(
            "load_best_model_at_end selects a checkpoint on the validation split, but val_fraction is 0 (no "
            "validation split; the test fold is never used for selection). Set val_fraction > 0, e.g. 0.1, or "
            "load_best_model_at_end false"
        )


def _check_optimizer_recipe(training_args: AdUniTrainingArguments) -> None:
    if training_args.optimizer_recipe == "official":
        ignored = changed_fields(training_args, TRAINER_RECIPE_FIELDS)
        if ignored:
            raise RecipeError(
                f"{', '.join(ignored)} configure the Trainer's optimiser and scheduler, which optimizer_recipe "
                "'official' replaces (SGD with warm-up + cosine: warmup_epochs, min_learning_rate, cosine_epochs, "
                "sgd_momentum). Set optimizer_recipe: trainer to use them, or remove them"
            )
    else:
        ignored = changed_fields(training_args, OFFICIAL_RECIPE_FIELDS)
        if ignored:
            raise RecipeError(
                f"{', '.join(ignored)} configure optimizer_recipe 'official', but optimizer_recipe is "
                f"{training_args.optimizer_recipe!r} (the Trainer's optim and lr_scheduler_type). Remove them, or "
                "set optimizer_recipe: official"
            )


def _check_method(
    model_args: ModelArguments,
    method_args: MethodArguments,
    training_args: AdUniTrainingArguments,
    method: Method,
) -> None:
    """The method against the recipe: its classifier, its stages' trainers and chunking, its unused fields."""
    if method.classifier_type != model_args.classifier_type and changed_fields(
        model_args, ("classifier_type",)
    ):
        raise RecipeError(
            f"method {method.name!r} trains a {method.classifier_type!r} classifier, but classifier_type is "
            f"{model_args.classifier_type!r}; remove classifier_type or set it to {method.classifier_type!r}"
        )
    for index, stage in enumerate(method.stages):
        try:
            stage.trainer_class.check_arguments(training_args, model_args.image_size)
        except ValueError as err:
            raise RecipeError(f"method {method.name!r}, stage {index + 1}: {err}") from err
        if training_args.contrast_chunk_size and not stage.chunkable:
            raise RecipeError(
                f"contrast_chunk_size={training_args.contrast_chunk_size}: method {method.name!r} runs its own forward "
                "in stage {} (a momentum key encoder), which cannot be split into chunks. Leave contrast_chunk_size "
                "unset for this method".format(index + 1)
            )
    unused_fields = tuple(
        f.name
        for f in dataclasses.fields(method_args)
        if f.name not in method.fields and f.name not in ALWAYS_USED_METHOD_FIELDS
    )
    unused = changed_fields(method_args, unused_fields)
    if unused:  # a shared recipe is the paper's protocol (only the method differs): say it, do not refuse
        logger.warning("method %r does not use %s", method.name, ", ".join(unused))
    if method.num_stages > 1:
        if method_args.stage2_learning_rate < training_args.min_learning_rate:
            raise RecipeError(
                f"stage2_learning_rate={method_args.stage2_learning_rate:g} is below min_learning_rate="
                f"{training_args.min_learning_rate:g}, where the second stage's cosine ends; raise "
                "stage2_learning_rate or lower min_learning_rate"
            )
    if method.recommended_sampler is not None and method_args.sampler != method.recommended_sampler:
        logger.warning(
            "note: the official first stage of %r samples with %r; this run uses sampler %r",
            method.name,
            method.recommended_sampler,
            method_args.sampler,
        )


def _check_prepared_data(model_args: ModelArguments, data_args: DataArguments) -> None:
    """A data set prepared at one image size trains at that size, unless the recipe says to resize it."""
    if data_args.dataset_path is None:
        return
    prepared = prepared_metadata(data_args.dataset_path).get("image_size")
    if prepared is None or prepared == model_args.image_size or data_args.resize_prepared_images:
        return
    how = "up-sampled" if prepared < model_args.image_size else "down-sampled once more"
    raise RecipeError(
        f"dataset_path={data_args.dataset_path!r} was prepared at image_size {prepared} (prepare_data.py "
        f"--image_size {prepared}), but the recipe's image_size is {model_args.image_size}: every image would be "
        f"{how}. Prepare the data again with --image_size {model_args.image_size}, set image_size: {prepared}, or "
        "set resize_prepared_images: true to train on the resized images"
    )


def _check_raw_data(data_args: DataArguments) -> None:
    """A data set built by name (no dataset_path) finds its raw download where data_dir says (not read here)."""
    if data_args.dataset_path is not None:
        return
    try:
        check_source(data_args.dataset, data_dir=data_args.data_dir)
    except ValueError as error:
        raise raw_data_error(data_args, error) from error


def _check_augmentation_device(model_args: ModelArguments, data_args: DataArguments) -> None:
    """Augmentation on the device needs a device implementation of the augmentation and images of one size."""
    if data_args.augmentation_device != "device":
        return
    try:
        DeviceAugmentation(data_args.augmentation, model_args.image_size)
    except ValueError as err:
        raise RecipeError(f"augmentation_device: device: {err}; set augmentation_device: loader") from err
    if data_args.dataset_path is not None and prepared_metadata(data_args.dataset_path).get("image_size") is None:
        raise RecipeError(
            f"augmentation_device: device needs images stored at one size, but dataset_path="
            f"{data_args.dataset_path!r} was prepared without --image_size. Prepare it with prepare_data.py "
            f"--image_size {model_args.image_size}, or set augmentation_device: loader"
        )
