"""A training method is one object: `Method`, with its `Stage`s, registered in `METHODS` under its recipe name.

Everything that makes a method is declared here, once: its loss in each stage (built from the recipe's method
fields), the views that loss needs, the classifier it trains, what each stage freezes and re-initialises, its
sampler, the trainer class of each stage, the fields it reads, its description for the model card, its rows in
the paper's tables and any report it adds after training. The run resolves the method once
(`METHODS[method_args.method]`) and passes it down; no module branches on a method's name.

Adding a method is one file that builds a `Method` and calls `register`, plus its import in
`aduni_hf/methods/__init__.py` (or, from outside the package, the call alone: tests/training/test_toy_method.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..evaluation.paper_results import PaperEntry
from ..losses import MethodLoss
from ..registry import Registry
from ..training import AdUniTrainer

# The recipe's method fields, `aduni_hf.methods.MethodArguments` (arguments.py builds on this module: its `method`
# field is checked against `METHODS`).
MethodArguments = Any

BN_MODES = ("train", "eval")
EPOCH_LENGTHS = ("sampler", "dataset")
CLASSIFIER_TYPES = ("linear", "cosine")  # AdUniConfig.classifier_type


@dataclass(frozen=True)
class LossInputs:
    """What a stage's loss is built from: the classes, the training split's class counts (logit adjustment,
    margins, re-weighting), the model being trained (a loss with its own encoder copies it) and the recipe's
    method fields."""

    num_classes: int
    class_counts: Sequence[int]
    model: nn.Module
    args: MethodArguments


@dataclass(frozen=True)
class Stage:
    """One training stage of a method.

    Attributes:
        loss: builds the stage's loss from `LossInputs`.
        num_views: augmented views per image its batches carry (2 for the contrastive losses).
        description: what the stage trains with, for the log and the model card ("AduC (alpha scheduled)").
        sampler: the training sampler (`aduni_hf.data.SAMPLERS`); None: the recipe's `sampler`.
        freeze_encoder: the encoder (`model.aduni`: backbone and projection head) does not train: requires_grad
            False, so it is in no optimiser and its weights stay as they are.
        freeze_classifier: the classifier likewise (a stage whose loss has no classifier term).
        reinit_classifier: the classifier gets fresh weights at the start of the stage (PyTorch's default Linear
            init, drawn from a generator seeded by the recipe's seed).
        bn_mode: with a frozen encoder, "train" (BatchNorm normalises with batch statistics and updates its
            running statistics) or "eval" (frozen); the recipe's `stage2_bn` overrides it in a later stage.
        epoch_length: "sampler" (an epoch is the sampler's) or "dataset" (the batches of an instance-balanced
            epoch, as classifier-balancing counts a cRT epoch).
        trainer_class: the `AdUniTrainer` (sub)class that trains the stage; its `check_arguments` runs with the
            recipe's checks, before any data is read.
        chunkable: whether `contrast_chunk_size` can split its batches (False for a loss with its own forward).
    """

    loss: Callable[[LossInputs], MethodLoss]
    num_views: int = 1
    description: str = ""
    sampler: str | None = None
    freeze_encoder: bool = False
    freeze_classifier: bool = False
    reinit_classifier: bool = False
    bn_mode: str = "train"
    epoch_length: str = "sampler"
    trainer_class: type[AdUniTrainer] = AdUniTrainer
    chunkable: bool = True

    def __post_init__(self) -> None:
        if self.num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {self.num_views}")
        if self.bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, got {self.bn_mode!r}")
        if self.epoch_length not in EPOCH_LENGTHS:
            raise ValueError(f"epoch_length must be one of {EPOCH_LENGTHS}, got {self.epoch_length!r}")

    @property
    def encoder_mode(self) -> str | None:
        """What `AdUniTrainer(encoder_mode=...)` needs: "eval" for a frozen encoder in eval mode, else None."""
        return "eval" if self.freeze_encoder and self.bn_mode == "eval" else None


@dataclass(frozen=True)
class TrainedRun:
    """What a report after training (`Method.after_training`) may read: the folder of every stage's final model
    (the run's `output_dir` for a one-stage method), the evaluation data sets and where to compute."""

    stage_dirs: tuple[Path, ...]
    val_dataset: Any
    test_dataset: Any
    class_names: Sequence[str]
    batch_size: int
    device: torch.device


@dataclass(frozen=True)
class MethodReport:
    """A method's own report after training: its metrics on the validation split (`eval_<name>_*`) and the test
    fold (`test_<name>_*`), added to the run's results, and a title for the console."""

    name: str
    title: str
    eval_metrics: dict[str, float]
    test_metrics: dict[str, float]


AfterTraining = Callable[[TrainedRun], MethodReport | None]


@dataclass(frozen=True)
class Method:
    """A training method of the paper's tables (or a new one), as a recipe names it (`method: aduni`).

    Attributes:
        name: the recipe name.
        description: one or two sentences for the model card: what the method trains, with what.
        stages: one stage, or two (a second stage on the frozen encoder).
        fields: the `MethodArguments` fields the method reads; a recipe that changes another one is told it is
            not used (a shared recipe is the paper's protocol, where only the method differs).
        classifier_type: the classifier the method trains (`AdUniConfig.classifier_type`).
        recommended_sampler: the first stage's sampler in the released code, noted when a recipe differs.
        paper: the method's results in the paper's Tables 1-2, (data set, sampler) -> accuracy and macro-F1.
        paper_variant: where a recipe field selects another row of the tables (aduni_fixed with alpha 0.01):
            (data set, sampler, method fields) -> that row, or None for the `paper` row.
        after_training: a report computed after training from the stages' saved models (decouple's
            tau-normalisation): `TrainedRun` -> `MethodReport` (or None when it cannot be computed).
    """

    name: str
    description: str
    stages: tuple[Stage, ...]
    fields: tuple[str, ...] = ()
    classifier_type: str = "linear"
    recommended_sampler: str | None = None
    paper: Mapping[tuple[str, str], PaperEntry] = field(default_factory=dict)
    paper_variant: Callable[[str, str, MethodArguments], PaperEntry | None] | None = None
    after_training: AfterTraining | None = None

    def __post_init__(self) -> None:
        if not 1 <= len(self.stages) <= 2:
            raise ValueError(f"method {self.name!r}: one or two stages, got {len(self.stages)}")
        if self.classifier_type not in CLASSIFIER_TYPES:
            raise ValueError(f"method {self.name!r}: classifier_type must be one of {CLASSIFIER_TYPES}")

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def paper_row(self, dataset: str, sampler: str, args: MethodArguments | None = None) -> PaperEntry | None:
        """The paper's 5-fold mean ± std for this method with `sampler` on `dataset`, or None where it has none."""
        if self.paper_variant is not None and args is not None:
            variant = self.paper_variant(dataset, sampler, args)
            if variant is not None:
                return variant
        return self.paper.get((dataset, sampler))

    def card_summary(self, args: MethodArguments) -> dict[str, Any]:
        """The method's fields and their values, for the model card's recipe table."""
        return {name: getattr(args, name) for name in self.fields}


METHODS: Registry[Method] = Registry("method")


def register(method: Method) -> Method:
    """Make `method` available to recipes as `method: <method.name>`; returns it."""
    return METHODS.register(method.name)(method)


__all__ = ["METHODS", "LossInputs", "Method", "MethodReport", "Stage", "TrainedRun", "register"]
