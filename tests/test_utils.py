"""write_atomic: the whole text or the old file, never a temporary file left behind, any file name the OS accepts."""

import os
import stat

import pytest

from aduni_hf.utils import write_atomic

NOT_UTF8 = os.fsdecode(b"scan-\xff.png")  # a Linux file name that is not UTF-8: '\udcff' in Python


def leftovers(folder):
    return sorted(name for name in os.listdir(folder) if name.startswith("."))


def test_writes_the_text_with_the_permissions_open_would_give(tmp_path):
    path = tmp_path / "sub" / "notes.txt"
    write_atomic(path, "one\ntwo é\n")
    assert path.read_text(encoding="utf-8") == "one\ntwo é\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert leftovers(path.parent) == []


def test_an_error_while_writing_removes_the_temporary_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        write_atomic(path, "a" * 100_000 + "\ud800")  # a lone surrogate that no file name produces
    assert path.read_text() == "old\n"
    assert leftovers(tmp_path) == []


def test_a_failing_replace_removes_the_temporary_file(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside.txt").write_text("kept")  # os.replace cannot put a file over a non-empty folder
    with pytest.raises(OSError):
        write_atomic(target, "text")
    assert (target / "inside.txt").read_text() == "kept"
    assert leftovers(tmp_path) == []


def test_file_names_that_are_not_utf8_are_written_as_the_bytes_the_os_gave(tmp_path):
    folder = tmp_path / NOT_UTF8  # the output's own folder and name may be any bytes too
    write_atomic(folder / NOT_UTF8, f"path\n{NOT_UTF8}\n")
    assert (folder / NOT_UTF8).read_bytes() == b"path\nscan-\xff.png\n"
    assert leftovers(folder) == []


def test_the_longest_name_the_os_accepts(tmp_path):
    name = "r" * (os.pathconf(tmp_path, "PC_NAME_MAX") - 4) + ".csv"
    write_atomic(tmp_path / name, "x")
    assert (tmp_path / name).read_text() == "x" and leftovers(tmp_path) == []
