"""The data of one run: the fold-annotated data set (prepared on disk, or built here by name), the fold's split,
the class names and training counts, and the evaluation views; checked against the recipe before training."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from torch.utils.data import Dataset

from ..configuration_aduni import AdUniConfig
from ..data import (
    DATASETS,
    FoldSplits,
    SingleViewDataset,
    build_dataset,
    dataset_content_fingerprint,
    dataset_metadata,
    eval_transform,
    split_by_fold,
)
from ..evaluation.metric_names import dataset_metrics
from ..hub.processor import backbone_normalization
from .arguments import DataArguments, ModelArguments
from .errors import RecipeError

logger = logging.getLogger(__name__)


def _how_to_prepare(path: str) -> str:
    return (
        f"write one with: python scripts/prepare_data.py --dataset {{{','.join(DATASETS)}}} --data_dir RAW "
        f"--output_dir {path}"
    )


def prepared_metadata(path: str) -> dict[str, Any]:
    """The metadata of the data set `prepare_data.py` wrote to `path` (its fold assignment, class counts,
    `image_size`, ...), read from its dataset_info.json alone: no Arrow file is opened. A folder that is not such
    a data set is a `RecipeError` naming the field and saying how to write one."""
    folder = Path(path)
    if not folder.is_dir():
        raise RecipeError(f"dataset_path={path!r}: no such folder; {_how_to_prepare(path)}")
    split = folder / "train" if (folder / "dataset_dict.json").is_file() else folder
    info = split / "dataset_info.json"
    if not (split / "state.json").is_file() or not info.is_file():
        raise RecipeError(
            f"dataset_path={path!r} is not a prepared data set (no datasets save_to_disk files); {_how_to_prepare(path)}"
        )
    try:
        return json.loads(json.loads(info.read_text()).get("description") or "{}")
    except (OSError, ValueError, AttributeError):
        return {}


def open_prepared_dataset(path: str) -> datasets.Dataset:
    """A data set written by scripts/prepare_data.py, opened without reading its images, or a clear error."""
    prepared_metadata(path)  # a folder that is no prepared data set is refused here
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if list(loaded) != ["train"]:
            raise RecipeError(f"dataset_path={path!r}: expected one split, found {list(loaded)}")
        loaded = loaded["train"]
    missing = [name for name in ("image", "label", "fold") if name not in loaded.column_names]
    if missing or not isinstance(loaded.features.get("label"), datasets.ClassLabel):
        raise RecipeError(
            f"dataset_path={path!r} is not a prepared data set: it lacks "
            f"{', '.join(missing) or 'a ClassLabel label column'} (columns: {loaded.column_names}); "
            f"{_how_to_prepare(path)}"
        )
    return loaded


def load_data(data_args: DataArguments) -> datasets.Dataset:
    """The fold-annotated dataset: a prepared one from disk (memory-mapped), or built here by name."""
    if data_args.dataset_path is not None:
        return open_prepared_dataset(data_args.dataset_path)
    options: dict[str, Any] = {}
    if data_args.dataset == "digits_lt":
        options["imbalance_ratio"] = data_args.imbalance_ratio
    try:
        return build_dataset(
            data_args.dataset,
            data_dir=data_args.data_dir,
            num_folds=data_args.num_folds,
            seed=data_args.fold_seed,
            **options,
        )
    except ValueError as error:  # the raw data (DataValidationError names the file and row) or a builder option
        raise raw_data_error(data_args, error) from error


def raw_data_error(data_args: DataArguments, error: ValueError) -> RecipeError:
    """`error` of the builder of `dataset` (its raw data or options) as a `RecipeError` naming the fields."""
    where = f", data_dir={data_args.data_dir!r}" if data_args.data_dir is not None else ""
    return RecipeError(f"dataset={data_args.dataset!r}{where}: {error}")


def check_data(dataset: datasets.Dataset, data_args: DataArguments, model_args: ModelArguments) -> list[str]:
    """Check the fold and the classes against the data set's metadata (no image is decoded); return the class
    names. A start model (`model_name_or_path`) must have the same labels unless `ignore_mismatched_sizes`."""
    source = data_args.dataset_path or data_args.dataset
    num_folds = dataset_metadata(dataset).get("num_folds") or len(set(dataset["fold"]))
    if not 0 <= data_args.test_fold < num_folds:
        raise RecipeError(
            f"test_fold={data_args.test_fold} does not exist in {source}: its folds are 0..{num_folds - 1}"
        )
    class_names = list(dataset.features["label"].names)
    if len(class_names) < 2:
        raise RecipeError(
            f"{source} has {'one class, ' + repr(class_names[0]) if class_names else 'no classes'}; a classifier "
            "needs at least two (trained on one, it is right on every test image and reports accuracy 1.0). "
            f"Train on a data set with two or more classes; {_how_to_prepare(source)}"
        )
    if model_args.model_name_or_path is not None:
        saved = AdUniConfig.from_pretrained(model_args.model_name_or_path)
        model_labels = [saved.id2label[i] for i in sorted(saved.id2label)]
        if model_labels != class_names and not model_args.ignore_mismatched_sizes:
            raise RecipeError(
                f"model_name_or_path={model_args.model_name_or_path!r} predicts {model_labels}, but {source} has "
                f"classes {class_names}. Use a model trained on these classes, or pass --ignore_mismatched_sizes "
                "true to start with a new classifier for them"
            )
    return class_names


def data_record(dataset: datasets.Dataset, splits: FoldSplits) -> dict[str, Any]:
    """What identifies the data a run trains on, wherever the folder lies: classes, split sizes and counts, a
    digest of every image's id, label and fold, and the content fingerprint of the images (`aduni_hf.data.
    fingerprint`: other pixels under the same file names change it)."""
    digest = hashlib.sha256()
    for column in ("image_id", "label", "fold"):
        if column in dataset.column_names:
            digest.update(json.dumps(list(dataset[column])).encode())
    return {
        "class_names": list(splits.class_names),
        "train_class_counts": splits.class_counts("train"),
        "num_images": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "digest": digest.hexdigest(),
        "content_fingerprint": dataset_content_fingerprint(dataset, dataset_metadata(dataset)),
    }


def split_fold(dataset: datasets.Dataset, data_args: DataArguments) -> FoldSplits:
    """`split_by_fold` for the recipe, refusing (before any image is decoded) a validation split that cannot be
    made, and a training split of fewer than two classes; classes without a validation image are logged."""
    source = data_args.dataset_path or data_args.dataset
    try:
        splits = split_by_fold(dataset, data_args.test_fold, data_args.val_fraction, seed=data_args.fold_seed)
    except ValueError as error:
        raise RecipeError(f"{source}, test_fold={data_args.test_fold}: {error}") from error
    present = [name for name, count in zip(splits.class_names, splits.class_counts("train"), strict=True) if count]
    if len(present) < 2:
        raise RecipeError(
            f"{source}, test_fold={data_args.test_fold}: the training split holds images of {present or 'no class'} "
            "only; a classifier needs at least two classes to train on. Prepare a data set with more images per class."
        )
    if len(splits.val):
        unseen = [name for name, count in zip(splits.class_names, splits.class_counts("val"), strict=True) if not count]
        if unseen:
            logger.warning(
                "the validation split (val_fraction=%s) has no image of %s: a class gets one when the training folds "
                "hold about %d of its images. Their validation F1 is 0, and counts in the validation macro-F1.",
                data_args.val_fraction,
                unseen,
                round(1 / data_args.val_fraction),
            )
    return splits


@dataclass
class RunData:
    """The data of one run, read once.

    Attributes:
        splits: train (training folds less the validation split), val and test (the held-out fold).
        class_names, train_counts: the classes, and the training split's count of each (logit adjustment).
        metadata: what prepare_data.py recorded (source, folds, image_size, ...).
        record: `data_record`, part of every checkpoint's run record.
        val_dataset, test_dataset: the evaluation views at the model's image size (no validation split: None).
    """

    splits: FoldSplits
    class_names: list[str]
    train_counts: list[int]
    metadata: dict[str, Any]
    record: dict[str, Any]
    val_dataset: Dataset | None
    test_dataset: Dataset


def read_run_data(data_args: DataArguments, model_args: ModelArguments) -> RunData:
    """Load the data set, check it against the recipe, split the fold and build the evaluation views."""
    dataset = load_data(data_args)
    class_names = check_data(dataset, data_args, model_args)
    splits = split_fold(dataset, data_args)
    train_counts = splits.class_counts("train")
    logger.info(
        "train %s images, val %s, test %s; train class counts %s",
        len(splits.train),
        len(splits.val),
        len(splits.test),
        dict(zip(class_names, train_counts, strict=True)),
    )
    evaluation = eval_transform(model_args.image_size, **backbone_normalization(model_args.config))
    metadata = dataset_metadata(dataset)
    try:  # the metrics its card reports: a name this version does not know fails now, not after training
        dataset_metrics(metadata, where=f"{data_args.dataset_path or data_args.dataset}: its metadata")
    except ValueError as error:
        raise RecipeError(str(error)) from error
    return RunData(
        splits=splits,
        class_names=class_names,
        train_counts=train_counts,
        metadata=metadata,
        record=data_record(dataset, splits),
        val_dataset=SingleViewDataset(splits.val, evaluation) if len(splits.val) else None,
        test_dataset=SingleViewDataset(splits.test, evaluation),
    )


def resolve_augmentation_device(data_args: DataArguments, device: torch.device) -> str:
    """`augmentation_device` as the run uses it: "auto" becomes "device" when training on a GPU and the data are
    stored at one size (prepared with --image_size, or built here), else "loader"."""
    if data_args.augmentation_device != "auto":
        return data_args.augmentation_device
    sized = data_args.dataset_path is None or prepared_metadata(data_args.dataset_path).get("image_size") is not None
    return "device" if device.type == "cuda" and sized else "loader"
