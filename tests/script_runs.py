"""Our scripts run as a user runs them (`run_script`: a new process), or as `__main__` in the test's own process
(`run_script_here`: the same code path, without the seconds an interpreter takes to import torch and
transformers); both return a `subprocess.CompletedProcess` with the exit status and the output.

Use `run_script` where the process is what is tested (its exit status after a kill, its console, a launcher);
`run_script_here` everywhere else.
"""

from __future__ import annotations

import io
import logging
import os
import runpy
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import datasets
import pytest
import torch
import transformers

REPO = Path(__file__).resolve().parents[1]


def run_script(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python scripts/<script> args...` in `cwd` (where a run would write outputs/)."""
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), *args],
        capture_output=True, text=True, timeout=300, cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


def run_script_here(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """scripts/<script> run as `__main__` in this process, in `cwd`, read as a process would be: `sys.exit(message)`
    is the message on stderr and status 1, and the run's log records are in its output (pytest's own handlers
    on the root logger would otherwise keep them). What a run sets for the whole process (log levels, torch's
    thread count) is put back afterwards."""
    path = REPO / "scripts" / script
    stdout, stderr = io.StringIO(), io.StringIO()
    records = logging.StreamHandler(stdout)  # where a run's ConsoleHandler writes
    records.setFormatter(logging.Formatter("%(levelname)s - %(name)s - %(message)s"))
    root, ours = logging.getLogger(), logging.getLogger("aduni_hf")
    levels = (ours.level, transformers.logging.get_verbosity(), datasets.logging.get_verbosity())
    threads = torch.get_num_threads()
    root.addHandler(records)
    try:
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
    finally:
        root.removeHandler(records)
        ours.setLevel(levels[0])
        transformers.logging.set_verbosity(levels[1])
        datasets.logging.set_verbosity(levels[2])
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess([script, *args], status, stdout.getvalue(), stderr.getvalue())
