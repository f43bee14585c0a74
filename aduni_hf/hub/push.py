"""Uploads to the Hugging Face Hub that fail clearly: everything is saved locally first, and a failed upload (no
network, no token, offline mode) says what was not uploaded and how to upload it later."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from huggingface_hub import HfApi

# What a cross-validation folder uploads: the summary, its figures and every fold's final model folder, without
# checkpoints, stage folders or the selection weights (the final model is each fold's model.safetensors).
CV_ALLOW_PATTERNS = (
    "README.md", "cv_results.*", "cv_recipe.json", "figures/*",
    "fold_*/config.json", "fold_*/model.safetensors", "fold_*/preprocessor_config.json", "fold_*/*.py",
    "fold_*/README.md", "fold_*/*_results.json", "fold_*/run_config.yaml", "fold_*/figures/*",
)  # fmt: skip
# What a single run (scripts/train.py) does not upload from its output_dir: checkpoints, stage folders, the
# weights of the other reported models, and the pickled TrainingArguments.
RUN_IGNORE_PATTERNS = (
    "checkpoint-*", "tmp-*", "_*", "best_validation.safetensors", "official_test_selection.safetensors",
    "training_args.bin", ".*",  # hidden files: the run folder's lock (recipes/run_lock.py)
)  # fmt: skip
# fnmatch's "*" also matches "/": these keep the checkpoints and stage folders inside the folds out.
CV_IGNORE_PATTERNS = ("fold_*/checkpoint-*", "fold_*/tmp-*", "fold_*/_stage*")


class PushError(RuntimeError):
    """An upload to the Hub failed; the message says that everything is saved locally and how to push it."""


def push_failed(folder: str | Path, repo_id: str, err: BaseException) -> PushError:
    return PushError(
        f"could not upload {folder} to the Hub repository {repo_id!r}: {type(err).__name__}: {err}. Nothing is lost: "
        f"everything is saved in {folder}. Upload it later with `hf upload {repo_id} {folder}` (or run the same "
        "command again with network access: finished work is not redone)."
    )


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    allow_patterns: Sequence[str] | None = None,
    ignore_patterns: Sequence[str] | None = None,
    commit_message: str = "Upload with aduni_hf",
) -> str:
    """Create `repo_id` if needed and upload `folder` (the files matching `allow_patterns`, none of `ignore_patterns`); returns the commit
    URL. Raises `PushError` when the Hub cannot be reached or refuses."""
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            allow_patterns=list(allow_patterns) if allow_patterns else None,
            ignore_patterns=list(ignore_patterns) if ignore_patterns else None,
            commit_message=commit_message,
        )
    except (
        Exception
    ) as err:  # offline mode, no network, no token, refused: every one is reported the same way
        raise push_failed(folder, repo_id, err) from err
    return str(getattr(commit, "commit_url", commit))
