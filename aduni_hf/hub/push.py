"""Uploads to the Hugging Face Hub that fail clearly, the checkpoints a run pushes while it trains, and a pushed
checkpoint read back.

- `push_folder`: one blocking upload after everything is saved (a run's end, a cross-validation's end). A failed
  upload (no network, no token, offline mode) says what was not uploaded and how to upload it later.
- `CheckpointPusher`: what `AdUniTrainer` uploads at each save under `hub_strategy` `every_save`, `checkpoint` or
  `all_checkpoints`, in the background, as transformers' `Trainer._push_from_checkpoint` does (5.25: the model
  files of the checkpoint copied into output_dir and output_dir uploaded; the checkpoint itself to
  `last-checkpoint/` or `checkpoint-N/`), with our differences: our ignore patterns (the run lock names the
  command line, which may hold a token), a folder of the repo (`fold_<k>/` for a fold of a cross-validation), a
  manifest of every file's SHA-256 so that a checkpoint read back is known to be one save, and a failed upload
  logged instead of dropped. docs/hf_stack.md, "Model cards and the Hub".
- `HubLocation`, `remote_files`, `remote_step`, `download_files`, `download_folder`: reading back, for
  `--resume_from_checkpoint hub:owner/name/folder`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, ModelCard, ModelCardData

logger = logging.getLogger(__name__)

# The model's remote code, which a cross-validation folder also holds at its top: transformers 5.25 reads remote
# code from the top of a repository even when `from_pretrained` is given `subfolder`.
REMOTE_CODE_FILES = ("configuration_aduni.py", "modeling_aduni.py")
# What a cross-validation folder uploads: the summary, its figures, the remote code and every fold's final model
# folder, without checkpoints, stage folders or the selection weights (the final model is each fold's
# model.safetensors).
CV_ALLOW_PATTERNS = (
    "README.md", "cv_results.*", "cv_recipe.json", "figures/*", *REMOTE_CODE_FILES,
    "fold_*/config.json", "fold_*/model.safetensors", "fold_*/preprocessor_config.json", "fold_*/*.py",
    "fold_*/README.md", "fold_*/*_results.json", "fold_*/run_config.yaml", "fold_*/figures/*",
)  # fmt: skip
# What a single run (scripts/train.py) does not upload from its output_dir: checkpoints, stage folders, the
# weights of the other reported models, and the pickled TrainingArguments.
RUN_IGNORE_PATTERNS = (
    "checkpoint-*", "tmp-*", "_*", "best_validation.safetensors", "official_test_selection.safetensors",
    "training_args.bin", ".*",  # hidden files: the run folder's lock (recipes/run_lock.py)
)  # fmt: skip
# fnmatch's "*" also matches "/": these keep the checkpoints, stage folders and a downloaded checkpoint's staging
# folder inside the folds out.
CV_IGNORE_PATTERNS = ("fold_*/checkpoint-*", "fold_*/tmp-*", "fold_*/_*")

HUB_PREFIX = "hub:"  # --resume_from_checkpoint hub:owner/name/last-checkpoint
LAST_CHECKPOINT = "last-checkpoint"  # transformers' folder of the repo under hub_strategy checkpoint
CHECKPOINT_STRATEGIES = ("checkpoint", "all_checkpoints")  # the strategies that push the training state
PUSH_MANIFEST_NAME = "hub_manifest.json"  # in a pushed checkpoint: its step and every file's SHA-256
# The model as of a checkpoint, copied into output_dir for the upload of the repo's root (with `*.py`).
MODEL_FILE_NAMES = ("config.json", "model.safetensors", "preprocessor_config.json")


class PushError(RuntimeError):
    """An upload to the Hub failed; the message says that everything is saved locally and how to push it."""


def push_failed(folder: str | Path, repo_id: str, err: BaseException) -> PushError:
    return PushError(
        f"could not upload {folder} to the Hub repository {repo_id!r}: {type(err).__name__}: {err}. Nothing is lost: "
        f"everything is saved in {folder}. Upload it later with `hf upload {repo_id} {folder}` (or run the same "
        "command again with network access: finished work is not redone)."
    )


def strategy_name(strategy: Any) -> str:
    """`hub_strategy` as its string (TrainingArguments turns it into transformers' `HubStrategy`)."""
    return str(getattr(strategy, "value", strategy))


def pushes_while_training(push_to_hub: bool, strategy: Any) -> bool:
    """Whether the Trainer pushes at its saves: every strategy but `end` (transformers' documented meaning)."""
    return bool(push_to_hub) and strategy_name(strategy) != "end"


def repo_path(*parts: str) -> str:
    """Join folders of a Hub repository ("" parts are left out): repo_path("fold_2", "last-checkpoint")."""
    return "/".join(part.strip("/") for part in parts if part and part.strip("/"))


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    allow_patterns: Sequence[str] | None = None,
    ignore_patterns: Sequence[str] | None = None,
    commit_message: str = "Upload with aduni_hf",
    path_in_repo: str = "",
) -> str:
    """Create `repo_id` if needed and upload `folder` (the files matching `allow_patterns`, none of `ignore_patterns`)
    into the repo's folder `path_in_repo` (its root by default); returns the commit URL. Raises `PushError` when
    the Hub cannot be reached or refuses."""
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            path_in_repo=path_in_repo or None,
            allow_patterns=list(allow_patterns) if allow_patterns else None,
            ignore_patterns=list(ignore_patterns) if ignore_patterns else None,
            commit_message=commit_message,
        )
    except (
        Exception
    ) as err:  # offline mode, no network, no token, refused: every one is reported the same way
        raise push_failed(folder, repo_id, err) from err
    return str(getattr(commit, "commit_url", commit))


