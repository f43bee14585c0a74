"""Data: builders of fold-annotated `datasets.Dataset`s, splits, transforms, multi-view datasets, samplers."""

from . import aptos2019, csv_labels, digits, imagefolder, isic2018, medmnist  # noqa: F401  (register builders)
from .builders import DATASET_BUILDERS, build_dataset, dataset_metadata, fold_dataset, register_dataset
from .folds import assign_folds, inner_validation_split
from .image_files import resize_like_transform
from .prepare import PreparedDataset, prepare_dataset
from .samplers import SAMPLERS, EpochSampler, RandomEpochSampler, build_sampler
from .splits import FoldSplits, split_by_fold
from .transforms import AUGMENTATIONS, IMAGENET_MEAN, IMAGENET_STD, build_augmentation, eval_transform
from .validation import DataValidationError, InvalidItem
from .views import DrawKey, MultiViewDataset, SingleViewDataset, as_rgb, collate_views

__all__ = [
    "DATASET_BUILDERS",
    "build_dataset",
    "dataset_metadata",
    "fold_dataset",
    "register_dataset",
    "DataValidationError",
    "InvalidItem",
    "PreparedDataset",
    "prepare_dataset",
    "resize_like_transform",
    "assign_folds",
    "inner_validation_split",
    "SAMPLERS",
    "EpochSampler",
    "RandomEpochSampler",
    "build_sampler",
    "FoldSplits",
    "split_by_fold",
    "AUGMENTATIONS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_augmentation",
    "eval_transform",
    "DrawKey",
    "MultiViewDataset",
    "SingleViewDataset",
    "as_rgb",
    "collate_views",
]
