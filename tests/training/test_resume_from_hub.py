"""A run killed on one machine resumes on another from the Hub: real `scripts/train.py` and
`scripts/cross_validate.py` processes push their checkpoints (`hub_strategy checkpoint`) to the offline Hub of
fake_hub.py (`fake_hub_run.py` puts it in place), are killed with SIGKILL after a checkpoint is on the Hub, and a
second run in an empty output_dir ("another machine": nothing local is shared, only the Hub's folder) resumes with
`--resume_from_checkpoint hub:...`. It finishes with the weights and test metrics of an uninterrupted run.

Only the killed runs are processes; the second machine and the uninterrupted reference run the same scripts in this
process (`run_script_here`), the second one with the same offline Hub on the same folder.

The run: the demo recipe with timm's test network at 16x16 (TINY_RUN: the mechanics are tested, not the encoder),
8 steps of 16 images (inside the first epoch of 32 steps), a validation and a checkpoint every 2 steps, so the
resumed run also carries the best validation model chosen before the kill.
"""

import json
import sys
from pathlib import Path

import pytest

from tests.script_runs import run_script_here
from tests.tiny_run import TINY_RUN
from tests.training.fake_hub import STORE_ENV, FakeHubApi, install
from tests.training.test_push_to_hub import check_every_push
from tests.training.test_resume import kill_when, max_weight_difference, results_of

REPO = Path(__file__).resolve().parents[2]
RECIPE = [
    "configs/demo.yaml",
    *TINY_RUN,
    "--max_steps", "8",
    "--per_device_train_batch_size", "16",
    "--eval_strategy", "steps",
    "--eval_steps", "2",
    "--save_strategy", "steps",
    "--save_steps", "2",
    "--figures", "false",
    "--torch_threads", "1",  # many times faster than 2 threads on a busy 2-core machine
]  # fmt: skip
COMPARED = ("test_accuracy", "test_macro_f1", "test_best_val_accuracy", "test_best_val_epoch")

pytestmark = pytest.mark.slow


def command(script: str, output_dir: Path, *extra: str) -> list[str]:
    """The command of a process with the offline Hub in place (the one that is killed)."""
    return [sys.executable, "tests/training/fake_hub_run.py", f"scripts/{script}", *RECIPE,
            "--output_dir", str(output_dir), *extra]  # fmt: skip


@pytest.fixture
def store(tmp_path, monkeypatch) -> Path:
    """The offline Hub's folder, shared by the killed process (it inherits FAKE_HUB_DIR) and the runs in this
    process (the same fake, installed on the same folder)."""
    monkeypatch.setenv(STORE_ENV, str(tmp_path / "hub"))
    install(monkeypatch.setattr, tmp_path / "hub")
    return tmp_path / "hub"


def run(script: str, output_dir: Path, *extra: str) -> str:
    """scripts/<script> in this process; its output."""
    result = run_script_here(script, *RECIPE, "--output_dir", str(output_dir), *extra, cwd=REPO)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def pushed_step(store: Path, repo_id: str, folder: str) -> int:
    """The step of the checkpoint in `folder` of the repository as it is now (0: none yet)."""
    FakeHubApi.store = store
    state = FakeHubApi.files(repo_id).get(f"{folder}/trainer_state.json")
    return json.loads(state.read_text())["global_step"] if state is not None else 0


def test_a_run_killed_on_one_machine_resumes_on_another_from_the_hub(tmp_path, store):
    push = ["--push_to_hub", "true", "--hub_model_id", "someone/long-run",
                                     "--hub_strategy", "checkpoint"]  # fmt: skip
    reference = tmp_path / "reference"
    run("train.py", reference)

    machine_a = tmp_path / "machine_a" / "run"
    kill_when(command("train.py", machine_a, *push),
              lambda: pushed_step(store, "someone/long-run", "last-checkpoint") >= 4)  # fmt: skip
    pushed = pushed_step(store, "someone/long-run", "last-checkpoint")
    assert 4 <= pushed < 8 and not (machine_a / "test_results.json").exists()
    readme = FakeHubApi.files("someone/long-run")["README.md"].read_text()
    assert "training in progress" in readme  # our card, pushed with the checkpoints

    machine_b = tmp_path / "machine_b" / "run"  # nothing of machine A: only the Hub
    log = run("train.py", machine_b, *push, "--resume_from_checkpoint", "hub:someone/long-run/last-checkpoint",
              "--log_level", "info")  # fmt: skip
    assert f"downloaded hub:someone/long-run/last-checkpoint into {machine_b / f'checkpoint-{pushed}'}" in log
    assert f"Resuming training from checkpoint with epoch 0 and global step {pushed}" in log
    difference = max_weight_difference(reference, machine_b)
    print(f"resumed from the Hub at step {pushed} of 8: max |weight difference| = {difference:.3g}")
    assert difference <= 1e-6
    for key in COMPARED:
        assert results_of(machine_b)[key] == results_of(reference)[key], key
    final = FakeHubApi.files("someone/long-run")
    assert json.loads(final["test_results.json"].read_text()) == results_of(machine_b)  # machine B pushed the end
    check_every_push("someone/long-run")  # every README ours, no lock file, no token


def test_a_cross_validation_killed_mid_fold_resumes_on_another_machine_from_the_hub(tmp_path, store):
    push = ["--push_to_hub", "true", "--hub_model_id", "someone/cv",
                                     "--hub_strategy", "checkpoint", "--folds", "0,1"]  # fmt: skip
    reference = tmp_path / "reference"
    run("cross_validate.py", reference, "--folds", "0,1")

    machine_a = tmp_path / "machine_a" / "cv"
    kill_when(command("cross_validate.py", machine_a, *push),
              lambda: pushed_step(store, "someone/cv", "fold_1/last-checkpoint") >= 4)  # fmt: skip
    files = FakeHubApi.files("someone/cv")
    assert "fold_0/test_results.json" in files and "fold_0/last-checkpoint/trainer_state.json" in files
    assert "fold_1/test_results.json" not in files and "cv_recipe.json" in files
    pushed = pushed_step(store, "someone/cv", "fold_1/last-checkpoint")

    machine_b = tmp_path / "machine_b" / "cv"
    log = run("cross_validate.py", machine_b, *push, "--resume_from_checkpoint", "hub:someone/cv",
              "--log_level", "info")  # fmt: skip  (info: the Trainer's line on the resumed step)
    assert "fold 0: finished on the Hub" in log and "fold 0: finished earlier" in log  # downloaded, not retrained
    assert f"Resuming training from checkpoint with epoch 0 and global step {pushed}" in log
    for fold in (0, 1):
        directory = f"fold_{fold}"
        difference = max_weight_difference(reference / directory, machine_b / directory)
        print(f"fold {fold}: max |weight difference| = {difference:.3g}")
        assert difference <= 1e-6
        for key in COMPARED:
            assert results_of(machine_b / directory)[key] == results_of(reference / directory)[key], (fold, key)
    ours = json.loads((machine_b / "cv_results.json").read_text())
    theirs = json.loads((reference / "cv_results.json").read_text())
    assert ours["mean"] == theirs["mean"] and ours["std"] == theirs["std"]
    assert not list((machine_b / "fold_0").glob("checkpoint-*"))  # a finished fold comes without its checkpoints
    commits = check_every_push("someone/cv")  # every README ours (the experiment's and each fold's)
    assert {"fold_0/README.md", "fold_1/README.md", "README.md"} <= {name for c in commits for name in c["files"]}