# ---- pushing while training ------------------------------------------------------------------------------------
def copy_atomic(source: Path, target: Path) -> None:
    """Copy `source` to `target` through a temporary file beside it: a reader (an upload in the background) sees the
    old file or the new one, never half of one."""
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(descriptor)
    try:
        shutil.copyfile(source, temporary)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(checkpoint: Path, step: int) -> None:
    """`PUSH_MANIFEST_NAME` in `checkpoint`: its step and the SHA-256 of every file it holds, uploaded with it. A Hub
    commit is atomic, but a large one may be split in several (huggingface_hub's streamed upload) and a kill between
    them would leave files of two saves under one folder; the manifest tells a checkpoint read back from one."""
    files = {
        path.relative_to(checkpoint).as_posix(): sha256_of(path)
        for path in sorted(checkpoint.rglob("*"))
        if path.is_file() and path.name != PUSH_MANIFEST_NAME and not path.name.startswith(".")
    }
    text = json.dumps({"global_step": step, "files": files}, indent=2)
    descriptor, temporary = tempfile.mkstemp(dir=checkpoint, prefix=f".{PUSH_MANIFEST_NAME}.")
    with open(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, checkpoint / PUSH_MANIFEST_NAME)


def manifest_problems(folder: Path) -> list[str] | None:
    """What keeps the checkpoint `folder`, read back from the Hub, from being the one save its manifest lists: each
    file missing, different or not listed. None when it has no manifest (pushed by another tool)."""
    path = folder / PUSH_MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        listed = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return [f"{PUSH_MANIFEST_NAME} is unreadable ({err})"]
    present = {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != PUSH_MANIFEST_NAME and not p.name.startswith(".")
    }
    problems = [f"no {name}" for name in sorted(set(listed) - present)]
    problems += [f"{name} is not the file that was pushed with it" for name in sorted(set(listed) & present)
                 if sha256_of(folder / name) != listed[name]]  # fmt: skip
    problems += [f"{name} is not part of it (left by another upload)" for name in sorted(present - set(listed))]
    return problems


