"""`AdUniTrainer`: the Trainer with AdUni's multi-view batches, a method's loss, its sampler and the official
optimisation recipe. What is not a Trainer override lives beside it, in callbacks, model_selection,
loss_statistics, guard, optimization and checkpoints."""

from __future__ import annotations

import logging
import math
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType
from torch import nn
from transformers import Trainer
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, HubStrategy, SaveStrategy
from transformers.utils.hub import PushInProgress

from ..data.device_augmentation import DeviceAugmentation
from ..data.samplers import build_sampler, training_epochs
from ..data.views import view_major
from ..losses import LossOutput, MethodLoss
from .callbacks import (
    AlphaScheduleCallback,
    EpochProgressCallback,
    PersistentWorkersCallback,
    draw_as_a_new_iterator,
)
from .checkpoints import (
    begin_checkpoint,
    checkpoint_files,
    explain_full_disk,
    last_checkpoint,
    load_method_state,
)
from .chunked import chunked_training_step
from .guard import NonFiniteGuard
from .loss_statistics import LossStatistics
from .model_selection import TEST_EVERY_EPOCH, ModelSelectionCallback
from .model_setup import prepare_for_training, set_frozen_modes
from .optimization import official_optimizer, official_scheduler, steps_per_epoch
from .training_args import AdUniTrainingArguments

# where the gradients are whole on every process after backward (no sharding, no DeepSpeed engine)
PLAIN_DISTRIBUTED_TYPES = (DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.MULTI_CPU)

logger = logging.getLogger(__name__)


