"""Data, in two stages.

Build time (raw download -> fold-annotated `datasets.Dataset`, once, by `scripts/prepare_data.py`):
`sources/` holds one reader per source, each registered in `DATASETS` and run by `build_dataset`; every
reader ends in `assemble.assemble_dataset`, the one path that checks ids, decodes images (`images.py`),
assigns folds and records metadata; `validation.py` holds the bad-input rules (raise by default, leave out
and report with skip_invalid); `prepare.py` saves the result atomically.

Train time (a prepared Dataset -> batches): `folds.split_by_fold` (train / validation / test of one fold),
`transforms.py` (augmentations in `AUGMENTATIONS`, the evaluation transform), `views.py` (seeded multi-view
and single-view torch datasets) and `samplers.py` (epoch samplers in `SAMPLERS`).
"""

from .assemble import dataset_metadata
from .fingerprint import dataset_content_fingerprint
from .folds import FoldSplits, assign_folds, inner_validation_split, split_by_fold
from .images import as_rgb, resize_like_transform
from .prepare import PreparedDataset, prepare_dataset
from .samplers import (
    SAMPLERS,
    ClassAwareSampler,
    EpochSampler,
    FirstDraws,
    ProgressiveSampler,
    RandomEpochSampler,
    SquareRootSampler,
    UpSampler,
    build_sampler,
    training_epochs,
)
from .sources import DATASETS, build_dataset, check_source
from .transforms import AUGMENTATIONS, IMAGENET_MEAN, IMAGENET_STD, build_augmentation, eval_transform
from .validation import DataValidationError, InvalidItem
from .views import DrawKey, MultiViewDataset, PixelViewsDataset, SingleViewDataset, collate_views, view_major

__all__ = [
    # build time
    "DATASETS",
    "build_dataset",
    "check_source",
    "dataset_metadata",
    "dataset_content_fingerprint",
    "prepare_dataset",
    "PreparedDataset",
    "DataValidationError",
    "InvalidItem",
    "as_rgb",
    "resize_like_transform",
    # train time
    "assign_folds",
    "inner_validation_split",
    "split_by_fold",
    "FoldSplits",
    "AUGMENTATIONS",
    "build_augmentation",
    "eval_transform",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DrawKey",
    "MultiViewDataset",
    "PixelViewsDataset",
    "SingleViewDataset",
    "collate_views",
    "view_major",
    "SAMPLERS",
    "EpochSampler",
    "RandomEpochSampler",
    "UpSampler",
    "ClassAwareSampler",
    "SquareRootSampler",
    "ProgressiveSampler",
    "build_sampler",
    "FirstDraws",
    "training_epochs",
]
