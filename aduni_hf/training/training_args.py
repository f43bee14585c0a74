"""`AdUniTrainingArguments`: the Trainer's arguments with the official AdUni optimisation recipe as the default,
and the fields of AdUni's training switches; each checked when built."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from transformers import TrainingArguments
from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK


def default_bf16(use_cpu: bool, fp16: bool) -> bool:
    """The `bf16` of a recipe that leaves it unset: on for a CUDA GPU with native bf16 kernels; off on the CPU
    (faster only with AMX and large images, and the tests' exact comparisons are float32) and on older GPUs,
    where fp16 is the user's choice (it needs loss scaling)."""
    return not use_cpu and not fp16 and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def can_pin_memory(use_cpu: bool) -> bool:
    """Whether data loaders can pin batches in page-locked memory: only for an accelerator that trains (torch
    ignores `pin_memory` without one, and on MPS, with a warning at every loader)."""
    accelerator = torch.accelerator.current_accelerator(check_available=True)
    return not use_cpu and accelerator is not None and accelerator.type != "mps"


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
            'kernels of current CPUs and GPUs run faster (README, "Performance"); the numbers are the same up to '
            "float rounding. false: NCHW, as the released code."
        },
    )
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "bf16 autocast for the network; weights, optimiser and every loss stay float32. Default: on when "
            "training on a CUDA GPU with bf16 (Ampere and newer), off on the CPU, where it pays only on processors "
            'with AMX and at large images (README, "Performance"): set it there yourself.'
        },
    )
    dataloader_persistent_workers: bool | None = field(
        default=None,
        metadata={
            "help": "Keep the data-loader workers alive across epochs and evaluations. Default: on whenever "
            "dataloader_num_workers > 0 (views are seeded by the sampler's keys, not by the worker)."
        },
    )
    dataloader_pin_memory: bool | None = field(
        default=None,
        metadata={
            "help": "Pin the batches in page-locked memory, for a faster copy to the accelerator. Default: on when "
            "training on an accelerator (a CUDA GPU, ...), off on the CPU, where nothing can use it (an explicit "
            "true is turned off there too)."
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
    batch_shuffle: bool = field(
        default=True,
        metadata={
            "help": "Put the draws of every global batch in a random order (seeded by seed and epoch) before it is split "
            "among the processes and into contrast chunks, as the released loop permutes each up-sampled batch before "
            "DataParallel splits it; the images of a batch and their views stay the same. false: the sampler's order "
            "(class by class for upsample), as runs before this field."
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

    @property
    def memory_format(self) -> torch.memory_format:
        """The memory format of the model and the images: `channels_last` or torch's default."""
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def check_model(self, image_size: int) -> None:
        """Refuse switches that cannot train a model of `image_size` here (called before any data is read)."""
        if self.bf16 and self.device.type == "cpu" and image_size < 32:
            # torch's CPU bf16 convolution (oneDNN, torch 2.14) returns garbage weight gradients, finite or not, for a
            # stride-2 3x3 convolution over a 1x1 map: a ResNet's layer4 below 32 px (README, "Performance").
            raise ValueError(
                f"bf16 on the CPU with image_size {image_size}: below 32 px the CPU's bf16 convolution computes "
                "corrupt weight gradients in the last stage; set bf16 false or image_size >= 32"
            )
        if self.sync_bn and self.world_size > 1 and self.device.type != "cuda":
            raise ValueError(
                "sync_bn needs GPU processes (SyncBatchNorm has no CPU kernel); on CPU use freeze_bn, or leave "
                "BatchNorm per process"
            )

    def __getstate__(self) -> dict[str, Any]:
        """Pickled state (the Trainer's training_args.bin) without the Hub token or any other `*_token` field."""
        state = dict(self.__dict__)
        for name in state:
            if name.endswith("_token"):
                state[name] = None
        return state

    def check_lengths_and_steps(self) -> None:
        """Refuse a training that cannot train: no steps (an untrained model would be reported as a result), no
        step size, or empty batches."""
        if self.max_steps <= 0 and not self.num_train_epochs > 0:
            raise ValueError(
                f"num_train_epochs must be > 0, got {self.num_train_epochs} (or give max_steps > 0): a run without "
                "training steps would report an untrained model"
            )
        if not self.learning_rate > 0:
            raise ValueError(
                f"learning_rate must be > 0, got {self.learning_rate}: it is the step size of every update"
            )
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def check_report_to(self) -> None:
        """Refuse an integration name the Trainer does not know now, not when it is built after the data is read."""
        unknown = [name for name in self.report_to if name not in INTEGRATION_TO_CALLBACK]
        if unknown:
            raise ValueError(
                f"report_to={', '.join(map(str, unknown))} is unknown; choose 'none', 'all' or integrations among "
                f"{sorted(INTEGRATION_TO_CALLBACK)}"
            )

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
        # Unset or true: pinned where an accelerator trains (use_cpu is settled by now); false stays false.
        self.dataloader_pin_memory = self.dataloader_pin_memory is not False and can_pin_memory(self.use_cpu)
        super().__post_init__()
        self.check_lengths_and_steps()
        self.check_report_to()
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
            raise ValueError(
                "freeze_bn and sync_bn exclude each other: frozen BatchNorm computes no statistics"
            )
        if self.dataloader_drop_last:
            raise ValueError(
                'dataloader_drop_last would also drop evaluation images (docs/hf_stack.md, "Trainer"); leave it False'
            )
