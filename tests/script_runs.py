"""Our scripts run as a user runs them (`run_script`: a new process), or as `__main__` in the test's own process
(`run_script_here`: the same code path, without the seconds an interpreter takes to import torch and
transformers); both return a `subprocess.CompletedProcess` with the exit status and the output."""

from __future__ import annotations

import io
import os
import runpy
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_script(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python scripts/<script> args...` in `cwd` (where a run would write outputs/)."""
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), *args],
        capture_output=True, text=True, timeout=300, cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


def run_script_here(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """scripts/<script> run as `__main__` in this process, in `cwd`; `sys.exit(message)` reads as a process would
    (the message on stderr, status 1)."""
    path = REPO / "scripts" / script
    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, redirect_stdout(stdout), redirect_stderr(stderr):
        patch.chdir(cwd)
        patch.setattr(sys, "argv", [str(path), *args])
        try:
            runpy.run_path(str(path), run_name="__main__")
            status = 0
        except SystemExit as stop:
            status = stop.code if isinstance(stop.code, int) else 1
            if isinstance(stop.code, str):
                print(stop.code, file=sys.stderr)
    return subprocess.CompletedProcess([script, *args], status, stdout.getvalue(), stderr.getvalue())