@dataclass
class CheckpointPusher:
    """Uploads a run's saves to `repo_id` (under its folder `path_in_repo`) while it trains, for `AdUniTrainer`.

    Every strategy but `end` uploads the model as of each checkpoint, with output_dir's README.md (our card, written
    before training) and run_config.yaml, to the folder; `checkpoint` also uploads the checkpoint to
    `last-checkpoint/` (replacing what was there), `all_checkpoints` to `checkpoint-N/`, each with a manifest and
    with `carried_files` (the reported models chosen so far, which live in output_dir) so a run resumed elsewhere
    has the state it had. The uploads run in the background, one after the other (one `HfApi`, whose
    `run_as_future` jobs are queued in order); `push` returns the job's Future.
    """

    repo_id: str
    strategy: str
    path_in_repo: str = ""
    token: str | None = field(default=None, repr=False)  # never in a log
    private: bool | None = None
    revision: str | None = None
    carried_files: tuple[str, ...] = ()
    _api: HfApi | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.strategy = strategy_name(self.strategy)
        if self.strategy not in ("every_save", *CHECKPOINT_STRATEGIES):
            raise ValueError(f"hub_strategy={self.strategy!r} pushes nothing while training")

    @property
    def api(self) -> HfApi:
        if self._api is None:
            self._api = HfApi(token=self.token)
        return self._api

    def create_repo(self) -> str:
        """Create the repository (if it does not exist) before training, as the Trainer does; returns its id. A
        failure raises `PushError` now, before anything is trained."""
        try:
            url = self.api.create_repo(self.repo_id, private=self.private, exist_ok=True)
        except Exception as err:  # offline mode, no network, no token, refused
            raise PushError(
                f"could not create the Hub repository {self.repo_id!r} before training: {type(err).__name__}: {err}. "
                "Nothing has been trained yet. Check the network and the token (`hf auth login`, or --hub_token), "
                "or push only once training has ended with --hub_strategy end (or not at all: --push_to_hub false)."
            ) from err
        self.repo_id = getattr(url, "repo_id", None) or self.repo_id
        return self.repo_id

    def push(self, checkpoint: Path, output_dir: Path, step: int, commit_message: str) -> Future:
        """Push the save `checkpoint` (step `step`) in the background. What is copied happens now, on the
        training thread, so that it is as of this checkpoint: its model files into output_dir, and output_dir's
        carried files into the checkpoint."""
        checkpoint, output_dir = Path(checkpoint), Path(output_dir)
        for source in [*(checkpoint / name for name in MODEL_FILE_NAMES), *checkpoint.glob("*.py")]:
            if source.is_file():
                copy_atomic(source, output_dir / source.name)
        with_state = self.strategy in CHECKPOINT_STRATEGIES
        if with_state:
            for name in self.carried_files:
                if (output_dir / name).is_file():
                    copy_atomic(output_dir / name, checkpoint / name)
        return self.api.run_as_future(self._upload, checkpoint, output_dir, step, commit_message, with_state)

    def _upload(self, checkpoint: Path, output_dir: Path, step: int, message: str, with_state: bool) -> None:
        """The background job: the checkpoint first (what a resume needs), then the model and card."""
        if with_state:
            write_manifest(checkpoint, step)
            last = self.strategy == "checkpoint"
            self.api.upload_folder(
                repo_id=self.repo_id,
                folder_path=str(checkpoint),
                path_in_repo=repo_path(self.path_in_repo, LAST_CHECKPOINT if last else checkpoint.name),
                commit_message=f"{message}, checkpoint",
                revision=self.revision,
                ignore_patterns=[".*"],  # a temporary file of a copy that failed
                delete_patterns=["*"] if last else None,  # last-checkpoint/ holds this save's files only
            )
        self.api.upload_folder(
            repo_id=self.repo_id,
            folder_path=str(output_dir),
            path_in_repo=self.path_in_repo or None,
            ignore_patterns=list(RUN_IGNORE_PATTERNS),
            commit_message=message,
            revision=self.revision,
        )

    def where(self, checkpoint_name: str = "") -> str:
        return f"{self.repo_id}/{repo_path(self.path_in_repo, checkpoint_name)}".rstrip("/")


