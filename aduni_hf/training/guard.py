"""The numerical guard: training stops before an optimiser step on a non-finite loss or gradient, and before a
checkpoint or the final model is saved with a non-finite weight or buffer (a BatchNorm running variance overflows
in the forward pass, with a finite loss), naming the step, the epoch, the batch's classes and the checkpoint to go
back to, and marks the run failed (`training_failed.json`). So every checkpoint the guard names is finite.

The loss of every micro-batch is recorded on the device (no host synchronisation per micro-batch); the flags are
read once per optimiser step, with the gradient norm the Trainer computes anyway. Every process takes the same
decision (the flags are all-reduced), so none is left waiting in a collective.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from transformers import TrainerState

from ..utils import write_atomic
from .callbacks import epoch_index
from .checkpoints import last_checkpoint

FAILURE_NAME = "training_failed.json"


class NonFiniteTrainingError(RuntimeError):
    """Training met a non-finite loss or gradient; the message names the step, epoch, alpha and batch."""


def mark_failed(output_dir: str | Path, report: dict[str, Any]) -> Path:
    """Write `training_failed.json` (what stopped training, and the checkpoint to go back to)."""
    path = Path(output_dir) / FAILURE_NAME
    write_atomic(path, json.dumps(report, indent=2) + "\n")
    return path


class NonFiniteGuard:
    """Records the training losses of an optimiser step and checks them, with the step's gradient norm.

    Args:
        run_dir: where `training_failed.json` goes.
        class_names: id -> name, for the batch's class counts in the message.
        args: the training arguments: where checkpoints go (the message names the last one), the device the flags
            live on, the processes that decide together, the epochs, and fp16 (the gradient scaler skips
            overflowing steps by design, so only the loss is checked).
        main_process: whether this process writes the failure mark.
    """

    def __init__(self, run_dir: Path, class_names: Mapping[int, str], args, main_process: bool) -> None:
        self.run_dir, self.class_names, self.args = Path(run_dir), dict(class_names), args
        self.device, self.world_size = args.device, args.world_size
        self.check_gradient, self.main_process = not args.fp16, main_process
        self.loss_bad: torch.Tensor | None = None  # a non-finite loss since the last optimiser step
        self.last_loss: torch.Tensor | None = None
        self.batch_labels: torch.Tensor | None = None  # the last training batch's labels, for the message

    def record(self, loss: torch.Tensor, labels: torch.Tensor) -> None:
        bad = ~torch.isfinite(loss.detach().float())
        self.loss_bad = bad if self.loss_bad is None else self.loss_bad | bad
        self.last_loss = loss.detach()
        self.batch_labels = labels

    def found(self, grad_norm) -> str | None:
        """What is non-finite since the last step ("loss", "gradient") or None; resets the loss flag.

        The gradient's norm is inf or nan if any entry is, and inf if the float32 sum of squares overflows, which
        only a diverged step reaches (entries above about 1e19).
        """
        loss_bad = self.loss_bad if self.loss_bad is not None else torch.zeros((), dtype=torch.bool)
        self.loss_bad = None
        grad_bad = torch.zeros((), dtype=torch.bool, device=self.device)
        if self.check_gradient and grad_norm is not None:
            grad_bad = ~torch.isfinite(torch.as_tensor(grad_norm, device=self.device).float())
        flags = torch.stack([loss_bad.to(self.device), grad_bad]).float()
        if self.world_size > 1 and dist.is_initialized():
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        if not flags.any():
            return None
        return "loss" if flags[0] else "gradient"

    def check(self, grad_norm, state: TrainerState, epoch_state: Mapping[str, float]) -> None:
        """Raise `NonFiniteTrainingError` before the next optimiser step if anything is non-finite, after marking
        the run failed; `epoch_state` is the loss's (alpha)."""
        what = self.found(grad_norm)
        if what is not None:
            self.stop(what, state, epoch_state)

    def check_state(
        self, modules: Mapping[str, nn.Module], state: TrainerState, epoch_state: Mapping[str, float]
    ) -> None:
        """Raise `NonFiniteTrainingError` if a parameter or buffer of `modules` ({"model": ..., "loss": ...}) holds
        a non-finite entry: called before anything is saved. One flag per tensor, read once (every process takes
        the same decision: BatchNorm statistics may differ between processes)."""
        named = [
            (f"{prefix}.{name}", tensor)
            for prefix, module in modules.items()
            for name, tensor in [*module.named_parameters(), *module.named_buffers()]
            if tensor.is_floating_point() or tensor.is_complex()
        ]
        if not named:
            return
        flags = torch.stack([~torch.isfinite(tensor.detach()).all() for _, tensor in named]).to(self.device).float()
        if self.world_size > 1 and dist.is_initialized():
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        bad = flags.nonzero().flatten().tolist()
        if bad:
            names = [named[i][0] for i in bad]
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            self.stop(f"weights ({len(names)} tensors: {shown})", state, epoch_state, saving=True)

    def stop(self, what: str, state: TrainerState, epoch_state: Mapping[str, float], saving: bool = False) -> None:
        """Mark the run failed and raise `NonFiniteTrainingError` for the non-finite `what`, found before the next
        optimiser step, or before saving the state after the last one."""
        step = state.global_step if saving else state.global_step + 1
        when = f"after optimiser step {step}, before saving" if saving else f"at optimiser step {step}"
        epoch, num_epochs = epoch_index(state), math.ceil(self.args.num_train_epochs)
        checkpoint = last_checkpoint(self.args.output_dir)
        loss_value = float(self.last_loss.float()) if self.last_loss is not None else math.nan
        counts = {}
        if self.batch_labels is not None:
            bins = torch.bincount(self.batch_labels.detach().cpu(), minlength=len(self.class_names)).tolist()
            counts = {str(self.class_names.get(c, c)): n for c, n in enumerate(bins)}
        report = {
            "error": f"non-finite {what}",
            "loss": loss_value if math.isfinite(loss_value) else str(loss_value),
            "step": step,
            "epoch": epoch + 1,
            "num_train_epochs": num_epochs,
            **dict(epoch_state),
            "batch_class_counts": counts,
            "last_checkpoint": str(checkpoint) if checkpoint else None,
        }
        marked = mark_failed(self.run_dir, report) if self.main_process else self.run_dir / FAILURE_NAME
        state_text = "".join(f", {name} {value:.4g}" for name, value in epoch_state.items())
        resume = (
            f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint was saved before it"
        )
        raise NonFiniteTrainingError(
            f"non-finite {what} (loss {loss_value}) {when}, epoch {epoch + 1}/{num_epochs}{state_text}; "
            f"batch class counts {counts}. Training stopped: {resume}; the run is marked failed in {marked}."
        )