class AdUniTrainer(Trainer):
    """Trainer for a method's loss (`aduni_hf.losses.MethodLoss`; the methods are in `aduni_hf.methods`).

    - Training items carry `pixel_values` (B, V, 3, H, W): V augmented views, run through the model as ONE
      view-major batch (V*B images: BatchNorm sees every view; rows i and i+B are two views of image i) for
      `loss_fn.from_outputs`, or by the loss itself (`own_forward`: PaCo's `forward_views`); in chunks with
      `contrast_chunk_size`. Evaluation items carry one view; the loss is cross-entropy.
    - The loss learns the epoch through `AlphaScheduleCallback`; the training logs get its `epoch_logs()` (alpha)
      and the per-class loss and contrast-set tallies (`LossStatistics`).
    - With `compute_metrics`, `ModelSelectionCallback` keeps the best validation model; with
      `test_every_epoch_dataset` (the released code's rule, optimistic) the test fold is evaluated after every
      validation during training, as `test_every_epoch_*`.
    - `optimizer_recipe: official`: SGD on every parameter, the released per-epoch warm-up + cosine. Checkpoints
      hold `run_record` and the loss's state. A non-finite loss or gradient stops training (guard.py).

    Args:
        loss_fn: the method's loss of this stage.
        sampler: name of the training sampler.
        run_record: what the run is (`aduni_hf.recipes.run_folder.run_record`), saved in every checkpoint.
        encoder_mode: None, or "eval": the encoder (`model.base_model`) in eval mode during training, its BatchNorm
            statistics frozen (a second stage on a frozen encoder).
        epoch_length: "sampler" (default), or "dataset": the batches of an instance-balanced epoch.
        run_dir: where `training_failed.json` goes (default `args.output_dir`; a stage trains in a sub-folder).
        test_every_epoch_dataset: the test fold, for the official selection rule only.
        view_augmentation: makes the views of stored pixels (`PixelViewsDataset` items) here, on the device.
        hub_pusher: with `args.push_to_hub`, what creates the Hub repository and uploads each save
            (`aduni_hf.hub.push.CheckpointPusher`: our card, patterns and folder of the repo); None: the
            Trainer's own.
        Everything else as `transformers.Trainer`; `args` must be `AdUniTrainingArguments`.
    """

    # compute_loss returns a per-batch mean, so Trainer divides it by the gradient-accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        *args,
        loss_fn: MethodLoss,
        sampler: str = "none",
        run_record: dict[str, Any] | None = None,
        encoder_mode: str | None = None,
        epoch_length: str = "sampler",
        run_dir: str | Path | None = None,
        test_every_epoch_dataset=None,
        view_augmentation: DeviceAugmentation | None = None,
        hub_pusher: Any = None,
        **kwargs,
    ) -> None:
        if encoder_mode not in (None, "train", "eval") or epoch_length not in ("sampler", "dataset"):
            raise ValueError(f"encoder_mode None/train/eval and epoch_length sampler/dataset, got {encoder_mode!r}, "
                             f"{epoch_length!r}")  # fmt: skip
        self.hub_pusher = hub_pusher  # before the Trainer's __init__, which creates the Hub repository
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, AdUniTrainingArguments):
            raise TypeError(f"AdUniTrainer needs AdUniTrainingArguments, got {type(self.args).__name__}")
        self.check_arguments(self.args, self.model.config.image_size)
        self.loss_fn, self.sampler_name, self.run_record = loss_fn, sampler, run_record or {}
        self.encoder_mode, self.epoch_length = encoder_mode, epoch_length
        self.test_every_epoch_dataset, self.view_augmentation = test_every_epoch_dataset, view_augmentation
        self.model = self.model_wrapped = prepare_for_training(self.model, self.args)
        self.loss_fn.to(self.args.device, memory_format=self.args.memory_format)  # a loss's own encoder alike
        run_dir, names = Path(run_dir or self.args.output_dir), self.model.config.id2label
        self.guard = NonFiniteGuard(run_dir, names, self.args, self.is_world_process_zero())
        self.loss_statistics = LossStatistics(names, self.train_dataset.labels)
        self.remove_callback(ProgressCallback)  # one compact line per epoch instead of a dict per log
        self.remove_callback(PrinterCallback)
        for callback in (EpochProgressCallback(), PersistentWorkersCallback(), AlphaScheduleCallback(loss_fn)):
            self.add_callback(callback)
        self.model_selection: ModelSelectionCallback | None = None  # it chooses by the metrics
        if self.compute_metrics is not None:
            self.model_selection = ModelSelectionCallback(self.args.output_dir, self.args.selection_metric)
            self.add_callback(self.model_selection)

    @classmethod
    def check_arguments(cls, args: AdUniTrainingArguments, image_size: int) -> None:
        """Refuse arguments this trainer cannot train with, before any data is read (the recipe checks call it)."""
        args.check_model(image_size)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        batch = self.args.per_device_train_batch_size * self.args.world_size
        sampler = build_sampler(
            self.sampler_name,
            dataset.labels,
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            # The contrast set of one loss computation: every process's micro-batch (docs/method.md, "Sampling").
            batch_size=batch,
            # The progressive sampler's horizon is the learning-rate cosine's (the released code: 400 for both).
            num_epochs=self.args.cosine_epochs or math.ceil(self.args.num_train_epochs),
            num_classes=self.model.config.num_labels,
        )
        by_dataset, drop_last = self.epoch_length == "dataset", self.args.drop_last_train_batch
        return training_epochs(
            sampler, batch, dataset_length=by_dataset, drop_last=drop_last, batch_shuffle=self.args.batch_shuffle
        )

    def get_eval_dataloader(self, eval_dataset=None) -> torch.utils.data.DataLoader:
        """The Trainer's evaluation loader, kept per data set under persistent workers: the Trainer caches the first
        one under "eval" for any data set (`evaluate(test)` after validation would see the validation images;
        docs/hf_stack.md). A loader reusing its workers draws what a new one would (`draw_as_a_new_iterator`)."""
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
        draw_as_a_new_iterator(loader)  # about to be iterated: the random stream as with a new loader
        return loader

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """`Trainer.evaluate`; during training, a validation pass is followed by the test fold when the official
        selection rule is asked for (`ModelSelectionCallback` reads both)."""
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if self.is_in_train and eval_dataset is None and self.test_every_epoch_dataset is not None:
            super().evaluate(self.test_every_epoch_dataset, ignore_keys, TEST_EVERY_EPOCH)
        return metrics

    def training_views(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """(B, V, 3, H, W) views of a training batch: the loader's, or made here from stored pixels; None for an
        evaluation batch (B, 3, H, W)."""
        if "pixels" in inputs:
            return self.view_augmentation.views(inputs["pixels"], inputs["view_parameters"])
        return inputs["pixel_values"] if inputs["pixel_values"].ndim == 5 else None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        pixel_values, labels = self.training_views(inputs), inputs["labels"]
        if pixel_values is not None:  # training
            set_frozen_modes(self.model, self.encoder_mode == "eval", self.args.freeze_bn)
            if self.loss_fn.own_forward:
                output = self.loss_fn.forward_views(model, pixel_values, labels)
            else:
                outputs = model(pixel_values=view_major(pixel_values, self.args.memory_format))
                output = self.loss_fn.from_outputs(outputs, labels)
                output.logits = outputs.logits[: len(labels)]
            self._record(output, labels)
            return (output.loss, {"logits": output.logits}) if return_outputs else output.loss
        pixel_values = inputs["pixel_values"].contiguous(memory_format=self.args.memory_format)
        outputs = model(pixel_values=pixel_values, labels=labels)  # evaluation: one view, CE as eval_loss
        return (outputs.loss, {"logits": outputs.logits}) if return_outputs else outputs.loss

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        if not self.args.contrast_chunk_size:
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()  # the whole batch's loss, one chunk's activations at a time
        inputs = self._prepare_inputs(inputs)
        set_frozen_modes(self.model, self.encoder_mode == "eval", self.args.freeze_bn)
        with self.compute_loss_context_manager():
            output = chunked_training_step(
                model,
                self.loss_fn,
                self.training_views(inputs),
                inputs["labels"],
                self.args.contrast_chunk_size,
                accelerator=self.accelerator,
                memory_format=self.args.memory_format,
                accumulation_steps=self.current_gradient_accumulation_steps,
            )
        self._record(output, inputs["labels"])
        return output.loss

    def _record(self, output: LossOutput, labels: torch.Tensor) -> None:
        self.loss_statistics.add(output)
        self.guard.record(output.loss, labels)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """The training logs get the loss's epoch state (alpha) and the tallies of the period (as TRL's trainers
        add their own metrics: a callback's `on_log` runs after the Trainer has recorded the log)."""
        if "loss" in logs:
            logs.update(self.loss_fn.epoch_logs())
            logs.update(self.loss_statistics.pop_logs())
        super().log(logs, start_time)

    def _get_grad_norm(self, model: nn.Module, grad_norm=None):
        """The gradient norm the Trainer logs, once per optimiser step, and the numerical guard on it. Without
        clipping the Trainer takes it from `clip_grad_norm_(..., inf)`, which multiplies every gradient by 1; here
        the norm alone, where no gradient scaler or sharded parameters are involved."""
        plain = self.accelerator.distributed_type in PLAIN_DISTRIBUTED_TYPES and not self.args.fp16
        if grad_norm is None and plain:
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            grad_norm = torch.nn.utils.get_total_norm(grads) if grads else None
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        self.guard.check(grad_norm, self.state, self.loss_fn.epoch_logs())
        return grad_norm

    def check_finite_state(self) -> None:
        """The guard on the weights and buffers (model and loss), before anything is saved from them."""
        self.guard.check_state({"model": self.model, "loss": self.loss_fn}, self.state, self.loss_fn.epoch_logs())

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """`Trainer.save_model`, once the guard found every weight finite: no model is saved non-finite (within a
        checkpoint, `_save_checkpoint` has checked). A full disk is reported as such (`CheckpointWriteError`)."""
        if _internal_call:
            return super().save_model(output_dir, _internal_call)
        self.check_finite_state()
        with explain_full_disk(Path(output_dir or self.args.output_dir), "the model", self.resume_advice):
            # As an internal call: the Trainer would push here, before the results and our card exist; the run pushes
            # once everything is saved (aduni_hf.recipes.run).
            super().save_model(output_dir, _internal_call=True)

    def _save_checkpoint(self, model: nn.Module, trial=None) -> None:
        """The Trainer's checkpoint, once the guard found every weight finite, after the run record (listing the
        files the checkpoint will hold) and the method state: the Trainer writes trainer_state.json last
        (checkpoints.py). A full disk is reported as such, and the partial checkpoint removed."""
        self.check_finite_state()
        folder = Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        partial = folder if self.args.should_save else None
        with explain_full_disk(folder.parent, folder.name, self.resume_advice, partial):
            if self.args.should_save:
                files = checkpoint_files(
                    self.args.save_only_model,
                    self.args.world_size,
                    method_state=bool(self.loss_fn.state_dict()),
                    scaler=getattr(self.accelerator, "scaler", None) is not None,
                    processor=self.processing_class is not None,
                )
                begin_checkpoint(folder, self.loss_fn, self.run_record, files)
            super()._save_checkpoint(model, trial)

    # ---- the Hub: our card, patterns and folder of the repo (docs/hf_stack.md, "Model cards and the Hub") ----
    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Create the Hub repository before training, through `hub_pusher` (a failure is a `PushError` saying that
        nothing has been trained yet); without one, the Trainer's own."""
        if self.hub_pusher is None:
            return super().init_hf_repo(token, private)
        if self.is_world_process_zero():
            self.hub_model_id = self.hub_pusher.create_repo()
        self.push_in_progress = None

    def create_model_card(self, *args, **kwargs) -> None:
        """Never the Trainer's draft card (it would overwrite output_dir/README.md): the run writes its own card,
        which every push carries (`aduni_hf.hub.push.training_card` while training, the results card at the end)."""

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """The push at a save, as the Trainer's (transformers 5.25): the main process only, none under `end`, in the
        background (`hub_pusher.push`), and skipped while the previous one still uploads unless `hub_always_push`,
        with two differences: a skipped push is logged, and so is a failed one (the Trainer drops both silently)."""
        if self.hub_pusher is None:
            return super()._push_from_checkpoint(checkpoint_folder)
        if not self.is_world_process_zero() or self.args.hub_strategy == HubStrategy.END:
            return
        name = Path(checkpoint_folder).name
        busy = self.push_in_progress is not None and not self.push_in_progress.is_done()
        if busy and not self.args.hub_always_push:
            logger.warning("%s is not pushed: the previous push to %s is still uploading (hub_always_push true "
                           "queues every save)", name, self.hub_pusher.where())  # fmt: skip
            return
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        steps = self.args.save_strategy == SaveStrategy.STEPS
        at = f"step {self.state.global_step}" if steps else f"epoch {int(self.state.epoch)}"
        step, output_dir = self.state.global_step, Path(self.args.output_dir)
        job = self.hub_pusher.push(Path(checkpoint_folder), output_dir, step, f"Training in progress, {at}")
        job.add_done_callback(lambda done: log_failed_push(done, name, self.hub_pusher.where()))
        if self.push_in_progress is None or self.push_in_progress.is_done():
            self.push_in_progress = PushInProgress([job])
        else:
            self.push_in_progress.jobs.append(job)

    def resume_advice(self) -> str:
        """How the run continues after a failed save: from its last whole checkpoint, or from the start."""
        previous = last_checkpoint(self.args.output_dir)
        return f"training resumes from {previous.name}" if previous is not None else "training starts afresh"

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_method_state(self.loss_fn, resume_from_checkpoint, self.args.device)

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        if self.args.optimizer_recipe != "official":
            return super().create_optimizer(model)
        if self.optimizer is None:
            self.optimizer = official_optimizer(model or self.model, self.args)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        if self.args.optimizer_recipe != "official":
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            per_epoch = steps_per_epoch(len(self._get_train_sampler()), self.args)
            self.lr_scheduler = official_scheduler(optimizer or self.optimizer, self.args, per_epoch)
        return self.lr_scheduler


def log_failed_push(job: Future, checkpoint: str, where: str) -> None:
    """Say that the background push of `checkpoint` failed: training goes on, the checkpoint is saved locally."""
    error = None if job.cancelled() else job.exception()
    if error is not None:
        logger.warning("the push of %s to %s failed (%s: %s); it is saved locally, and the next save pushes again",
                       checkpoint, where, type(error).__name__, error)  # fmt: skip
