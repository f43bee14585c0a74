"""One writer per run folder: a run holds a lock on its `output_dir` from before it looks at the folder until its
last file is written (and pushed).

The lock is an advisory `flock` on `output_dir/.aduni_run.lock`, whose content names the holder (process, host,
start, command). The operating system lets it go when the holder's process ends in any way, SIGKILL included, so
a lock left by a killed run is simply taken by the next one, which says whose it was. A second run while the
holder lives is refused, naming it. Only a run's main process takes the lock: the other processes of the same run
write where it lets them (their checkpoints' RNG states).

A process forked by the holder (a DataLoader worker) closes its copy of the descriptor at once: otherwise it would
keep the lock after a SIGKILL of the holder, for the seconds a worker takes to notice that its parent is gone, and
the restarted run would be refused in the name of a dead process.

A run that ends removes the file, while it still holds the lock, and the folder too if the lock file was all it
held (a run refused before writing anything leaves no trace). A contender that opened the file just before it was
removed finds, once it holds the lock, that the path no longer names its file, and opens it again: so two runs
never both hold the lock. (`filelock`, which `datasets` uses, keeps its lock files forever to avoid exactly that
race; hence our own few lines on `fcntl`.) On a network file system without `flock` the lock may not exclude
anything: keep run folders on a local or `flock`-capable disk.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import RunFolderError

logger = logging.getLogger(__name__)

LOCK_NAME = ".aduni_run.lock"  # hidden: not part of a run's results, never pushed

_held: set[int] = set()  # the descriptors of the locks this process holds


def _drop_inherited_locks() -> None:
    """In a forked child: close the holder's lock descriptors (the lock stays with the holder's own descriptor)."""
    for fd in _held:
        os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


def _holder() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(sys.argv),
    }


def _describe(text: str) -> str:
    try:
        holder = json.loads(text)
        return (
            f"process {holder['pid']} on {holder['host']}, since {holder['started']} "
            f"(command: {holder['command'] or 'unknown'})"
        )
    except (ValueError, KeyError, TypeError):
        return "a process that has not written its name yet"


def _read(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 1 << 16).decode(errors="replace")


def _acquire(path: Path) -> int:
    """Open and lock `path` (creating its folder); returns the descriptor. Raises `BlockingIOError` with the
    holder's description."""
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            continue  # the folder was removed by the run that held it just before
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read(fd))
            os.close(fd)
            raise BlockingIOError(holder) from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # removed by the run that held it just before: lock the file that is there now


@contextmanager
def run_folder_lock(output_dir: str | Path, main_process: bool = True) -> Iterator[None]:
    """Hold the lock of `output_dir` for the body (on the main process; the others pass through).

    Raises `RunFolderError` naming the holder when another live process holds it, or when the folder cannot be
    created or written.
    """
    if not main_process:
        yield
        return
    output_dir = Path(output_dir)
    created = not output_dir.exists()
    path = output_dir / LOCK_NAME
    try:
        fd = _acquire(path)
    except BlockingIOError as held:
        raise RunFolderError(
            f"output_dir={str(output_dir)!r} is being written by another run: {held}. Two runs in one folder "
            "would mix their checkpoints and results: wait for it to end or stop it, or choose another output_dir. "
            "(A lock left by a run that was killed is taken over by the next run.)"
        ) from None
    except OSError as err:
        raise RunFolderError(f"output_dir={str(output_dir)!r} is not writable: {err}") from err
    _held.add(fd)
    try:
        previous = _read(fd)
        if previous:
            logger.warning("taking over the lock of %s from %s, which ended without releasing it",
                           output_dir, _describe(previous))  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(_holder(), indent=2) + "\n").encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)  # still holding the lock: see the module's docstring
        if created and not any(output_dir.iterdir()):
            output_dir.rmdir()
        _held.discard(fd)
        os.close(fd)


__all__ = ["LOCK_NAME", "run_folder_lock"]