def training_card(
    *, repo_id: str, path_in_repo: str, title: str, recipe: Mapping[str, Any], strategy: Any
) -> str:
    """Our card for a repository (or its folder) while the run trains: what the files are, how to resume from them,
    and the recipe. The run's full card, with its results, replaces it when training ends; the Trainer's draft card
    is never written (`AdUniTrainer.create_model_card`)."""
    strategy, folder = strategy_name(strategy), repo_path(path_in_repo)
    data = ModelCardData(
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=["aduni", "imbalanced-classification", "training-in-progress"],
    )
    last, every = repo_path(folder, LAST_CHECKPOINT), repo_path(folder, "checkpoint-N")
    state = {
        "checkpoint": f"`{last}/` holds the full training state of the last pushed checkpoint. A run stopped before "
        f"its end resumes from it, on any machine, with its command and "
        f"`--resume_from_checkpoint hub:{repo_id}/{last}`.",
        "all_checkpoints": f"`{every}/` hold the full training state of every pushed checkpoint; a run resumes "
        f"from one with `--resume_from_checkpoint hub:{repo_id}/{every}`.",
        "every_save": "No training state is pushed (`hub_strategy every_save`): a run stopped before its end resumes "
        "only from its local checkpoints (`hub_strategy checkpoint` pushes them too).",
    }[strategy]
    rows = "\n".join(f"| {key} | {value} |" for key, value in recipe.items())
    text = (
        f"---\n{data.to_yaml()}\n---\n\n# {title}: training in progress\n\n"
        "aduni_hf is training this model (AdUni, Cong et al., *Adaptive Unified Contrastive Learning for "
        "Imbalanced Classification*, MLMI 2022). The files here are updated at every checkpoint (the commit "
        "message gives its step or epoch): the weights are the latest checkpoint's, not a finished model's, and "
        "nothing has been tested yet. When training ends this card is replaced by the run's own, with its test "
        "results.\n\n"
        f"{state}\n\n| recipe | value |\n|---|---|\n{rows}\n"
    )
    return str(ModelCard(text))


# ---- reading back ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HubLocation:
    """A folder of a Hub repository: `hub:owner/name/folder/...` (`folder` "" for the repository itself)."""

    repo_id: str
    folder: str

    def __str__(self) -> str:
        return f"{HUB_PREFIX}{repo_path(self.repo_id, self.folder)}"


def parse_hub_location(text: str | None, field_name: str = "resume_from_checkpoint") -> HubLocation | None:
    """`hub:owner/name[/folder...]` as a `HubLocation`; None for anything not starting with `hub:` (a local path).
    Raises ValueError naming `field_name` for a malformed one."""
    if text is None or not str(text).startswith(HUB_PREFIX):
        return None
    parts = str(text)[len(HUB_PREFIX) :].split("/")
    if len(parts) < 2 or any(part in ("", ".", "..") for part in parts):
        raise ValueError(
            f"{field_name}={text!r}: expected hub:<owner>/<name>/<folder>, the repository and the checkpoint "
            f"folder in it, e.g. hub:you/aduni-isic2018/{LAST_CHECKPOINT} (or .../fold_2/{LAST_CHECKPOINT}, "
            ".../checkpoint-1200)"
        )
    return HubLocation("/".join(parts[:2]), "/".join(parts[2:]))


def remote_files(repo_id: str, token: str | None = None) -> list[str]:
    """Every file of the repository (huggingface_hub's `list_repo_files`)."""
    return list(HfApi(token=token).list_repo_files(repo_id))


def remote_step(location: HubLocation, token: str | None = None) -> int:
    """The global step of the checkpoint at `location`, from its trainer_state.json (one small download)."""
    with tempfile.TemporaryDirectory() as scratch:
        path = HfApi(token=token).hf_hub_download(
            location.repo_id, repo_path(location.folder, "trainer_state.json"), local_dir=scratch
        )
        return int(json.loads(Path(path).read_text())["global_step"])


def download_files(
    repo_id: str,
    local_dir: Path,
    token: str | None = None,
    allow_patterns: Sequence[str] | None = None,
    ignore_patterns: Sequence[str] = (),
) -> list[Path]:
    """Download the files of the repository matching `allow_patterns`, less `ignore_patterns`, into `local_dir` with
    huggingface_hub's `snapshot_download`; returns them (not huggingface_hub's own `.cache/` there)."""
    HfApi(token=token).snapshot_download(
        repo_id,
        allow_patterns=list(allow_patterns) if allow_patterns else None,
        ignore_patterns=list(ignore_patterns) or None,
        local_dir=str(local_dir),
    )
    local_dir = Path(local_dir)
    return [p for p in sorted(local_dir.rglob("*")) if p.is_file() and p.relative_to(local_dir).parts[0] != ".cache"]


def download_folder(location: HubLocation, local_dir: Path, token: str | None = None) -> Path:
    """Download the folder of `location` into `local_dir`; returns `local_dir / folder`. Raises FileNotFoundError when
    the repository has nothing there."""
    if not download_files(location.repo_id, local_dir, token, [f"{location.folder}/*"]):
        raise FileNotFoundError(f"{location}: the repository has no files under {location.folder!r}")
    return Path(local_dir) / location.folder
