"""The argument dataclasses of a recipe: one YAML key per field, validated when built.

`scripts/train.py` parses `ModelArguments`, `DataArguments`, `MethodArguments` and `AdUniTrainingArguments`
with `HfArgumentParser`; every check below raises a `ValueError` naming the field before any work starts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from transformers import TrainingArguments

from ..configuration_aduni import AdUniConfig
from ..data import AUGMENTATIONS, DATASETS, SAMPLERS
from ..losses import LOSSES
from ..losses.stages import STAGE2_BN_MODES
from ..schedules import ALPHA_SCHEDULES


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


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
    """What the model is: every `AdUniConfig` field (backbone, projection_dim, ...), validated by `AdUniConfig`
    itself, plus where the initial weights come from."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Start from a saved AdUni model (a local folder or a Hub id). Its architecture fields must "
            "match the recipe's; a different number of classes re-initialises only the classifier."
        },
    )
    pretrained_backbone: str | None = field(
        default=None,
        metadata={"help": "Local .safetensors/.pth file of encoder weights; default: from scratch."},
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
        if self.model_name_or_path is not None and self.pretrained_backbone is not None:
            raise ValueError("give model_name_or_path or pretrained_backbone, not both")
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

    def __post_init__(self) -> None:
        if self.dataset_path is None:
            DATASETS.check(self.dataset, field="dataset")
        AUGMENTATIONS.check(self.augmentation, field="augmentation")
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


@dataclass
class MethodArguments:
    """The training method: its loss, its sampler and, for AdUni, the AduC constants and alpha schedule."""

    method: str = field(default="aduni", metadata={"help": f"Method (its loss): {', '.join(LOSSES)}."})
    sampler: str = field(default="none", metadata={"help": f"Training sampler: {', '.join(SAMPLERS)}."})
    temperature: float = field(
        default=0.1, metadata={"help": "AduC temperature T of the sample similarities."}
    )
    base_temperature: float = field(
        default=0.07, metadata={"help": "AduC T_b; the loss is scaled by T/T_b (official 0.07: x1.43)."}
    )
    beta: float = field(default=1.0, metadata={"help": "Weight of the own-class classifier column."})
    alpha_schedule: str = field(
        default="official", metadata={"help": f"Alpha schedule kind: {', '.join(ALPHA_SCHEDULES)}."}
    )
    alpha_max: float = field(default=1.0, metadata={"help": "Alpha at the start (and the constant value)."})
    alpha_min: float = field(default=0.01, metadata={"help": "Alpha at the end."})
    alpha_decay: float = field(
        default=1000, metadata={"help": "t_decay of the official/cosine/step schedules."}
    )
    logit_adjustment: bool = field(
        default=True,
        metadata={"help": "Shift the classifier logits by the log training prior inside AduC and PaCo (official)."},
    )
    # The paper's alternatives to the released AduC (docs/method.md, "Paper and code: every difference")
    classifier_temperature: float = field(
        default=1.0,
        metadata={"help": "AduC: divide the class columns by this (1: released code; = temperature: the paper)."},
    )
    positive_normalisation: bool = field(
        default=True,
        metadata={"help": "AduC: divide by beta + alpha |P(i)| (released code); false: the paper's plain sum."},
    )
    beta_from_alpha: bool = field(
        default=False, metadata={"help": "AduC: beta = 1 - alpha (the released code's 'linear' mode)."}
    )
    # PaCo and PaCo+AduC (Cui et al. 2021; docs/method.md, "Baselines")
    paco_alpha: float = field(default=0.05, metadata={"help": "PaCo: weight of the positive samples (constant)."})
    paco_beta: float = field(default=1.0, metadata={"help": "PaCo: weight of the own-class classifier column."})
    paco_gamma: float = field(default=1.0, metadata={"help": "PaCo: weight of the samples in the denominator."})
    queue_size: int = field(
        default=1024, metadata={"help": "PaCo: key features in the queue, a multiple of the global batch."}
    )
    paco_momentum: float = field(default=0.999, metadata={"help": "PaCo: momentum of the key encoder."})
    # LDAM-DRW (Cao et al. 2019)
    max_margin: float = field(default=0.5, metadata={"help": "LDAM: the margin of the rarest class."})
    ldam_scale: float = field(default=30.0, metadata={"help": "LDAM: scale s of the cosine logits."})
    drw_beta: float = field(default=0.9999, metadata={"help": "DRW: beta of the effective-number weights."})
    drw_start: float = field(
        default=0.8, metadata={"help": "DRW: share of training after which re-weighting starts (320 of 400)."}
    )
    # BALMS (Ren et al. 2020): the Meta Sampler of its second stage.
    meta_learning_rate: float = field(
        default=0.01, metadata={"help": "balms: Adam learning rate of the Meta Sampler's class weights (official)."}
    )
    meta_init_pow: float = field(
        default=0.0,
        metadata={
            "help": "balms: initial sampler weights sigmoid(w_c) proportional to prior^-meta_init_pow (official 0: "
            "instance-balanced; ImageNet-LT 0.1)."
        },
    )
    # Two-stage methods (decouple, cicl, balms): the second stage, a re-initialised classifier on the frozen encoder.
    # One-stage methods ignore these fields.
    stage2_epochs: int = field(
        default=10,
        metadata={"help": "Two-stage methods: epochs of the second stage (cRT's 10; max_steps caps each stage)."},
    )
    stage2_learning_rate: float = field(
        default=0.05,
        metadata={
            "help": "Two-stage methods: peak SGD learning rate of the second stage, cosine to min_learning_rate, no "
            "warm-up (cRT's 0.2 at batch 512, scaled linearly to batch 128)."
        },
    )
    stage2_bn: str | None = field(
        default=None,
        metadata={
            "help": "Two-stage methods: BatchNorm of the frozen encoder in the second stage, train (statistics "
            "updated on the stage-2 batches) or eval (frozen). Default: the method's official choice (decouple, balms "
            "train, cicl eval)."
        },
    )

    def __post_init__(self) -> None:
        LOSSES.check(self.method, field="method")
        SAMPLERS.check(self.sampler, field="sampler")
        ALPHA_SCHEDULES.check(self.alpha_schedule, field="alpha_schedule")
        _positive("temperature", self.temperature)
        _positive("base_temperature", self.base_temperature)
        _positive("beta", self.beta)
        _positive("alpha_decay", self.alpha_decay)
        for name in ("paco_alpha", "paco_gamma", "max_margin"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("paco_beta", "ldam_scale", "queue_size", "classifier_temperature", "meta_learning_rate"):
            _positive(name, getattr(self, name))
        if not 0 <= self.paco_momentum < 1:
            raise ValueError(f"paco_momentum must be in [0, 1), got {self.paco_momentum}")
        if not 0 < self.drw_beta < 1:
            raise ValueError(f"drw_beta must be in (0, 1), got {self.drw_beta}")
        if not 0 <= self.drw_start <= 1:
            raise ValueError(f"drw_start must be in [0, 1], got {self.drw_start}")
        if isinstance(self.stage2_epochs, bool) or not isinstance(self.stage2_epochs, int) or self.stage2_epochs < 1:
            raise ValueError(f"stage2_epochs must be an integer >= 1, got {self.stage2_epochs!r}")
        _positive("stage2_learning_rate", self.stage2_learning_rate)
        if self.stage2_bn is not None and self.stage2_bn not in STAGE2_BN_MODES:
            raise ValueError(
                f"stage2_bn must be one of {list(STAGE2_BN_MODES)} (or unset: the method's default), got {self.stage2_bn!r}"
            )
        if self.alpha_min < 0:
            raise ValueError(f"alpha_min must be >= 0, got {self.alpha_min}")
        if self.alpha_min > self.alpha_max:
            raise ValueError(f"alpha_min={self.alpha_min} must not exceed alpha_max={self.alpha_max}")


def default_bf16(use_cpu: bool, fp16: bool) -> bool:
    """The `bf16` of a recipe that leaves it unset: on for a CUDA GPU with native bf16 kernels; off on the CPU
    (faster only with AMX and large images, and the tests' exact comparisons are float32) and on older GPUs,
    where fp16 is the user's choice (it needs loss scaling)."""
    return not use_cpu and not fp16 and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@dataclass(repr=False)  # keep TrainingArguments.__repr__, which masks the Hub token; a generated one shows it
class AdUniTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the official AdUni optimisation recipe as the default (docs/method.md, "Schedules").

    `optimizer_recipe: official` trains with SGD (momentum 0.9, weight decay on all parameters), a per-epoch
    linear warm-up over `warmup_epochs`, then cosine on the raw epoch to `min_learning_rate` at `cosine_epochs`
    (default: num_train_epochs). `optimizer_recipe: trainer` uses the Trainer's own `optim` and
    `lr_scheduler_type` instead.
    """

    optimizer_recipe: Literal["official", "trainer"] = field(
        default="official",
        metadata={"help": "official (SGD, epoch warm-up + cosine) or trainer (optim, scheduler)."},
    )
    warmup_epochs: int = field(default=10, metadata={"help": "Official recipe: linear warm-up epochs."})
    min_learning_rate: float = field(default=1e-4, metadata={"help": "Official recipe: the cosine floor."})
    cosine_epochs: int | None = field(
        default=None, metadata={"help": "Official recipe: the cosine horizon (default num_train_epochs)."}
    )
    sgd_momentum: float = field(default=0.9, metadata={"help": "Official recipe: SGD momentum."})
    torch_threads: int | None = field(
        default=None,
        metadata={
            "help": "CPU threads for torch. Default: every core when a single process trains on the CPU "
            "(accelerate launch sets OMP_NUM_THREADS=1 for each process), else torch's own setting."
        },
    )
    # Defaults that differ from TrainingArguments: the official recipe and what the two-view data path needs.
    learning_rate: float = field(default=0.1, metadata={"help": "The initial (peak) learning rate."})
    weight_decay: float = field(
        default=1e-4, metadata={"help": "Weight decay (official: on all parameters)."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Must stay False: the image column is needed by the transforms."}
    )
    eval_strategy: str = field(
        default="epoch", metadata={"help": "When to evaluate on the validation split."}
    )
    logging_strategy: str = field(
        default="epoch", metadata={"help": "When to log the training loss and alpha."}
    )
    save_strategy: str = field(
        default="no",
        metadata={
            "help": "Checkpointing during training (the ISIC2018 and APTOS2019 recipes save every epoch)."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Train a fresh run into an output_dir that holds a finished or interrupted one (its checkpoints "
            "and results are removed first). Without it a finished run is refused and an interrupted one resumed."
        },
    )
    channels_last: bool = field(
        default=True,
        metadata={
            "help": "Keep the model and the images in channels_last memory format (NHWC), which the convolution "
            "kernels of current CPUs and GPUs run faster (README, \"Performance\"); the numbers are the same up to "
            "float rounding. false: NCHW, as the released code."
        },
    )
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "bf16 autocast for the network; weights, optimiser and every loss stay float32. Default: on when "
            "training on a CUDA GPU with bf16 (Ampere and newer), off on the CPU, where it pays only on processors "
            "with AMX and at large images (README, \"Performance\"): set it there yourself."
        },
    )
    dataloader_persistent_workers: bool | None = field(
        default=None,
        metadata={
            "help": "Keep the data-loader workers alive across epochs and evaluations. Default: on whenever "
            "dataloader_num_workers > 0 (views are seeded by the sampler's keys, not by the worker)."
        },
    )
    contrast_chunk_size: int | None = field(
        default=None,
        metadata={
            "help": "Compute the loss of the whole batch while holding the activations of this many view-major rows "
            "at a time (gradient caching; BatchNorm normalises each chunk, as each replica of the official "
            "4-GPU DataParallel run did: 64 of 256 rows). Default: the whole batch at once."
        },
    )
    freeze_bn: bool = field(
        default=False,
        metadata={
            "help": "Freeze every BatchNorm layer: running statistics kept (eval mode) and affine parameters not "
            "trained. For fine-tuning pretrained weights; it also makes several processes train exactly as one."
        },
    )
    sync_bn: bool = field(
        default=False,
        metadata={
            "help": "Several GPU processes: one BatchNorm over the global batch (SyncBatchNorm). Default off: each "
            "process normalises its own share, as each replica of the official DataParallel run did."
        },
    )
    figures: bool = field(
        default=True,
        metadata={
            "help": "Write the run's figures into output_dir/figures/ (confusion matrix, per-class training loss, "
            "learning rate and alpha, t-SNE of the test features) and link them from the model card."
        },
    )
    drop_last_train_batch: bool = field(
        default=False,
        metadata={
            "help": "Leave out the last, incomplete training batch of every epoch (training only; evaluation never "
            "drops). The released loop keeps it; a batch of one or two images gives BatchNorm unusable statistics."
        },
    )
    selection_metric: str = field(
        default="macro_f1",
        metadata={
            "help": "Validation metric that chooses the reported 'best validation' model (test_best_val_*), "
            "besides the last-epoch model (test_*)."
        },
    )
    official_test_selection: bool = field(
        default=False,
        metadata={
            "help": "Also report the model chosen as the released code does: the last epoch at which TEST accuracy "
            "and TEST macro-F1 both improved (test_official_selection_*). It reads the test fold during training: "
            "optimistic, for comparison with the paper's numbers only."
        },
    )
    max_grad_norm: float | None = field(
        default=None,
        metadata={
            "help": "Gradient clipping norm (0: off). Default: off for optimizer_recipe official (the released "
            "loop never clips), the Trainer's 1.0 for optimizer_recipe trainer."
        },
    )

    def __getstate__(self) -> dict[str, Any]:
        """Pickled state (the Trainer's training_args.bin) without the Hub token or any other `*_token` field."""
        state = dict(self.__dict__)
        for name in state:
            if name.endswith("_token"):
                state[name] = None
        return state

    def __post_init__(self) -> None:
        if self.bf16 is None:
            self.bf16 = default_bf16(self.use_cpu, self.fp16)
        elif self.bf16 and not self.use_cpu and not torch.accelerator.is_available():
            # transformers refuses bf16 without a GPU unless told the CPU is meant; here nothing else can train
            self.use_cpu = True
        if self.dataloader_persistent_workers is None:
            self.dataloader_persistent_workers = self.dataloader_num_workers > 0
        if self.max_grad_norm is None:
            # Trainer clips to 1.0 unless told otherwise; the official loop has no clipping (docs/method.md,
            # "Schedules"), so the official recipe turns it off, and run_config.yaml shows the value in force.
            self.max_grad_norm = 0.0 if self.optimizer_recipe == "official" else 1.0
        if not self.use_cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
            # Under torchrun or `accelerate launch --multi_gpu` on a machine without GPUs, accelerate makes the
            # processes one distributed (MULTI_CPU, gloo) run only when told the CPU is meant; otherwise each process
            # trains its own model, unwrapped and unsynchronised, with nothing in the logs to say so.
            self.use_cpu = True
        super().__post_init__()
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.min_learning_rate < 0 or self.min_learning_rate > self.learning_rate:
            raise ValueError(
                f"min_learning_rate must be in [0, learning_rate={self.learning_rate}], got {self.min_learning_rate}"
            )
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1, got {self.torch_threads}")
        if self.cosine_epochs is not None and self.cosine_epochs < 1:
            raise ValueError(f"cosine_epochs must be >= 1, got {self.cosine_epochs}")
        if self.remove_unused_columns:
            raise ValueError("remove_unused_columns must be False: the image column feeds the transforms")
        if self.contrast_chunk_size is not None and self.contrast_chunk_size < 2:
            raise ValueError(
                f"contrast_chunk_size must be >= 2 rows (BatchNorm needs two), got {self.contrast_chunk_size}"
            )
        if self.freeze_bn and self.sync_bn:
            raise ValueError("freeze_bn and sync_bn exclude each other: frozen BatchNorm computes no statistics")
        if self.dataloader_drop_last:
            raise ValueError(
                'dataloader_drop_last would also drop evaluation images (docs/hf_stack.md, "Trainer"); leave it False'
            )
