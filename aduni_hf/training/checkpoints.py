"""What a checkpoint of `AdUniTrainer` holds, and when it is whole.

Besides the Trainer's files (model.safetensors, optimizer.pt, scheduler.pt, rng_state.pth, trainer_state.json) a
checkpoint holds `aduni_run.json` (what the run is: the recipe fields and the data, checked on resume) and, for a
method with training state (a momentum encoder, a feature queue, a sampler's weights), `method_state.safetensors`:
the loss module's state dict.

Whole or not: `AdUniTrainer._save_checkpoint` writes these two files first, then lets the Trainer write its own,
which ends with trainer_state.json (transformers 5.25, `Trainer._save_checkpoint`); the rotation of older
checkpoints comes after that. So a checkpoint whose trainer_state.json reads as JSON is complete, and a kill at any
point leaves the previous complete checkpoint in place (docs/hf_stack.md, "Checkpoints and resuming").
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..utils import write_atomic

logger = logging.getLogger(__name__)

RUN_RECORD_NAME = "aduni_run.json"
METHOD_STATE_NAME = "method_state.safetensors"
TRAINER_STATE_NAME = "trainer_state.json"  # the Trainer's, written last
CHECKPOINT_FILES = ("config.json", "model.safetensors", RUN_RECORD_NAME, TRAINER_STATE_NAME)
_CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def checkpoint_step(path: str | Path) -> int | None:
    match = _CHECKPOINT_RE.match(Path(path).name)
    return int(match.group(1)) if match else None


def missing_checkpoint_files(path: str | Path) -> list[str]:
    """What a complete checkpoint has and `path` lacks (a trainer_state.json cut short counts as missing)."""
    path = Path(path)
    missing = [name for name in CHECKPOINT_FILES if not (path / name).is_file()]
    if TRAINER_STATE_NAME not in missing:
        try:
            json.loads((path / TRAINER_STATE_NAME).read_text())
        except (OSError, ValueError):
            missing.append(f"a readable {TRAINER_STATE_NAME}")
    return missing


def checkpoints_of(output_dir: str | Path) -> list[Path]:
    """The `checkpoint-N` folders of `output_dir`, by step."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    numbered = [(checkpoint_step(p), p) for p in output_dir.iterdir() if p.is_dir()]
    return [path for step, path in sorted((s, p) for s, p in numbered if s is not None)]


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete `checkpoint-N` of highest N in `output_dir` (incomplete ones are reported and passed over)."""
    for path in reversed(checkpoints_of(output_dir)):
        missing = missing_checkpoint_files(path)
        if not missing:
            return path
        logger.warning("%s is incomplete (no %s): passed over", path, ", ".join(missing))
    return None


def begin_checkpoint(folder: Path, loss_fn: nn.Module, run_record: dict[str, Any]) -> None:
    """What `AdUniTrainer` writes into a checkpoint before the Trainer writes its own files: the run record and the
    method state. A checkpoint saved again at the same step loses its trainer_state.json first, so it counts as
    incomplete until the Trainer has rewritten every file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / TRAINER_STATE_NAME).unlink(missing_ok=True)
    save_method_state(loss_fn, folder)
    write_atomic(folder / RUN_RECORD_NAME, json.dumps(run_record, indent=2, default=str))


def save_method_state(loss_fn: nn.Module, directory: Path) -> None:
    """The loss's training state (its persistent buffers, parameters and submodules) as safetensors.

    Stateless losses (AduC, CE: their log prior is a non-persistent buffer rebuilt from the class counts) write
    nothing. A method that keeps state across steps registers it in its loss module and gets it saved and restored
    with every checkpoint.
    """
    state = {key: value.detach().cpu().contiguous() for key, value in loss_fn.state_dict().items()}
    if state:
        safetensors.torch.save_file(state, str(directory / METHOD_STATE_NAME), metadata={"format": "pt"})


def load_method_state(loss_fn: nn.Module, checkpoint: str | Path, device: torch.device) -> None:
    """Restore what `save_method_state` wrote; a method with state and a checkpoint without it is refused."""
    expected = loss_fn.state_dict()
    path = Path(checkpoint) / METHOD_STATE_NAME
    if not expected and not path.exists():
        return
    if not path.exists():
        raise FileNotFoundError(
            f"{checkpoint} has no {METHOD_STATE_NAME}: the state of method {type(loss_fn).__name__} "
            f"({', '.join(expected)}) cannot be restored"
        )
    loss_fn.load_state_dict(safetensors.torch.load_file(str(path), device=str(device)), strict=True)
