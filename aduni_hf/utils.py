"""Small helpers shared by the library."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder, so no half-written file remains.

    The file gets the permissions `open()` would give it (0666 less the umask): a temporary file is created
    0600, which would leave model cards and recipes unreadable to anyone else.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(text)
        temporary = handle.name
    os.chmod(temporary, 0o666 & ~_current_umask())
    os.replace(temporary, path)
