"""Trainer callbacks: the AduC alpha schedule."""

from __future__ import annotations

import math

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..schedules import alpha_schedule


class AlphaScheduleCallback(TrainerCallback):
    """Writes alpha for the current epoch at every epoch start (and at train start, which covers a resume).

    Alpha is a pure function of the integer epoch (`alpha_schedule`), so nothing needs checkpointing.
    `AdUniTrainer` reads `callback.alpha` in `compute_loss` and adds it to the training logs.
    """

    def __init__(
        self,
        kind: str = "official",
        alpha_max: float = 1.0,
        alpha_min: float = 0.01,
        decay: float = 1000,
        num_epochs: int | None = None,
    ) -> None:
        self.kind, self.alpha_max, self.alpha_min, self.decay = kind, alpha_max, alpha_min, decay
        self.num_epochs = num_epochs
        self.epoch = 0
        self.alpha = self.value(0)  # also validates the arguments

    def value(self, epoch: int, num_epochs: int | None = None) -> float:
        return alpha_schedule(
            epoch,
            self.kind,
            self.alpha_max,
            self.alpha_min,
            self.decay,
            num_epochs=self.num_epochs or num_epochs,
        )

    def _update(self, args: TrainingArguments, state: TrainerState) -> None:
        # state.epoch is a float (2.9999999 at the start of epoch 3 after rounding, 3.5 mid-epoch on resume).
        self.epoch = math.floor(state.epoch + 1e-6) if state.epoch else 0
        self.alpha = self.value(self.epoch, num_epochs=math.ceil(args.num_train_epochs))

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._update(args, state)

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._update(args, state)
