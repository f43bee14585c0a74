"""Small helpers shared by the library."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# A temporary file's name is ".", at most this many bytes of the target's name, "." and tempfile's 8 random
# characters: it stays within NAME_MAX (255 on Linux and macOS) for every name the OS accepts.
_TEMPORARY_NAME_BYTES = 200


def _temporary_prefix(name: str) -> str:
    """The temporary file's prefix for a target named `name`: its first `_TEMPORARY_NAME_BYTES` bytes, less any
    that are not UTF-8 (a character cut in two, a byte like 0xff), so the prefix is valid on every OS; the
    temporary name only has to show which file it will become."""
    return "." + os.fsencode(name)[:_TEMPORARY_NAME_BYTES].decode("utf-8", "ignore") + "."


def write_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder, so no half-written file remains.

    - On any error (an unencodable character, a full disk, a failing rename, an interrupt) the temporary file is
      removed and `path` keeps what it had; the error is raised.
    - The text is written as UTF-8 with `surrogateescape`: a file name that is not UTF-8 (on Linux, Python reads
      byte 0xff as the lone surrogate U+DCFF) is written back as the bytes the OS gave, so a CSV of paths names
      every file exactly, and a reader that opens it with `errors="surrogateescape"` gets the same paths back.
      Valid text is plain UTF-8; other lone surrogates still raise UnicodeEncodeError.
    - The file gets the permissions `open()` would give it (0666 less the umask): a temporary file is created
      0600, which would leave model cards and recipes unreadable to anyone else.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path.name))
    try:
        with open(descriptor, "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write(text)
        os.chmod(temporary, 0o666 & ~_current_umask())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
