"""Run folders that survive a kill: which checkpoint to resume, what a finished run is, what a run record holds.

An `output_dir` is in one of four states, told apart by its files:

- empty (or missing): a fresh run;
- `checkpoint-N/` folders and no `test_results.json`: an interrupted run, resumed from the highest complete
  checkpoint by the same command (as the Hugging Face example scripts do);
- `test_results.json`: a finished run. It is written last, after the model, the card and every other result,
  so a killed run never looks finished. Training into it is refused unless `--overwrite_output_dir true`;
- `training_failed.json`: training stopped on a non-finite loss or gradient; the checkpoints before it are kept.

What a checkpoint holds and when it is whole: `aduni_hf.training.checkpoints`. A checkpoint cut short by a kill
is passed over, and removed when the run resumes; so is a `tmp-checkpoint-N/` of a save before this rule.

`--resume_from_checkpoint hub:owner/name/last-checkpoint` (a checkpoint a run pushed, `aduni_hf.hub.push`) is
downloaded into `output_dir/checkpoint-N` (N its step), checked against its manifest, then resumed as a local
checkpoint is: the same whole-checkpoint and recipe checks, and the same command resumes it again later.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..hub.push import HubLocation, download_folder, manifest_problems, parse_hub_location, remote_step
from ..training import SELECTIONS
from ..training.checkpoints import (
    RUN_RECORD_NAME,
    TRAINER_STATE_NAME,
    checkpoint_problems,
    checkpoint_step,
    checkpoints_of,
    interrupted,
)
from ..training.guard import FAILURE_NAME
from ..utils import write_atomic
from .errors import RunFolderError

logger = logging.getLogger(__name__)

STAGING_PREFIX = "tmp-"  # tmp-checkpoint-N: a checkpoint staged by an earlier version, never completed
FINISHED_NAME = "test_results.json"  # written last: its presence means the run finished
SELECTION_PREFIXES = tuple(f"{name}." for name in SELECTIONS)  # <name>.json and <name>.safetensors
RUN_CONFIG_NAME = "run_config.yaml"  # the resolved recipe, written once the data is read
STAGE_DIR_PREFIX = "_stage"  # _stage1, _stage2: the stages of a two-stage method ("_*" is what the push leaves out)
HUB_STAGING_NAME = "_hub_download"  # a checkpoint on its way from the Hub ("_*": never pushed)

# Recipe fields that may differ between a checkpoint and the run resuming it: where files go, how much is
# logged, how data is loaded (augmentation is seeded per image, so workers do not change the views), and the
# training length (checked separately). Every other recipe field changes the result, and a difference refuses.
RESUMABLE_FIELDS = frozenset(
    {
        # ModelArguments / DataArguments: the place of the data, not the data (its content is compared)
        "dataset_path",
        "data_dir",
        "resize_prepared_images",  # only decides whether a recipe is refused (the image size itself is compared)
        "gradient_checkpointing",
        # AdUniTrainingArguments
        "output_dir",
        "overwrite_output_dir",
        "resume_from_checkpoint",
        "num_train_epochs",
        "max_steps",
        "torch_threads",
        "per_device_eval_batch_size",
        "eval_strategy",
        "eval_steps",
        "eval_delay",
        "eval_on_start",
        "logging_strategy",
        "logging_steps",
        "logging_first_step",
        "logging_nan_inf_filter",
        "log_level",
        "log_level_replica",
        "log_on_each_node",
        "disable_tqdm",
        "report_to",
        "run_name",
        "project",
        "trackio_space_id",
        "save_strategy",
        "save_steps",
        "save_total_limit",
        "save_on_each_node",
        "dataloader_num_workers",
        "dataloader_pin_memory",
        "dataloader_persistent_workers",
        "dataloader_prefetch_factor",
        "push_to_hub",
        "hub_model_id",
        "hub_strategy",
        "hub_token",
        "hub_private_repo",
        "hub_always_push",
        "hub_revision",
        "include_for_metrics",
        "include_num_input_tokens_seen",
        "metric_for_best_model",
        "greater_is_better",
        "load_best_model_at_end",
        "ddp_timeout",
        "ddp_backend",
        "local_rank",
        "skip_memory_metrics",
        "use_cpu",
    }
)


# Recipe fields added after a checkpoint could have been written: the value that reproduces what a run did before
# they existed, taken where the checkpoint's record has no such field.
EARLIER_DEFAULTS = {
    "augmentation_device": "loader",
    "resize_prepared_images": False,
    "batch_shuffle": False,  # the sampler's order: class by class for upsample
    "meta_samples_per_class": 4,  # balms's meta batches were class-aware with 4 per class
}

# What identifies a data set wherever its folder lies (run_data.data_record), compared on resume, and what a
# difference means. A key that a checkpoint does not record (written before it was) is not compared, and noted.
DATA_IDENTITY = {
    "class_names": "its class names differ from the checkpoint's",
    "digest": "its digest differs from the checkpoint's (image ids, labels or folds)",
    "content_fingerprint": "the content of its images differs from the checkpoint's (other images under the same "
    "file names, or prepared again from other files)",
}


def remove_interrupted_checkpoints(folder: Path) -> None:
    """Remove the checkpoints of `folder` whose writing was cut short (no readable trainer_state.json, the file the
    Trainer writes last; and earlier versions' staged ones). A checkpoint damaged after it was written is kept:
    `resume_point` refuses it, naming what is wrong."""
    for staged in folder.glob(f"{STAGING_PREFIX}{PREFIX_CHECKPOINT_DIR}-*"):
        logger.warning("removing %s, a checkpoint whose writing was interrupted", staged)
        shutil.rmtree(staged, ignore_errors=True)
    for checkpoint in checkpoints_of(folder):
        if interrupted(checkpoint):
            logger.warning(
                "removing %s, a checkpoint whose writing was interrupted (no readable %s)",
                checkpoint,
                TRAINER_STATE_NAME,
            )
            shutil.rmtree(checkpoint, ignore_errors=True)


def check_resumable(checkpoint: Path) -> None:
    """Refuse to resume from `checkpoint` unless it is whole and holds the training state, naming each missing or
    unreadable file and the previous whole checkpoint of its folder."""
    problems = checkpoint_problems(checkpoint) if checkpoint.is_dir() else ["the folder does not exist"]
    if problems:
        step = checkpoint_step(checkpoint) or 0
        earlier = [path for path in checkpoints_of(checkpoint.parent) if (checkpoint_step(path) or 0) < step]
        previous = next((path for path in reversed(earlier) if not checkpoint_problems(path)), None)
        advice = (
            f"Resume from the previous whole checkpoint with --resume_from_checkpoint {previous} (or remove "
            f"{checkpoint.name}), or start a fresh run with --overwrite_output_dir true."
            if previous is not None
            else "No earlier whole checkpoint is left: start a fresh run with --overwrite_output_dir true."
        )
        raise RunFolderError(f"cannot resume from {checkpoint}: {'; '.join(problems)}. {advice}")
    record = json.loads((checkpoint / RUN_RECORD_NAME).read_text())
    if record.get("fields", {}).get("save_only_model"):
        raise RunFolderError(
            f"cannot resume from {checkpoint}: it was saved with save_only_model true, so it holds the weights but "
            "not the optimiser, scheduler or random state, and training cannot continue where it stopped. Start a "
            "fresh run with --overwrite_output_dir true, or start from its weights with --model_name_or_path "
            f"{checkpoint} in another output_dir."
        )


def resume_point(folder: Path) -> Path | None:
    """The newest checkpoint of `folder` to resume from, once checked whole (`check_resumable`), or None."""
    checkpoints = checkpoints_of(folder)
    if not checkpoints:
        return None
    check_resumable(checkpoints[-1])
    return checkpoints[-1]


# ---- the output folder --------------------------------------------------------------------------------------
def _finished_summary(path: Path) -> str:
    try:
        results = json.loads(path.read_text())
        return f"test accuracy {results['test_accuracy']:.4f}, macro-F1 {results['test_macro_f1']:.4f}"
    except (OSError, ValueError, KeyError, TypeError):
        return "unreadable results"


def check_writable(output_dir: Path) -> None:
    """Create `output_dir` and write a probe file in it, or fail now naming the folder."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as err:
        raise RunFolderError(f"output_dir={str(output_dir)!r} is not writable: {err}") from err


def clear_previous_run(output_dir: Path) -> list[str]:
    """Remove what a previous run left that a fresh one must not mistake for its own: checkpoints, staged
    checkpoints, results and the failure mark. The model files are simply overwritten. Returns the names."""
    removed = []
    for path in sorted(output_dir.iterdir()):
        is_checkpoint = path.is_dir() and (
            checkpoint_step(path.name.removeprefix(STAGING_PREFIX)) is not None or path.name == HUB_STAGING_NAME
        )
        is_result = path.is_file() and (
            path.name.endswith("_results.json")
            or path.name == FAILURE_NAME
            or path.name.startswith(SELECTION_PREFIXES)  # the models chosen during training
        )
        if is_checkpoint:
            shutil.rmtree(path)
        elif is_result:
            path.unlink()
        else:
            continue
        removed.append(path.name)
    return removed


def is_run_file(path: Path) -> bool:
    """Whether `path`, in an output_dir, is something only a run writes: its recipe, a checkpoint, a stage
    folder, its results or its failure mark."""
    name = path.name
    return (
        name in (RUN_CONFIG_NAME, FINISHED_NAME, FAILURE_NAME, HUB_STAGING_NAME)
        or checkpoint_step(name.removeprefix(STAGING_PREFIX)) is not None
        or (name.startswith(STAGE_DIR_PREFIX) and name[len(STAGE_DIR_PREFIX) :].isdigit())
    )


def check_run_folder(output_dir: Path) -> None:
    """Refuse an output_dir that holds files but none a run writes: training would overwrite them (a README.md,
    a config.json). Hidden files (the run lock, .gitkeep) do not count."""
    entries = sorted(p.name for p in output_dir.iterdir() if not p.name.startswith("."))
    if entries and not any(is_run_file(output_dir / name) for name in entries):
        shown = ", ".join(entries[:4]) + (f" and {len(entries) - 4} more" if len(entries) > 4 else "")
        raise RunFolderError(
            f"output_dir={str(output_dir)!r} is not empty and holds no training run ({shown}): training would "
            "overwrite its files (README.md, config.json, model.safetensors). Choose a new or empty output_dir."
        )


def prepare_output_dir(
    output_dir: str | Path,
    resume_from_checkpoint: str | None,
    overwrite: bool,
    *,
    hub_token: str | None = None,
    main_process: bool = True,
) -> Path | None:
    """Decide, before any data is read, where training starts; returns the checkpoint to resume from, or None.

    - The folder must be writable, and empty or a run's (`check_run_folder`).
    - A finished run (`test_results.json`) is refused unless `overwrite`.
    - `overwrite` starts a fresh run: the previous run's checkpoints and results are removed first.
    - Otherwise `resume_from_checkpoint` if given, else the newest checkpoint in the folder; either must be
      whole (`check_resumable`). Checkpoints cut short while written are removed first.
    - `resume_from_checkpoint` `hub:owner/name/folder`: the main process downloads it (`fetch_hub_checkpoint`),
      then every process resumes the newest checkpoint of the folder, which is it (or a local one at or after it).
    Call it on the main process first (`TrainingArguments.main_process_first`): the others then find the
    same checkpoint, and nothing left to remove.
    """
    output_dir = Path(output_dir)
    check_writable(output_dir)
    check_run_folder(output_dir)
    if overwrite:
        if resume_from_checkpoint is not None:
            raise RunFolderError(
                "overwrite_output_dir starts a fresh run and resume_from_checkpoint continues one: give one of them"
            )
        removed = clear_previous_run(output_dir)
        if removed:
            logger.warning(
                "overwrite_output_dir: a fresh run; removed %s from %s", ", ".join(removed), output_dir
            )
        return None
    finished = output_dir / FINISHED_NAME
    if finished.is_file():
        raise RunFolderError(
            f"output_dir={str(output_dir)!r} holds a finished run ({FINISHED_NAME}: {_finished_summary(finished)}). "
            "Choose another output_dir, or pass --overwrite_output_dir true to train a fresh run over it."
        )
    remove_interrupted_checkpoints(output_dir)
    failure = output_dir / FAILURE_NAME
    if failure.is_file():
        logger.warning("the previous attempt in %s failed: %s", output_dir, failure.read_text().strip())
    try:
        location = parse_hub_location(resume_from_checkpoint)
    except ValueError as err:
        raise RunFolderError(str(err)) from err
    if location is not None:
        if main_process:
            fetch_hub_checkpoint(location, output_dir, hub_token)
        checkpoint = resume_point(output_dir)
        logger.info("resuming %s from %s", output_dir, checkpoint)
        return checkpoint
    if resume_from_checkpoint is not None:
        checkpoint = Path(resume_from_checkpoint)
        check_resumable(checkpoint)
        return checkpoint
    checkpoint = resume_point(output_dir)
    if checkpoint is not None:
        logger.info("resuming the interrupted run in %s from %s", output_dir, checkpoint.name)
    return checkpoint


# ---- a checkpoint pushed to the Hub --------------------------------------------------------------------------
def hub_failure(location: HubLocation, what: str, err: BaseException) -> RunFolderError:
    return RunFolderError(
        f"resume_from_checkpoint={location}: cannot {what} ({type(err).__name__}: {err}). Check the repository and "
        "the folder (last-checkpoint under hub_strategy checkpoint, checkpoint-N under all_checkpoints, in fold_<k>/ "
        "for a fold of a cross-validation), the network and the token (`hf auth login`, or --hub_token)."
    )


def fetch_hub_checkpoint(location: HubLocation, output_dir: Path, token: str | None) -> Path | None:
    """Download the checkpoint at `location` into `output_dir/checkpoint-N` (N its step; huggingface_hub's
    `snapshot_download` into a staging folder, then one rename) and put the reported models chosen so far, which
    it carries, back into output_dir. Returns it; None when output_dir already holds a checkpoint at or after
    that step (the same command run again on the machine that resumed: its own checkpoints are newer or equal).

    Refused, naming each file, when the download is not the one save its manifest lists (an upload cut short);
    its completeness as a checkpoint and its recipe are checked afterwards as a local checkpoint's are."""
    try:
        step = remote_step(location, token)
    except Exception as err:  # no such repository or folder, offline, no network, no token
        raise hub_failure(location, "read its trainer_state.json from the Hub", err) from err
    local = checkpoints_of(output_dir)
    if local and (checkpoint_step(local[-1]) or 0) >= step:
        logger.warning("%s holds %s, at or after the Hub's checkpoint %s (step %d): resuming the local one",
                       output_dir, local[-1].name, location, step)  # fmt: skip
        return None
    staging = output_dir / HUB_STAGING_NAME
    shutil.rmtree(staging, ignore_errors=True)
    try:
        folder = download_folder(location, staging, token)
    except Exception as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise hub_failure(location, "download it from the Hub", err) from err
    problems = manifest_problems(folder)
    if problems:
        shutil.rmtree(staging, ignore_errors=True)
        raise RunFolderError(
            f"resume_from_checkpoint={location} is not one whole checkpoint: {'; '.join(problems)}. Its upload was "
            "cut short. Resume from a local checkpoint, from an earlier checkpoint-N of the repository (hub_strategy "
            "all_checkpoints), or start a fresh run."
        )
    if problems is None:
        logger.warning("%s has no push manifest (not pushed by aduni_hf): checked as a local checkpoint only",
                       location)  # fmt: skip
    step = json.loads((folder / TRAINER_STATE_NAME).read_text())["global_step"]
    target = output_dir / f"{PREFIX_CHECKPOINT_DIR}-{step}"
    if target.exists():
        shutil.rmtree(staging, ignore_errors=True)
        raise RunFolderError(
            f"{target} exists already: resume from it (leave resume_from_checkpoint out), or remove it"
        )
    os.replace(folder, target)
    shutil.rmtree(staging, ignore_errors=True)
    for path in target.iterdir():  # the reported models as of the checkpoint (the pusher's carried files)
        if path.name.startswith(SELECTION_PREFIXES):
            shutil.copyfile(path, output_dir / path.name)
    logger.info("downloaded %s into %s", location, target)
    return target


def save_results(output_dir: Path, split: str, metrics: dict[str, float], main_process: bool) -> None:
    """`<split>_results.json` and the merged all_results.json, each written whole (as `Trainer.save_metrics`
    lays them out), all_results.json first."""
    if not main_process:
        return
    combined = output_dir / "all_results.json"
    merged = json.loads(combined.read_text()) if combined.is_file() else {}
    merged.update(metrics)
    write_atomic(combined, json.dumps(merged, indent=4, sort_keys=True))
    write_atomic(output_dir / f"{split}_results.json", json.dumps(metrics, indent=4, sort_keys=True))



# ---- what a checkpoint was trained with ----------------------------------------------------------------------
def run_record(recipe: dict[str, dict[str, Any]], data: dict[str, Any], num_processes: int) -> dict[str, Any]:
    """The record saved in every checkpoint: every recipe field (grouped as in run_config.yaml), the data it
    trained on (class names and counts, a digest of the labels and folds) and the number of processes."""
    fields = {name: value for group in recipe.values() for name, value in group.items()}
    return {"fields": fields, "data": data, "num_processes": num_processes}


def differs(saved: Any, current: Any) -> bool:
    if isinstance(saved, float) and isinstance(current, float):
        return not math.isclose(saved, current, rel_tol=1e-12, abs_tol=0.0)
    return saved != current


def check_resume(checkpoint: Path, current: dict[str, Any]) -> list[str]:
    """Compare `current` (a `run_record`) with the checkpoint's; refuse a difference that changes the result.

    Returns notes about allowed differences (a longer or shorter training) for the log. Raises
    `RunFolderError` naming every differing field, with the checkpoint's value and the recipe's.
    """
    saved = json.loads((checkpoint / RUN_RECORD_NAME).read_text())
    fields = current["fields"]
    earlier = {name: value for name, value in EARLIER_DEFAULTS.items() if name in fields}  # fields added since
    saved_fields = {**earlier, **saved["fields"]}
    differing = [
        f"{name}: {saved_fields.get(name)!r} in the checkpoint, {fields.get(name)!r} now"
        for name in sorted(set(saved_fields) | set(fields))
        if name not in RESUMABLE_FIELDS and differs(saved_fields.get(name), fields.get(name))
    ]
    if saved["num_processes"] != current["num_processes"]:
        differing.append(
            f"number of processes: {saved['num_processes']} in the checkpoint, {current['num_processes']} now "
            "(the global batch would change)"
        )
    for key, what in DATA_IDENTITY.items():  # the split sizes and counts follow from the data set and the folds
        if key in saved["data"] and saved["data"][key] != current["data"].get(key):
            differing.append(f"data set: {what}")
    if differing:
        raise RunFolderError(
            f"cannot resume from {checkpoint}: the recipe differs in fields that change the result:\n  "
            + "\n  ".join(differing)
            + "\nResume with the checkpoint's values, or start a fresh run (another output_dir, or "
            "--overwrite_output_dir true)."
        )
    for key in DATA_IDENTITY.keys() - saved["data"].keys():
        logger.warning(
            "%s records no %s of the data set (written before it was recorded): not compared", checkpoint, key
        )
    notes = []
    for name in ("num_train_epochs", "max_steps"):
        if differs(saved_fields.get(name), fields.get(name)):
            notes.append(f"{name} changed from {saved_fields.get(name)!r} to {fields.get(name)!r}")
    return notes
