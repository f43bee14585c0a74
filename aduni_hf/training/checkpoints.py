"""What a checkpoint of `AdUniTrainer` holds, and when it is whole.

Besides the Trainer's files (model.safetensors, optimizer.pt, scheduler.pt, rng_state.pth, trainer_state.json) a
checkpoint holds `aduni_run.json` (what the run is: the recipe fields and the data, checked on resume, and the list
of files the checkpoint holds once whole) and, for a method with training state (a momentum encoder, a feature
queue, a sampler's weights), `method_state.safetensors`: the loss module's state dict.

Whole or not: `AdUniTrainer._save_checkpoint` writes these two files first, then lets the Trainer write its own,
which ends with trainer_state.json (transformers 5.25, `Trainer._save_checkpoint`); the rotation of older
checkpoints comes after that. So a checkpoint without a readable trainer_state.json was cut short while it was
written (the previous one is whole), and one that has it but lacks another listed file, or holds one cut short,
was damaged afterwards: it is refused, never resumed with a fresh optimiser (docs/hf_stack.md, "Checkpoints and
resuming").
"""

from __future__ import annotations

import errno
import json
import logging
import re
import shutil
import struct
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
FILES_KEY = "checkpoint_files"  # in the run record: what the checkpoint holds once whole
MODEL_FILES = ("config.json", "model.safetensors", "training_args.bin")
# What `Trainer._save_checkpoint` adds unless `save_only_model` (rng_state_<rank>.pth with several processes)
TRAINING_STATE_FILES = ("optimizer.pt", "scheduler.pt")
SCALER_NAME = "scaler.pt"  # fp16's gradient scaler
_CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def checkpoint_step(path: str | Path) -> int | None:
    match = _CHECKPOINT_RE.match(Path(path).name)
    return int(match.group(1)) if match else None


def checkpoint_files(
    save_only_model: bool, num_processes: int, method_state: bool, scaler: bool = False, processor: bool = False
) -> list[str]:
    """Every file a whole checkpoint holds, as `AdUniTrainer` and the Trainer (transformers 5.25) write them."""
    files = [*MODEL_FILES, RUN_RECORD_NAME, TRAINER_STATE_NAME]
    if processor:
        files.append("preprocessor_config.json")
    if method_state:
        files.append(METHOD_STATE_NAME)
    if not save_only_model:
        files += [*TRAINING_STATE_FILES, *([SCALER_NAME] if scaler else [])]
        files += ["rng_state.pth"] if num_processes == 1 else [f"rng_state_{i}.pth" for i in range(num_processes)]
    return files


def expected_files(record: dict[str, Any]) -> list[str]:
    """The files the checkpoint of `record` (its aduni_run.json) holds once whole. A record written before the
    list was kept gets the Trainer's files for its `save_only_model` and number of processes."""
    if FILES_KEY in record:
        return list(record[FILES_KEY])
    files = checkpoint_files(record["fields"].get("save_only_model", False), record["num_processes"], False)
    return [name for name in files if name != "training_args.bin"]


def unreadable(path: Path) -> str | None:
    """Why the file at `path` cannot be what its suffix says (cut short, not JSON), or None. Cheap: JSON is parsed,
    a safetensors header checked against the file's length, a torch.save archive's directory read (it is at the
    end, so a file cut short has none)."""
    try:
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            size = path.stat().st_size
            with path.open("rb") as handle:
                (header_length,) = struct.unpack("<Q", handle.read(8))
                if header_length > size - 8:
                    raise ValueError("its header runs past its end")
                header = json.loads(handle.read(header_length))
            end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
            if 8 + header_length + end != size:
                raise ValueError(f"{size} bytes where its header describes {8 + header_length + end}")
        elif path.suffix in (".pt", ".pth", ".bin"):
            with zipfile.ZipFile(path) as archive:
                archive.namelist()
    except (OSError, ValueError, KeyError, TypeError, struct.error, zipfile.BadZipFile) as err:
        return f"{path.name} is unreadable (cut short or damaged: {err})"
    return None


def interrupted(path: str | Path) -> bool:
    """Whether the checkpoint at `path` was cut short while it was written (no readable trainer_state.json)."""
    state = Path(path) / TRAINER_STATE_NAME
    return not state.is_file() or unreadable(state) is not None


def checkpoint_problems(path: str | Path) -> list[str]:
    """What keeps the checkpoint at `path` from being whole: each missing file ("no optimizer.pt") and each
    unreadable one, as listed by its run record; an empty list for a whole checkpoint."""
    path = Path(path)
    if interrupted(path):
        return [f"no readable {TRAINER_STATE_NAME} (its writing was cut short)"]
    record_path = path / RUN_RECORD_NAME
    if not record_path.is_file() or unreadable(record_path) is not None:
        return [f"no readable {RUN_RECORD_NAME}"]
    problems = []
    for name in expected_files(json.loads(record_path.read_text())):
        file = path / name
        problem = f"no {name}" if not file.is_file() else unreadable(file)
        if problem is not None:
            problems.append(problem)
    return problems


class CheckpointWriteError(RuntimeError):
    """A checkpoint or model could not be written because its disk is full; the message names the folder, the
    space left and how the run continues."""


LOW_SPACE_BYTES = 1 << 20  # after a failed write, less than this left means the disk filled up


def disk_full(err: BaseException, folder: Path) -> bool:
    """Whether `err`, raised while writing into the existing `folder`, comes from a full disk. torch.save reports it as a
    bare position mismatch (PyTorchStreamWriter), safetensors in its message, Python as ENOSPC; so the free space
    is checked too."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC or "No space left" in str(err):
        return True
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE_BYTES
    except OSError:
        return False


@contextmanager
def explain_full_disk(
    directory: Path, what: str, resume: Callable[[], str], partial: Path | None = None
) -> Iterator[None]:
    """Turn an error from a full disk while writing `what` into `directory` into `CheckpointWriteError`, saying
    how the run goes on (`resume()`); a cut-short checkpoint folder `partial` is removed (a resume would)."""
    try:
        yield
    except Exception as err:
        if not disk_full(err, directory):
            raise
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
        free = shutil.disk_usage(directory).free / 2**20
        removed = f"The partial {partial.name} was removed. " if partial is not None else ""
        raise CheckpointWriteError(
            f"no space left on device while writing {what} in {directory} ({free:.1f} MiB free; {err}). "
            f"{removed}Free some space (or lower save_total_limit), then run the same command: {resume()}."
        ) from err


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
        problems = checkpoint_problems(path)
        if not problems:
            return path
        logger.warning("%s is incomplete (%s): passed over", path, "; ".join(problems))
    return None


def begin_checkpoint(folder: Path, loss_fn: nn.Module, run_record: dict[str, Any], files: list[str]) -> None:
    """What `AdUniTrainer` writes into a checkpoint before the Trainer writes its own files: the run record (with
    `files`, what the checkpoint holds once whole) and the method state. A checkpoint saved again at the same step
    loses its trainer_state.json first, so it counts as cut short until the Trainer has rewritten every file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / TRAINER_STATE_NAME).unlink(missing_ok=True)
    save_method_state(loss_fn, folder)
    record = {**run_record, FILES_KEY: files}
    write_atomic(folder / RUN_RECORD_NAME, json.dumps(record, indent=2, default=str))


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
