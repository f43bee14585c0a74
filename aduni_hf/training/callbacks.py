"""Trainer callbacks: the loss's epoch-dependent state (AduC's alpha), the console progress (a bar and one line
per epoch), and the random stream under persistent data-loader workers."""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm
from transformers import IntervalStrategy, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..console import console_print
from ..losses import MethodLoss


def epoch_index(state: TrainerState) -> int:
    """The epoch being trained, from 0. `state.epoch` is a float: 2.9999999 at the start of epoch 3 after rounding,
    3.5 mid-epoch on a resume."""
    return math.floor((state.epoch or 0.0) + 1e-6)


class AlphaScheduleCallback(TrainerCallback):
    """The one channel of epoch-dependent loss state: at every epoch start (and at train start, which covers a
    resume) it tells the loss where training is, `loss.set_epoch(epoch, num_epochs)`.

    That is how AduC's alpha follows its schedule (the loss's `alpha_schedule`, the paper's adaptive alpha, after
    which the callback is named) and how LDAM-DRW switches on its re-weighting. Both are pure functions of the
    integer epoch, so nothing needs checkpointing. `AdUniTrainer` adds one for its loss.
    """

    def __init__(self, loss: MethodLoss) -> None:
        self.loss = loss

    def _update(self, args: TrainingArguments, state: TrainerState) -> None:
        self.loss.set_epoch(epoch_index(state), math.ceil(args.num_train_epochs))

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._update(args, state)

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._update(args, state)


def _format_value(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1e-2 and value != 0 else f"{value:.4f}".rstrip("0").rstrip(".")


def format_log_line(logs: dict[str, float], num_epochs: float) -> str:
    """One compact line for a Trainer log: `epoch 3/30  loss 2.3451  alpha 0.95  lr 0.1  val accuracy 0.9 ...`.

    Per-class metrics (`eval_f1_<class>`) stay in the logs and trainer_state.json; the line shows the headline
    numbers only.
    """
    parts = [f"epoch {math.ceil(logs['epoch'] - 1e-6) if logs.get('epoch') else 0}/{math.ceil(num_epochs)}"]
    for key, label in (
        ("loss", "loss"),
        ("alpha", "alpha"),
        ("learning_rate", "lr"),
        ("grad_norm", "grad norm"),
    ):
        if key in logs:
            parts.append(f"{label} {_format_value(float(logs[key]))}")
    if (
        "contrast_majority" in logs
    ):  # the paper's memory argument: per contrast set, majority vs a minority class
        parts.append(
            f"contrast set {logs['contrast_majority']:.1f} majority / {logs['contrast_minority']:.1f} minority"
        )
    evaluated = [
        (label, logs[f"eval_{key}"])
        for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("loss", "loss"))
        if f"eval_{key}" in logs
    ]
    if evaluated:
        parts.append(
            "val " + " ".join(f"{label} {_format_value(float(value))}" for label, value in evaluated)
        )
    if "train_runtime" in logs:
        parts.append(
            f"done in {logs['train_runtime']:.1f} s, mean loss {_format_value(float(logs['train_loss']))}"
        )
    return "  ".join(parts)


class EpochProgressCallback(TrainerCallback):
    """A progress bar over the optimiser steps in a terminal, and one compact line per epoch.

    Replaces the Trainer's `ProgressCallback` / `PrinterCallback`, which print every log as a dict (14 keys and
    more with per-class F1). The bar shows only where standard error is a terminal (tqdm's `disable=None`) and
    not with `disable_tqdm`. A training log waits for the validation log of the same epoch, so one line carries
    both.
    """

    def __init__(self) -> None:
        self.bar = None
        self.pending: dict[str, float] = {}
        self.training = False  # the evaluations after training go into the final table

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.training = True
        if state.is_world_process_zero and not args.disable_tqdm:
            self.bar = tqdm(
                total=state.max_steps, initial=state.global_step, disable=None, dynamic_ncols=True
            )

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs
    ):
        if not self.training or not state.is_world_process_zero or not logs:
            return
        is_training_log = "loss" in logs and not any(key.startswith("eval_") for key in logs)
        at_epoch_end = state.epoch is not None and abs(state.epoch - round(state.epoch)) < 1e-6
        if is_training_log and at_epoch_end and args.eval_strategy == IntervalStrategy.EPOCH:
            self.pending = dict(logs)  # printed with the validation numbers that follow at the epoch end
            return
        console_print(format_log_line({**self.pending, **logs}, args.num_train_epochs))
        self.pending = {}

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.pending:
            console_print(format_log_line(self.pending, args.num_train_epochs))
            self.pending = {}
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.training = False


def draw_as_a_new_iterator(loader) -> None:
    """Draw from torch's RNG what `iter(loader)` would draw if it made a new iterator, when it will not.

    A new DataLoader iterator takes its workers' base seed from the global RNG (or `loader.generator`); a
    persistent loader that already has one resets it and draws nothing. Dropout and the other global draws would
    then shift by one number per epoch and evaluation, and a run with persistent workers would train differently
    from the same run without them, or with 0 workers. Called right before such a loader is iterated.
    """
    if getattr(loader, "persistent_workers", False) and getattr(loader, "_iterator", None) is not None:
        torch.empty((), dtype=torch.int64).random_(generator=loader.generator)


class PersistentWorkersCallback(TrainerCallback):
    """Keeps the global random stream of training independent of `dataloader_persistent_workers`: before each
    epoch whose training loader will reuse its workers, the draw a new iterator would have made."""

    def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
        if train_dataloader is not None:
            draw_as_a_new_iterator(train_dataloader)
