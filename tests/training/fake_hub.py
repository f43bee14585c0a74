"""An offline Hugging Face Hub for the tests, at the huggingface_hub API boundary: `FakeHubApi` stands for
`huggingface_hub.HfApi` where aduni_hf.hub.push uses it (no network).

It keeps what is uploaded and serves it back:

- repositories live in a folder (`FakeHubApi.store`; `FAKE_HUB_DIR` across processes), one revision per commit:
  a commit builds the new tree beside the old one and then moves `HEAD`, so a process killed in the middle of a
  commit leaves the repository as it was, as the Hub's atomic commits do;
- `upload_folder` (with `path_in_repo`, `allow_patterns`, `ignore_patterns`, `delete_patterns`, `run_as_future`,
  huggingface_hub's default ignore patterns), `create_repo`, `run_as_future` (one background thread, jobs in order,
  as HfApi's), `list_repo_files`, `hf_hub_download` and `snapshot_download` (`allow_patterns`, `local_dir`);
- every upload is recorded: `uploads` (repo id, {path in the repo: bytes}) in this process, and a line per commit
  in the repository's `commits.jsonl` (message, files, whether it ran off the main thread).

`install(monkeypatch_setattr)` puts it in place, and makes the Trainer's own client (`transformers.trainer.hf_api`)
fail loudly: every upload must go through aduni_hf's pusher, with our card and patterns.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import RepoUrl
from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS
from huggingface_hub.utils import filter_repo_objects

STORE_ENV = "FAKE_HUB_DIR"


class TrainerHubClientUsed(AssertionError):
    """The Trainer's own Hub client was called: an upload that bypassed aduni_hf's pusher (and our card)."""


def forbidden_trainer_client():
    raise TrainerHubClientUsed("transformers.trainer.hf_api() was called: the Trainer pushed on its own")


class FakeHubApi:
    """huggingface_hub.HfApi as aduni_hf uses it, offline (see the module docstring)."""

    created: list = []
    uploads: list = []
    store: Path | None = None
    _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fake-hub")
    _lock = threading.Lock()

    def __init__(self, token=None, **kwargs):
        self.token = token

    # ---- where repositories live ---------------------------------------------------------------------------------
    @classmethod
    def root(cls) -> Path:
        if cls.store is None:
            cls.store = Path(os.environ.get(STORE_ENV) or tempfile.mkdtemp(prefix="fake-hub-"))
        cls.store.mkdir(parents=True, exist_ok=True)
        return cls.store

    @classmethod
    def repo_dir(cls, repo_id: str) -> Path:
        return cls.root() / repo_id

    @classmethod
    def head(cls, repo_id: str) -> Path | None:
        """The folder of the repository's current revision (None: no commit yet)."""
        pointer = cls.repo_dir(repo_id) / "HEAD"
        return cls.repo_dir(repo_id) / "revisions" / pointer.read_text().strip() if pointer.is_file() else None

    @classmethod
    def files(cls, repo_id: str) -> dict[str, Path]:
        head = cls.head(repo_id)
        if head is None:
            return {}
        return {p.relative_to(head).as_posix(): p for p in sorted(head.rglob("*")) if p.is_file()}

    @classmethod
    def commits(cls, repo_id: str) -> list[dict]:
        log = cls.repo_dir(repo_id) / "commits.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []

    @classmethod
    @contextmanager
    def _exclusive(cls, repo_id: str):
        cls.repo_dir(repo_id).mkdir(parents=True, exist_ok=True)
        with cls._lock, open(cls.repo_dir(repo_id) / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    # ---- HfApi ------------------------------------------------------------------------------------------------
    def create_repo(self, repo_id, private=None, exist_ok=False, **kwargs):
        FakeHubApi.created.append(repo_id)
        self.repo_dir(repo_id).mkdir(parents=True, exist_ok=True)
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def run_as_future(self, fn, *args, **kwargs) -> Future:
        return FakeHubApi._pool.submit(fn, *args, **kwargs)

    def upload_folder(self, *, repo_id, folder_path, path_in_repo=None, commit_message="", allow_patterns=None,
                      ignore_patterns=None, delete_patterns=None, revision=None, run_as_future=False,
                      **kwargs):  # fmt: skip
        if run_as_future:
            return self.run_as_future(
                self.upload_folder, repo_id=repo_id, folder_path=folder_path, path_in_repo=path_in_repo,
                commit_message=commit_message, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns,
                delete_patterns=delete_patterns, revision=revision,
            )  # fmt: skip
        folder, prefix = Path(folder_path), (path_in_repo or "").strip("/")
        every = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file()]
        ignore = [*(ignore_patterns or []), *DEFAULT_IGNORE_PATTERNS]
        chosen = list(filter_repo_objects(every, allow_patterns=allow_patterns, ignore_patterns=ignore))
        added = {f"{prefix}/{name}" if prefix else name: (folder / name).read_bytes() for name in chosen}
        self._commit(repo_id, added, prefix, delete_patterns, commit_message)
        FakeHubApi.uploads.append((repo_id, added))
        return f"https://huggingface.co/{repo_id}/commit/{len(FakeHubApi.uploads)}"

    def _commit(self, repo_id, added: dict[str, bytes], prefix: str, delete_patterns, message: str) -> None:
        """A new revision: the current tree (hard links), less what `delete_patterns` match under `prefix` and is not
        added again, plus `added`; then HEAD moves to it in one rename."""
        with self._exclusive(repo_id):
            current = self.files(repo_id)
            under = {name[len(prefix) + 1 :] if prefix else name: name for name in current
                     if not prefix or name.startswith(prefix + "/")}  # fmt: skip
            deleted = {under[name] for name in filter_repo_objects(list(under), allow_patterns=delete_patterns)}
            deleted = sorted(deleted - set(added)) if delete_patterns else []
            revisions = self.repo_dir(repo_id) / "revisions"
            revisions.mkdir(exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=revisions, prefix="tmp-"))
            for name, path in current.items():
                if name not in deleted and name not in added:
                    (staging / name).parent.mkdir(parents=True, exist_ok=True)
                    os.link(path, staging / name)
            for name, content in added.items():
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                (staging / name).write_bytes(content)
            number = str(1 + max((int(p.name) for p in revisions.iterdir() if p.name.isdigit()), default=0))
            os.replace(staging, revisions / number)
            pointer = self.repo_dir(repo_id) / "HEAD.tmp"
            pointer.write_text(number)
            os.replace(pointer, self.repo_dir(repo_id) / "HEAD")
            entry = {"revision": number, "message": message, "files": sorted(added), "deleted": deleted,
                     "background": threading.current_thread() is not threading.main_thread()}  # fmt: skip
            with open(self.repo_dir(repo_id) / "commits.jsonl", "a") as log:
                log.write(json.dumps(entry) + "\n")

    def list_repo_files(self, repo_id, **kwargs) -> list[str]:
        if not self.repo_dir(repo_id).is_dir():
            raise FileNotFoundError(f"repository {repo_id} not found")
        return list(self.files(repo_id))

    def hf_hub_download(self, repo_id, filename, local_dir=None, **kwargs) -> str:
        source = self.files(repo_id).get(filename)
        if source is None:
            raise FileNotFoundError(f"{filename} is not in {repo_id}")
        target = Path(local_dir or tempfile.mkdtemp(dir=self.root(), prefix="download-")) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return str(target)

    def snapshot_download(self, repo_id, allow_patterns=None, ignore_patterns=None, local_dir=None, **kwargs) -> str:
        files = self.files(repo_id)
        if not self.repo_dir(repo_id).is_dir():
            raise FileNotFoundError(f"repository {repo_id} not found")
        local = Path(local_dir or tempfile.mkdtemp(dir=self.root(), prefix="download-"))
        for name in filter_repo_objects(list(files), allow_patterns=allow_patterns, ignore_patterns=ignore_patterns):
            (local / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(files[name], local / name)
        (local / ".cache" / "huggingface").mkdir(parents=True, exist_ok=True)  # as huggingface_hub's local_dir
        return str(local)


def install(setattr_, store: Path | None = None) -> type[FakeHubApi]:
    """Put `FakeHubApi` in place with `setattr_` (pytest's `monkeypatch.setattr`, or a plain setter) on a store
    (default: `FAKE_HUB_DIR`, else a new temporary folder)."""
    FakeHubApi.store = Path(store) if store is not None else None
    setattr_("aduni_hf.hub.push.HfApi", FakeHubApi)
    setattr_("transformers.trainer.hf_api", forbidden_trainer_client)
    return FakeHubApi
