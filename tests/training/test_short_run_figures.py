"""A finished training is not failed by a figure: a run too short to log a learning rate (issue 18, case 9) ends
with exit code 0, its results and card written, and the schedule figure skipped with a note saying why."""

import json

from tests.script_runs import run_script_here
from tests.training.test_cli import DEMO, REPO

# The demo recipe at 16x16 with batch 16: 2 optimiser steps, and a log only every 5 steps, so none is logged.
TOO_SHORT_TO_LOG = ["--max_steps", "2", "--logging_strategy", "steps", "--logging_steps", "5", "--image_size", "16",
                    "--per_device_train_batch_size", "16", "--eval_strategy", "no"]  # fmt: skip


def test_a_run_too_short_to_log_a_learning_rate_finishes_without_the_schedule_figure(tmp_path):
    output_dir = tmp_path / "short"
    result = run_script_here("train.py", str(DEMO), *TOO_SHORT_TO_LOG, "--output_dir", str(output_dir), cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    assert not any("learning_rate" in entry for entry in history)  # the case: nothing to draw
    assert (output_dir / "test_results.json").is_file()  # the run counts as finished
    output = result.stdout + result.stderr
    assert "schedules.png skipped: the log history has no learning_rate entries" in output
    assert "logging_steps=5" in output
    figures = sorted(p.name for p in (output_dir / "figures").iterdir())
    # The other figures are drawn, and no staging file is left.
    assert figures == ["confusion_matrix.png", "tsne_test_features.png"]
    card = (output_dir / "README.md").read_text()
    assert "figures/confusion_matrix.png" in card and "schedules.png" not in card
