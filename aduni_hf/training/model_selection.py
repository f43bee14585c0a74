"""The reported models besides the last epoch's, chosen during training by `ModelSelectionCallback`:

- `best_validation`: the weights with the best validation `selection_metric` (honest model selection);
- `official_test_selection`: the released code's rule on the test fold (main.py: the last epoch at which test
  accuracy AND test macro-F1 both strictly improved), with `official_test_selection`: it reads the test fold
  every epoch, so it is optimistic and labelled so wherever it is reported.

Each is saved in the run's folder as `<name>.safetensors` (the weights) and `<name>.json` (what chose them,
written last). `selected_model` reads them back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import safetensors.torch
from accelerate import PartialState
from transformers import TrainerCallback

from ..utils import write_atomic

VALIDATION_SELECTION = "best_validation"
OFFICIAL_SELECTION = "official_test_selection"
SELECTIONS = (VALIDATION_SELECTION, OFFICIAL_SELECTION)
# The metric prefix of the test fold evaluated after every validation under `official_test_selection`
TEST_EVERY_EPOCH = "test_every_epoch"
STAGING_PREFIX = "tmp-"


def _read(directory: Path, name: str) -> dict[str, Any] | None:
    path = directory / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def selected_model(directory: str | Path, name: str) -> tuple[dict[str, Any], Path] | None:
    """(what chose it, its weights file) of the model `name` (one of `SELECTIONS`) saved in `directory`."""
    record = _read(Path(directory), name)
    return None if record is None else (record, Path(directory) / f"{name}.safetensors")


class ModelSelectionCallback(TrainerCallback):
    """Saves the reported models into `directory` as the evaluations come (`on_evaluate`).

    Only evaluations during training count. A fresh training (global step 0 at `on_train_begin`) first removes
    what an earlier attempt in the folder chose; a resumed one keeps it, and goes on comparing with it.

    Args:
        directory: where the selected models go (the run's output_dir).
        selection_metric: the validation metric of `best_validation` (a key of the metrics, without `eval_`).
    """

    def __init__(self, directory: str | Path, selection_metric: str) -> None:
        self.directory = Path(directory)
        self.key = f"eval_{selection_metric}"
        self.training = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.training = True
        if state.global_step == 0 and state.is_world_process_zero:
            for name in SELECTIONS:
                for suffix in (".json", ".safetensors"):
                    (self.directory / f"{name}{suffix}").unlink(missing_ok=True)

    def on_train_end(self, args, state, control, **kwargs):
        self.training = False

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        metrics = metrics or {}
        if not self.training:
            return
        if self.key in metrics:  # a validation pass
            best = _read(self.directory, VALIDATION_SELECTION)
            if best is None or metrics[self.key] > best["value"]:
                self._save(
                    VALIDATION_SELECTION, {"metric": self.key, "value": metrics[self.key]}, state, model
                )
        elif f"{TEST_EVERY_EPOCH}_accuracy" in metrics:  # the test fold, evaluated for the official rule
            accuracy, macro_f1 = (
                metrics[f"{TEST_EVERY_EPOCH}_accuracy"],
                metrics[f"{TEST_EVERY_EPOCH}_macro_f1"],
            )
            best = _read(self.directory, OFFICIAL_SELECTION)
            if best is None or (accuracy > best["accuracy"] and macro_f1 > best["macro_f1"]):
                self._save(OFFICIAL_SELECTION, {"accuracy": accuracy, "macro_f1": macro_f1}, state, model)
        elif "eval_loss" in metrics:  # a validation pass without the metric
            raise KeyError(
                f"selection_metric: the validation metrics have no {self.key} (they have {sorted(metrics)})"
            )

    def _save(self, name: str, record: dict[str, Any], state, model) -> None:
        """The current weights as `<name>.safetensors` and what chose them as `<name>.json` (written last)."""
        if state.is_world_process_zero:
            self.directory.mkdir(parents=True, exist_ok=True)
            weights = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
            staging = self.directory / f"{STAGING_PREFIX}{name}.safetensors"
            safetensors.torch.save_file(weights, str(staging), metadata={"format": "pt"})
            os.replace(staging, self.directory / f"{name}.safetensors")
            # epoch: the Trainer's count when the evaluation ran (3.0: after the third epoch)
            record = {**record, "epoch": round(state.epoch or 0.0, 4), "global_step": state.global_step}
            write_atomic(self.directory / f"{name}.json", json.dumps(record, indent=2))
        PartialState().wait_for_everyone()
