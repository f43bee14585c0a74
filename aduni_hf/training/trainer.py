"""`AdUniTrainer`: the Trainer with AdUni's two-view batches, its loss, sampler and optimisation recipe."""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.distributed as dist
from accelerate.utils import DistributedType
from huggingface_hub import ModelCard
from torch import nn
from torch.utils.data import Sampler
from transformers import Trainer
from transformers.trainer_callback import ExportableState, PrinterCallback, ProgressCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, SaveStrategy, rotate_checkpoints

from ..data.samplers import EpochSampler, build_sampler
from ..data.views import view_major
from ..schedules import official_learning_rate
from ..utils import write_atomic
from .callbacks import (
    AlphaScheduleCallback,
    EpochProgressCallback,
    PersistentWorkersCallback,
    draw_as_a_new_iterator,
)
from .checkpoints import METHOD_STATE_NAME, RUN_RECORD_NAME, STAGING_PREFIX, last_checkpoint, mark_failed
from .chunked import chunked_training_step

EPOCH_LENGTHS = ("sampler", "dataset")
# The reported models besides the last epoch's, each saved in output_dir as <name>.safetensors and <name>.json:
VALIDATION_SELECTION = "best_validation"  # the best validation `selection_metric` (honest model selection)
OFFICIAL_SELECTION = "official_test_selection"  # the released code's rule on the test fold (optimistic)
SELECTIONS = (VALIDATION_SELECTION, OFFICIAL_SELECTION)
ENCODER_MODES = ("train", "eval")


def batch_norm_layers(model: nn.Module) -> list[nn.Module]:
    """Every BatchNorm layer of `model` (1-, 2- and 3-d, and SyncBatchNorm)."""
    return [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]


class FirstDraws(Sampler):
    """The first `count` draws of every epoch of an `EpochSampler` (its `set_epoch` and `labels` pass through).

    classifier-balancing counts a cRT epoch as the batches of an instance-balanced epoch (`epoch_steps` = N / batch
    in run_networks.py) while its class-aware sampler yields M*C draws; this gives the same epoch length.
    """

    def __init__(self, sampler: EpochSampler, count: int) -> None:
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        self.sampler = sampler
        self.count = min(int(count), len(sampler))

    @property
    def labels(self) -> torch.Tensor:
        return self.sampler.labels

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.count)

    def __len__(self) -> int:
        return self.count


class NonFiniteTrainingError(RuntimeError):
    """Training met a non-finite loss or gradient; the message names the step, epoch, alpha and batch."""


