"""The model and data fields of a recipe (`ModelArguments`, `DataArguments`); the method's are
`aduni_hf.methods.MethodArguments`, the Trainer's `aduni_hf.training.AdUniTrainingArguments`. Every field is
checked on its own when its dataclass is built; `checks.check_recipe` checks them together."""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any

from ..configuration_aduni import AdUniConfig
from ..data import AUGMENTATIONS, DATASETS
from ..methods import MethodArguments
from ..training import AdUniTrainingArguments

AUGMENTATION_DEVICES = ("auto", "loader", "device")


def _config_field(config_field: dataclasses.Field) -> tuple[str, Any, dataclasses.Field]:
    """A recipe field mirroring one `AdUniConfig` field: same name, type, default and help."""
    annotation = config_field.type
    if isinstance(annotation, str):  # the config module uses postponed annotations
        annotation = eval(annotation, {})  # noqa: S307  (builtin type expressions such as "int | None")
    if dict in typing.get_args(annotation):
        annotation = dict | str | None  # argparse hands over JSON text; ModelArguments parses it
    return (
        config_field.name,
        annotation,
        field(default=config_field.default, metadata=dict(config_field.metadata)),
    )


MODEL_FIELDS = AdUniConfig.aduni_field_names()  # the model's own fields, not those of every PreTrainedConfig
_ConfigFields = dataclasses.make_dataclass(
    "_ConfigFields", [_config_field(f) for f in dataclasses.fields(AdUniConfig) if f.name in MODEL_FIELDS]
)


@dataclass
class ModelArguments(_ConfigFields):
    """What the model is: every `AdUniConfig` field (backbone, projection_dim, backbone_pretrained, ...), validated
    by `AdUniConfig` itself, plus where the initial weights come from."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Start from a saved AdUni model (a local folder or a Hub id). Its architecture fields must "
            "match the recipe's; a different number of classes re-initialises only the classifier."
        },
    )
    pretrained_backbone: str | None = field(
        default=None,
        metadata={"help": "Replaced by backbone_pretrained (which timm loads); a recipe that sets it is refused."},
    )
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={
            "help": "With model_name_or_path: train on data whose classes differ from the model's labels, with a "
            "new classifier (as in transformers' example scripts). Without it such a start is refused."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.backbone_kwargs, str):
            try:
                self.backbone_kwargs = json.loads(self.backbone_kwargs)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"backbone_kwargs must be a JSON object, got {self.backbone_kwargs!r}"
                ) from error
        if self.pretrained_backbone is not None:
            raise ValueError(
                f"pretrained_backbone was replaced by backbone_pretrained: timm now loads the weights (a local file, a "
                f"timm model folder or a Hub id such as timm/resnet18.a1_in1k) and the run normalises images with "
                f"their mean/std. Rename the field: backbone_pretrained: {self.pretrained_backbone}"
            )
        if self.model_name_or_path is not None and self.backbone_pretrained is not None:
            raise ValueError(
                "give model_name_or_path (a saved AdUni model, encoder included) or backbone_pretrained (encoder "
                "weights for a new model), not both"
            )
        self.config = AdUniConfig(**self.config_fields())  # the model's config checks every value

    def config_fields(self) -> dict[str, Any]:
        """The `AdUniConfig` fields of the recipe."""
        return {name: getattr(self, name) for name in MODEL_FIELDS}


@dataclass
class DataArguments:
    """Which data, which fold, which augmentation."""

    dataset: str = field(
        default="digits_lt",
        metadata={"help": f"Data set to build when dataset_path is not given: {', '.join(DATASETS)}."},
    )
    dataset_path: str | None = field(
        default=None, metadata={"help": "A dataset written by scripts/prepare_data.py (save_to_disk folder)."}
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "Raw download for the builder of `dataset`."}
    )
    num_folds: int = field(default=5, metadata={"help": "Folds when the data set is built here."})
    fold_seed: int = field(
        default=42, metadata={"help": "Seed of the fold assignment and the validation split."}
    )
    test_fold: int = field(
        default=0, metadata={"help": "The held-out fold: evaluated only, never trained on."}
    )
    val_fraction: float = field(
        default=0.1,
        metadata={"help": "Stratified share of the training folds kept for validation (0: none)."},
    )
    augmentation: str = field(
        default="kaggle", metadata={"help": f"Training augmentation: {', '.join(AUGMENTATIONS)}."}
    )
    imbalance_ratio: float = field(
        default=10.0, metadata={"help": "digits_lt only: majority/minority ratio."}
    )
    augmentation_device: str = field(
        default="auto",
        metadata={
            "help": "Where the training augmentation runs: loader (each view in a data-loader worker, on PIL images), "
            "device (a batch of views at once on the training device, from pixels stored at one size), or auto: "
            "device when training on a GPU, else loader. The random parameters are the same either way."
        },
    )
    resize_prepared_images: bool = field(
        default=False,
        metadata={
            "help": "Train at image_size although dataset_path was prepared at another size (prepare_data.py "
            "--image_size): every image is resized again. Without it such a recipe is refused."
        },
    )

    def __post_init__(self) -> None:
        if self.dataset_path is None:
            DATASETS.check(self.dataset, field="dataset")
        AUGMENTATIONS.check(self.augmentation, field="augmentation")
        if self.augmentation_device not in AUGMENTATION_DEVICES:
            raise ValueError(
                f"augmentation_device must be one of {list(AUGMENTATION_DEVICES)}, got {self.augmentation_device!r}"
            )
        if self.num_folds < 2:
            raise ValueError(f"num_folds must be >= 2, got {self.num_folds}")
        if self.test_fold < 0:
            raise ValueError(f"test_fold must be >= 0, got {self.test_fold}")
        if self.dataset_path is None and self.test_fold >= self.num_folds:
            raise ValueError(
                f"test_fold={self.test_fold} does not exist: {self.dataset} is split into num_folds="
                f"{self.num_folds} folds, 0..{self.num_folds - 1}"
            )
        if not 0 <= self.val_fraction < 0.5:
            raise ValueError(f"val_fraction must be in [0, 0.5), got {self.val_fraction}")
        if self.imbalance_ratio < 1:
            raise ValueError(f"imbalance_ratio must be >= 1, got {self.imbalance_ratio}")


# The argument dataclasses of a recipe, in the order of run_config.yaml.
ARGUMENT_CLASSES = (ModelArguments, DataArguments, MethodArguments, AdUniTrainingArguments)