def _official_lr_factor(step: int, steps_per_epoch: int, base_lr: float, **schedule) -> float:
    """LambdaLR factor of optimiser step `step`: the official per-epoch learning rate over the base one."""
    return official_learning_rate(step // steps_per_epoch, base_lr=base_lr, **schedule) / base_lr


# where the gradients are whole on every process after backward (no sharding, no DeepSpeed engine)
PLAIN_DISTRIBUTED_TYPES = (DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.MULTI_CPU)


class AdUniTrainer(Trainer):
    """Trainer for AdUni and the other methods of the `losses` registry.

    - Training items carry `pixel_values` of shape (B, V, 3, H, W): V independently augmented views. They go
      through the model as ONE view-major batch (V*B images: BatchNorm sees every view, rows i and i+B are two
      views of image i), and `loss_fn.from_outputs(outputs, labels, alpha)` gives the loss. A loss with its
      own forward (a momentum key encoder) defines `forward_views(model, pixel_values, labels, alpha)`
      returning (loss, logits of the first view) instead; a loss that changes with the epoch defines
      `set_epoch(epoch, num_epochs)`, called before every training step.
    - Evaluation items carry one view (B, 3, H, W); the loss is cross-entropy and the logits go to
      `compute_metrics`.
    - alpha comes from the `AlphaScheduleCallback` among the callbacks (one is added with the official defaults
      if the loss uses alpha and none is given) and is written into the training logs.
    - The train sampler is `sampler` from the `aduni_hf.data.SAMPLERS` registry, a pure function of
      (seed, epoch). `epoch_length="dataset"` keeps the first floor(N / B) * B draws of each of its epochs (N the
      training images, B the global batch): an epoch has the batches of an instance-balanced one whatever the
      sampler draws (classifier-balancing's cRT epochs).
    - `encoder_mode="eval"` runs the encoder (`model.base_model`: backbone and projection head) in eval mode
      during training, its BatchNorm statistics frozen (a second stage on a frozen encoder, CICL's linear probe);
      None (default) leaves the whole model in the Trainer's train mode.
    - The console shows a progress bar (in a terminal) and one compact line per epoch (`EpochProgressCallback`).
    - With `args.optimizer_recipe == "official"`: SGD with momentum and weight decay on every parameter, and
      the per-epoch warm-up + cosine learning rate of the released code (docs/method.md, "Schedules").
    - Checkpoints are written whole or not at all (staged, then renamed), carry `run_record` and the loss's
      training state (`loss_fn.state_dict()`: a momentum encoder, a feature queue), and a resume restores it
      (docs/hf_stack.md, "Checkpoints and resuming").
    - A non-finite loss or gradient stops training with `NonFiniteTrainingError` and `training_failed.json`
      in `output_dir`; the checkpoints before it are kept.

    Args:
        loss_fn: a loss of the `aduni_hf.losses` registry (for example `AduCLoss`).
        sampler: name of the training sampler (`aduni_hf.data.SAMPLERS`).
        run_record: what the run is (`checkpoints.run_record`), saved in every checkpoint as aduni_run.json.
        encoder_mode: None, or "eval" (see above; "train" is the Trainer's own mode and changes nothing).
        epoch_length: "sampler" (default) or "dataset" (see above).
        run_dir: the run's output_dir, where `training_failed.json` goes (default `args.output_dir`; a stage of a
            two-stage method writes its checkpoints into a folder of the run).
        Everything else as `transformers.Trainer`.
    """

    # compute_loss returns a per-batch mean, so Trainer divides it by the gradient-accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        *args,
        loss_fn: nn.Module,
        sampler: str = "none",
        run_record: dict[str, Any] | None = None,
        encoder_mode: str | None = None,
        epoch_length: str = "sampler",
        run_dir: str | Path | None = None,
        selection_test_dataset=None,
        **kwargs,
    ) -> None:
        if encoder_mode is not None and encoder_mode not in ENCODER_MODES:
            raise ValueError(f"encoder_mode must be None or one of {ENCODER_MODES}, got {encoder_mode!r}")
        if epoch_length not in EPOCH_LENGTHS:
            raise ValueError(f"epoch_length must be one of {EPOCH_LENGTHS}, got {epoch_length!r}")
        super().__init__(*args, **kwargs)
        self.run_record = run_record or {}
        self.encoder_mode = encoder_mode
        self.epoch_length = epoch_length
        self.run_dir = Path(run_dir if run_dir is not None else self.args.output_dir)
        self._batch_labels: torch.Tensor | None = None  # the last training batch's labels, for error messages
        self._loss_bad: torch.Tensor | None = None  # a non-finite loss since the last optimiser step
        self._last_loss: torch.Tensor | None = None
        self._contrast_tally: torch.Tensor | None = (
            None  # class counts of the contrast sets since the last log
        )
        self._contrast_sets = 0
        self._class_loss_sum: torch.Tensor | None = (
            None  # per-class sum and count of the loss since the last log
        )
        self._class_loss_count: torch.Tensor | None = None
        self.selection_test_dataset = selection_test_dataset
        self.selection_dir = Path(self.args.output_dir)  # a stage's folder stays its own after training
        image_size = getattr(getattr(self.model, "config", None), "image_size", None)
        if self.args.bf16 and self.args.device.type == "cpu" and image_size is not None and image_size < 32:
            # torch's CPU bf16 convolution (oneDNN, torch 2.14) returns garbage weight gradients, finite or not, for a
            # stride-2 3x3 convolution over a 1x1 map: a ResNet's layer4 below 32 px (README, "Performance").
            raise ValueError(
                f"bf16 on the CPU with image_size {image_size}: below 32 px the CPU's bf16 convolution computes "
                "corrupt weight gradients in the last stage; set bf16 false or image_size >= 32"
            )
        if getattr(self.args, "freeze_bn", False):
            for module in batch_norm_layers(self.model):
                for parameter in module.parameters(recurse=False):
                    parameter.requires_grad_(False)
        if getattr(self.args, "sync_bn", False):
            self._convert_to_sync_batch_norm()
        self.memory_format = (
            torch.channels_last if getattr(self.args, "channels_last", False) else torch.contiguous_format
        )
        if self.memory_format is torch.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # One compact line per epoch (and a bar in a terminal) instead of a dict per log.
        self.remove_callback(ProgressCallback)
        self.remove_callback(PrinterCallback)
        self.add_callback(EpochProgressCallback())
        self.add_callback(PersistentWorkersCallback())
        self.loss_fn = loss_fn.to(self.args.device)
        if self.memory_format is torch.channels_last:  # a loss's own encoder (PaCo's key encoder) alike
            self.loss_fn.to(memory_format=torch.channels_last)
        self.sampler_name = sampler
        self.model_card: ModelCard | None = None  # the results card; see create_model_card
        self.alpha_callback = next(
            (cb for cb in self.callback_handler.callbacks if isinstance(cb, AlphaScheduleCallback)), None
        )
        if self.alpha_callback is None and getattr(loss_fn, "uses_alpha", False):
            self.alpha_callback = AlphaScheduleCallback()
            self.add_callback(self.alpha_callback)

    def _convert_to_sync_batch_norm(self) -> None:
        """One BatchNorm over the global batch of several GPU processes; refused where it cannot run."""
        if self.args.world_size == 1:
            return  # one process: BatchNorm already sees the whole batch
        if self.args.device.type != "cuda":
            raise ValueError(
                "sync_bn needs GPU processes (SyncBatchNorm has no CPU kernel); on CPU use freeze_bn, or leave "
                "BatchNorm per process"
            )
        self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model_wrapped = self.model

    def epoch_index(self) -> int:
        """The epoch being trained, from 0 (`state.epoch` is a float that can read 2.9999999 at the start of 3)."""
        return math.floor((self.state.epoch or 0.0) + 1e-6)

    @property
    def alpha(self) -> float:
        return self.alpha_callback.alpha if self.alpha_callback is not None else 0.0

    # ---- data -------------------------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset=None) -> EpochSampler | FirstDraws:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        config = getattr(self.model, "config", None)
        sampler = build_sampler(
            self.sampler_name,
            dataset.labels,
            seed=seed,
            # The contrast set of one loss computation: every process's micro-batch (docs/method.md, "Sampling").
            batch_size=self.args.per_device_train_batch_size * self.args.world_size,
            # The progressive sampler's horizon is the learning-rate cosine's (the released code: 400 for both).
            num_epochs=getattr(self.args, "cosine_epochs", None) or math.ceil(self.args.num_train_epochs),
            num_classes=getattr(config, "num_labels", None),
        )
        if self.epoch_length == "dataset":
            batch = self.args.per_device_train_batch_size * self.args.world_size
            sampler = FirstDraws(sampler, max(1, len(dataset.labels) // batch) * batch)
        batch = self.args.per_device_train_batch_size * self.args.world_size
        if (
            getattr(self.args, "drop_last_train_batch", False)
            and len(sampler) % batch
            and len(sampler) > batch
        ):
            sampler = FirstDraws(
                sampler, len(sampler) // batch * batch
            )  # training only: evaluation keeps all
        return sampler

    def get_eval_dataloader(self, eval_dataset=None) -> torch.utils.data.DataLoader:
        """The Trainer's evaluation loader, kept per data set under persistent workers.

        With `dataloader_persistent_workers` the Trainer keeps the first loader it builds under the key "eval" and
        returns it for any data set object passed later: `evaluate(test_dataset)` after a validation pass would
        evaluate the validation images again. Data sets other than `self.eval_dataset` get their own key here.
        A loader that reuses its workers draws from torch's RNG what a new one would (`draw_as_a_new_iterator`).
        """
        if eval_dataset is None or isinstance(eval_dataset, str) or eval_dataset is self.eval_dataset:
            loader = super().get_eval_dataloader(eval_dataset)
        else:
            key = f"dataset-{id(eval_dataset)}"  # unique while cached: the loader keeps the data set alive
            loader = getattr(self, "_eval_dataloaders", {}).get(key)
            if loader is None or not self.args.dataloader_persistent_workers:
                loader = self._get_dataloader(
                    dataset=eval_dataset,
                    description="Evaluation",
                    batch_size=self.args.eval_batch_size,
                    sampler_fn=self._get_eval_sampler,
                    dataloader_key=key,
                )
        draw_as_a_new_iterator(loader)  # about to be iterated: the random stream as without persistent workers
        return loader

    # ---- loss -------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        pixel_values, labels = inputs["pixel_values"], inputs["labels"]
        if pixel_values.ndim == 5:  # training: (B, V, 3, H, W)
            self._batch_labels = labels
            self._prepare_training_forward()
            if hasattr(self.loss_fn, "forward_views"):  # methods with their own forward (PaCo's key encoder)
                loss, logits = self.loss_fn.forward_views(model, pixel_values, labels, alpha=self.alpha)
            else:
                outputs = model(pixel_values=view_major(pixel_values, self.memory_format))
                loss = self.loss_fn.from_outputs(outputs, labels, alpha=self.alpha)
                logits = outputs.logits[: len(labels)]
            self._count_contrast_set()
            self._count_class_losses()
            return (loss, {"logits": logits}) if return_outputs else loss
        pixel_values = pixel_values.contiguous(memory_format=self.memory_format)
        outputs = model(pixel_values=pixel_values, labels=labels)  # evaluation: one view, CE as eval_loss
        return (outputs.loss, {"logits": outputs.logits}) if return_outputs else outputs.loss

    def _prepare_training_forward(self) -> None:
        """What a training forward needs after the Trainer's `model.train()`: the frozen parts in eval mode, and the
        loss told the epoch."""
        if self.encoder_mode == "eval":  # the Trainer has just put the whole model in train mode
            self.model.base_model.eval()
        if getattr(self.args, "freeze_bn", False):
            for module in batch_norm_layers(self.model):
                module.eval()
        if hasattr(self.loss_fn, "set_epoch"):  # losses that change during training (LDAM's deferred weights)
            self.loss_fn.set_epoch(self.epoch_index(), math.ceil(self.args.num_train_epochs))

    # ---- a training step; the numerical guard --------------------------------------------------------------
    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        chunk_rows = getattr(self.args, "contrast_chunk_size", None)
        if chunk_rows and inputs["pixel_values"].ndim == 5:  # the whole batch's loss, one chunk's activations
            model.train()
            inputs = self._prepare_inputs(inputs)
            self._prepare_training_forward()
            with self.compute_loss_context_manager():
                loss = chunked_training_step(
                    self, model, inputs["pixel_values"], inputs["labels"], chunk_rows
                )
            self._count_contrast_set()
            self._count_class_losses()
        else:
            loss = super().training_step(model, inputs, num_items_in_batch)
        # read once per optimiser step, in _get_grad_norm: no host synchronisation per micro-batch
        loss_bad = ~torch.isfinite(loss.detach().float())
        self._loss_bad = loss_bad if self._loss_bad is None else self._loss_bad | loss_bad
        self._last_loss = loss.detach()
        return loss

    def _get_grad_norm(self, model: nn.Module, grad_norm=None):
        """The gradient norm the Trainer logs, computed once per optimiser step, and the numerical guard on it.

        Without clipping the Trainer gets the norm from `clip_grad_norm_(..., inf)`, which also multiplies every
        gradient by 1; here the norm alone is taken, where no gradient scaler or sharded parameters are involved.
        """
        plain = self.accelerator.distributed_type in PLAIN_DISTRIBUTED_TYPES and not self.args.fp16
        if grad_norm is None and plain:
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            grad_norm = torch.nn.utils.get_total_norm(grads) if grads else None
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        self._check_finite(grad_norm)
        return grad_norm

    def _check_finite(self, grad_norm) -> None:
        """Stop before the optimiser step on a non-finite loss since the last step, or a non-finite gradient
        (its norm is inf or nan if any entry is, and inf if the float32 sum of squares overflows, which only a
        diverged step reaches: entries above about 1e19).

        Every process takes the same decision (the flags are all-reduced), so none is left waiting in a
        collective. Under fp16 the gradient scaler skips steps with overflowing gradients by design, so only the
        loss is checked there.
        """
        device = self.args.device
        loss_bad = self._loss_bad if self._loss_bad is not None else torch.zeros((), dtype=torch.bool)
        self._loss_bad = None
        grad_bad = torch.zeros((), dtype=torch.bool, device=device)
        if not self.args.fp16 and grad_norm is not None:
            grad_bad = ~torch.isfinite(torch.as_tensor(grad_norm, device=device).float())
        flags = torch.stack([loss_bad.to(device), grad_bad]).float()
        if self.args.world_size > 1 and dist.is_initialized():
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        if not flags.any():
            return
        what = "loss" if flags[0] else "gradient"
        self._stop_non_finite(what, float(self._last_loss.float()))

    def _stop_non_finite(self, what: str, loss_value: float) -> None:
        epoch = self.epoch_index()
        names = self.model.config.id2label if hasattr(self.model, "config") else {}
        counts = {}
        if self._batch_labels is not None:
            bins = torch.bincount(self._batch_labels.detach().cpu(), minlength=len(names)).tolist()
            counts = {str(names.get(c, c)): n for c, n in enumerate(bins)}
        checkpoint = last_checkpoint(self.args.output_dir)
        report = {
            "error": f"non-finite {what}",
            "loss": loss_value if math.isfinite(loss_value) else str(loss_value),
            "step": self.state.global_step + 1,
            "epoch": epoch + 1,
            "num_train_epochs": math.ceil(self.args.num_train_epochs),
            "alpha": self.alpha,
            "batch_class_counts": counts,
            "last_checkpoint": str(checkpoint) if checkpoint else None,
        }
        if self.is_world_process_zero():
            marked = mark_failed(self.run_dir, report)
        else:
            marked = self.run_dir / "training_failed.json"
        resume = (
            f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint was saved before it"
        )
        raise NonFiniteTrainingError(
            f"non-finite {what} (loss {loss_value}) at optimiser step {report['step']}, epoch {report['epoch']}/"
            f"{report['num_train_epochs']}, alpha {self.alpha:.4g}; batch class counts {counts}. Training stopped: "
            f"{resume}; the run is marked failed in {marked}."
        )

    # ---- the contrast set, in the paper's terms -----------------------------------------------------------
    def _count_contrast_set(self) -> None:
        """Add the class counts of the contrast set of the last loss (`loss_fn.contrast_labels`: the batch's views
        for AduC, the batch and the queue for PaCo) to this logging period's tally."""
        labels = getattr(self.loss_fn, "contrast_labels", None)
        if labels is None:
            return
        counts = torch.bincount(labels.reshape(-1), minlength=self.model.config.num_labels).double()
        self._contrast_tally = counts if self._contrast_tally is None else self._contrast_tally + counts
        self._contrast_sets += 1

    def _contrast_logs(self) -> dict[str, float]:
        """The mean number of samples of the majority class and of a minority class in one contrast set, over the
        logging period, and of the rarest class (the paper's memory argument: 70 vs 14 per AdUni batch, 795 vs 68
        in PaCo's queue on APTOS2019). Majority and rarest are the most and least frequent training classes."""
        if self._contrast_tally is None:
            return {}
        mean = self._contrast_tally / self._contrast_sets
        counts = torch.bincount(torch.as_tensor(self.train_dataset.labels), minlength=len(mean)).double()
        majority = int(counts.argmax())
        rarest = int(counts.masked_fill(counts == 0, math.inf).argmin())
        minority = torch.cat([mean[:majority], mean[majority + 1 :]])
        self._contrast_tally, self._contrast_sets = None, 0
        return {
            "contrast_majority": float(mean[majority]),
            "contrast_minority": float(minority.mean()),
            "contrast_rarest": float(mean[rarest]),
        }

    # ---- the loss of each class (the paper's Fig. 2) ----------------------------------------------------------
    def _count_class_losses(self) -> None:
        """Add the last loss's per-row values (`loss_fn.row_losses`: each anchor's or sample's loss and its class)
        to this logging period's per-class sums."""
        row_losses = getattr(self.loss_fn, "row_losses", None)
        if row_losses is None:
            return
        values, labels = row_losses
        classes = self.model.config.num_labels
        # on the loss's device: no host synchronisation in the training step (read at log time only)
        sums = torch.zeros(classes, dtype=torch.float64, device=values.device).index_add_(
            0, labels, values.double()
        )
        counts = torch.bincount(labels, minlength=classes).double()
        if self._class_loss_sum is None:
            self._class_loss_sum, self._class_loss_count = sums, counts
        else:
            self._class_loss_sum += sums
            self._class_loss_count += counts

    def _class_loss_logs(self) -> dict[str, float]:
        """`class_loss_<class>`: the mean loss of the anchors (or samples) of each class over the logging period."""
        if self._class_loss_sum is None:
            return {}
        names = self.model.config.id2label
        sums, counts = self._class_loss_sum.cpu(), self._class_loss_count.cpu()
        logs = {
            f"class_loss_{names.get(c, c)}": float(sums[c] / counts[c])
            for c in range(len(sums))
            if counts[c] > 0
        }
        self._class_loss_sum = self._class_loss_count = None
        return logs

    # ---- reported models: the best on validation, and the official rule on the test fold --------------------
    def _evaluate(self, trial, ignore_keys_for_eval, skip_scheduler: bool = False) -> dict[str, float]:
        metrics = super()._evaluate(trial, ignore_keys_for_eval, skip_scheduler)
        if self.compute_metrics is None:  # only a loss: nothing to choose a model by
            return metrics
        key = f"eval_{getattr(self.args, 'selection_metric', 'macro_f1')}"
        if key not in metrics:
            raise KeyError(
                f"selection_metric: the validation metrics have no {key} (they have {sorted(metrics)})"
            )
        best = self._read_selection(VALIDATION_SELECTION)
        if best is None or metrics[key] > best["value"]:
            self._save_selection(VALIDATION_SELECTION, {"metric": key, "value": metrics[key]})
        if self.selection_test_dataset is not None:
            test = self.evaluate(self.selection_test_dataset, metric_key_prefix="test_every_epoch")
            best = self._read_selection(OFFICIAL_SELECTION)
            accuracy, macro_f1 = test["test_every_epoch_accuracy"], test["test_every_epoch_macro_f1"]
            # classifier-balancing-style rule of the released AdUni code (main.py): both strictly better
            if best is None or (accuracy > best["accuracy"] and macro_f1 > best["macro_f1"]):
                self._save_selection(OFFICIAL_SELECTION, {"accuracy": accuracy, "macro_f1": macro_f1})
        return metrics

    def _read_selection(self, name: str) -> dict[str, Any] | None:
        path = self.selection_dir / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def _save_selection(self, name: str, record: dict[str, Any]) -> None:
        """The current weights as `<name>.safetensors` and what chose them as `<name>.json` (written last)."""
        if self.is_world_process_zero():
            directory = self.selection_dir
            directory.mkdir(parents=True, exist_ok=True)
            state = self.accelerator.unwrap_model(self.model).state_dict()
            state = {key: value.detach().cpu().contiguous() for key, value in state.items()}
            staging = directory / f"{STAGING_PREFIX}{name}.safetensors"
            safetensors.torch.save_file(state, str(staging), metadata={"format": "pt"})
            os.replace(staging, directory / f"{name}.safetensors")
            # epoch: the Trainer's count when the evaluation ran (3.0: after the third epoch)
            record = {
                **record,
                "epoch": round(self.state.epoch or 0.0, 4),
                "global_step": self.state.global_step,
            }
            write_atomic(directory / f"{name}.json", json.dumps(record, indent=2))
        self.accelerator.wait_for_everyone()

    def selected_model(self, name: str) -> tuple[dict[str, Any], Path] | None:
        """(what chose it, its weights file) of the model `name` (`VALIDATION_SELECTION`, `OFFICIAL_SELECTION`)."""
        record = self._read_selection(name)
        if record is None:
            return None
        return record, self.selection_dir / f"{name}.safetensors"

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if resume_from_checkpoint is None and self.is_world_process_zero():
            for name in SELECTIONS:  # a fresh run: what an earlier attempt chose is not this run's
                for suffix in (".json", ".safetensors"):
                    (self.selection_dir / f"{name}{suffix}").unlink(missing_ok=True)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            if self.alpha_callback is not None:
                logs["alpha"] = self.alpha
            logs.update(self._contrast_logs())
            logs.update(self._class_loss_logs())
        super().log(logs, start_time)

    def create_model_card(self, **kwargs) -> None:
        """Write `self.model_card` (the results card `run_training` renders from model_card.md) as README.md.

        `Trainer.push_to_hub` calls this before uploading, so the Hub gets our card rather than the Trainer's
        draft, which carries no results. Without a card set, the Trainer's draft is written.
        """
        if self.model_card is None:
            return super().create_model_card(**kwargs)
        if self.is_world_process_zero():
            write_atomic(Path(self.args.output_dir) / "README.md", str(self.model_card))

    def save_metrics(self, split: str, metrics: dict[str, float], combined: bool = True) -> None:
        """`Trainer.save_metrics`, each file written atomically, `<split>_results.json` after all_results.json."""
        if not self.is_world_process_zero():
            return
        output_dir = Path(self.args.output_dir)
        if combined:
            path = output_dir / "all_results.json"
            merged = json.loads(path.read_text()) if path.is_file() else {}
            merged.update(metrics)
            write_atomic(path, json.dumps(merged, indent=4, sort_keys=True))
        write_atomic(output_dir / f"{split}_results.json", json.dumps(metrics, indent=4, sort_keys=True))

    # ---- checkpoints ------------------------------------------------------------------------------------
    def _save_checkpoint(self, model: nn.Module, trial=None) -> None:
        """The Trainer's checkpoint, written into `tmp-checkpoint-N` and renamed to `checkpoint-N` once complete.

        A kill at any point leaves either no `checkpoint-N` or a complete one, so the previous checkpoint stays
        the last loadable one. Besides the Trainer's files it holds the run record and the method state.
        """
        run_dir = Path(self._get_output_dir(trial=trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        final, staging = run_dir / name, run_dir / f"{STAGING_PREFIX}{name}"
        if self.args.should_save and staging.exists():
            shutil.rmtree(staging)
        self.accelerator.wait_for_everyone()
        if self.hp_search_backend is None and trial is None:
            self.store_flos()
        self.save_model(str(staging), _internal_call=True)
        saving_steps = self.args.save_strategy in (SaveStrategy.STEPS, SaveStrategy.EPOCH, SaveStrategy.BEST)
        if saving_steps and self.state.best_global_step:
            best = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.best_global_step}"
            if best == final or best.is_dir():
                self.state.best_model_checkpoint = str(best)
        if not self.args.save_only_model:
            self._save_optimizer_and_scheduler(str(staging))
            self._save_scaler(str(staging))
            self._save_rng_state(str(staging))
        if self.args.should_save:
            self._save_method_state(staging)
            write_atomic(staging / RUN_RECORD_NAME, json.dumps(self.run_record, indent=2, default=str))
            for callback in self.callback_handler.callbacks + [self.control]:
                if isinstance(callback, ExportableState):
                    key = type(callback).__name__
                    if isinstance(self.state.stateful_callbacks.get(key), list):
                        self.state.stateful_callbacks[key].append(callback.state())
                    else:
                        self.state.stateful_callbacks[key] = callback.state()
            self.state.save_to_json(str(staging / "trainer_state.json"))
        self.accelerator.wait_for_everyone()  # every process's RNG state is in the staging folder
        if self.args.should_save:
            if final.exists():  # saved again at the same step (the last step of a resumed run)
                shutil.rmtree(final)
            os.replace(staging, final)
        self.accelerator.wait_for_everyone()
        if self.args.push_to_hub:
            self._push_from_checkpoint(str(final))
        if self.args.should_save:
            rotate_checkpoints(
                str(run_dir),
                self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
            )

    def _save_method_state(self, directory: Path) -> None:
        """The loss's training state (its persistent buffers, parameters and submodules) as safetensors.

        Stateless losses (AduC, CE: their log prior is a non-persistent buffer rebuilt from the class counts)
        write nothing. A method that keeps state across steps registers it in its loss module and gets saved
        and restored with every checkpoint.
        """
        state = {key: value.detach().cpu().contiguous() for key, value in self.loss_fn.state_dict().items()}
        if state:
            safetensors.torch.save_file(state, str(directory / METHOD_STATE_NAME), metadata={"format": "pt"})

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        expected = self.loss_fn.state_dict()
        path = Path(resume_from_checkpoint) / METHOD_STATE_NAME
        if not expected and not path.exists():
            return
        if not path.exists():
            raise FileNotFoundError(
                f"{resume_from_checkpoint} has no {METHOD_STATE_NAME}: the state of method "
                f"{type(self.loss_fn).__name__} ({', '.join(expected)}) cannot be restored"
            )
        state = safetensors.torch.load_file(str(path), device=str(self.args.device))
        self.loss_fn.load_state_dict(state, strict=True)

    # ---- optimisation -----------------------------------------------------------------------------------
    def _official_recipe(self) -> bool:
        return getattr(self.args, "optimizer_recipe", "trainer") == "official"

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        if not self._official_recipe():
            return super().create_optimizer(model)
        if self.optimizer is None:
            params = [p for p in (model or self.model).parameters() if p.requires_grad]
            self.optimizer = torch.optim.SGD(
                params,
                lr=self.args.learning_rate,
                momentum=self.args.sgd_momentum,
                weight_decay=self.args.weight_decay,
            )
        return self.optimizer

    def steps_per_epoch(self) -> int:
        """Optimiser steps per epoch on this rank, as the Trainer counts them."""
        num_samples = len(self._get_train_sampler())
        batches = math.ceil(num_samples / self.args.per_device_train_batch_size)
        batches_per_rank = math.ceil(batches / self.args.world_size)
        return max(1, math.ceil(batches_per_rank / self.args.gradient_accumulation_steps))

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        if not self._official_recipe():
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            factor = partial(
                _official_lr_factor,
                steps_per_epoch=self.steps_per_epoch(),
                base_lr=self.args.learning_rate,
                warmup_epochs=self.args.warmup_epochs,
                cosine_epochs=self.args.cosine_epochs or math.ceil(self.args.num_train_epochs),
                min_lr=self.args.min_learning_rate,
            )
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, factor)
        return self.lr_scheduler
