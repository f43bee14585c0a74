"""A run never reports a wrong result as finished: whole checkpoints, one writer per run folder, the guard on the
weights before anything is saved, a run folder that is a run's, recipe values that can train, a full disk named.

The checkpoints are a real AdUniTrainer's (tiny digits run, trainer_helpers.py), damaged as a user's disk or
hand would damage them; the lock is held by a real second process.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from transformers import TrainerCallback

from aduni_hf.recipes import ARGUMENT_CLASSES, RecipeError, parse_recipe
from aduni_hf.recipes.run_folder import RESUMABLE_FIELDS, RunFolderError, prepare_output_dir
from aduni_hf.recipes.run_lock import LOCK_NAME, run_folder_lock
from aduni_hf.training import CheckpointWriteError, NonFiniteTrainingError
from aduni_hf.training.checkpoints import FILES_KEY, RUN_RECORD_NAME, checkpoint_files, checkpoint_problems
from aduni_hf.training.guard import FAILURE_NAME
from tests.script_runs import run_script_here
from tests.training.trainer_helpers import digits_splits, make_trainer

pytestmark = pytest.mark.slow  # end-to-end runs (a training run in a fixture)


ROOT = Path(__file__).resolve().parents[2]
REMOTE_CODE = {"configuration_aduni.py", "modeling_aduni.py"}  # copied beside config.json, not read on resume


@pytest.fixture(scope="module")
def splits():
    return digits_splits()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, splits) -> Path:
    """A run folder with checkpoint-2, -4 and -6 of a real training (2 epochs of 3 steps)."""
    folder = tmp_path_factory.mktemp("trained")
    make_trainer(folder, splits, epochs=2, save_strategy="steps", save_steps=2).train()
    return folder / "run"


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A copy of the trained run folder to damage."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


# ---- whole checkpoints ------------------------------------------------------------------------------------------
def test_a_checkpoint_lists_every_file_the_trainer_writes(trained):
    checkpoint = trained / "checkpoint-6"
    listed = json.loads((checkpoint / RUN_RECORD_NAME).read_text())[FILES_KEY]
    assert set(listed) == {p.name for p in checkpoint.iterdir()} - REMOTE_CODE
    assert {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= set(listed)
    assert checkpoint_problems(checkpoint) == []


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng_state.pth", "model.safetensors"])
def test_a_checkpoint_without_one_of_its_files_is_refused_naming_it_and_the_previous_one(run, name):
    (run / "checkpoint-6" / name).unlink()
    with pytest.raises(RunFolderError) as error:
        prepare_output_dir(run, None, overwrite=False)
    message = str(error.value)
    assert f"cannot resume from {run / 'checkpoint-6'}: no {name}." in message
    assert f"--resume_from_checkpoint {run / 'checkpoint-4'}" in message
    assert (run / "checkpoint-6").is_dir()  # refused, not removed: the user decides
    assert prepare_output_dir(run, str(run / "checkpoint-4"), overwrite=False) == run / "checkpoint-4"


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt", "aduni_run.json"])
def test_a_checkpoint_file_cut_short_is_refused_naming_it(run, name):
    path = run / "checkpoint-6" / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(RunFolderError, match=rf"checkpoint-6: .*{name.replace('.', '[.]')} is unreadable|no readable"):
        prepare_output_dir(run, None, overwrite=False)
    assert "checkpoint-4" in str(pytest.raises(RunFolderError, prepare_output_dir, run, None, False).value)


def test_a_checkpoint_without_its_trainer_state_was_cut_short_and_the_previous_one_resumes(run):
    (run / "checkpoint-6" / "trainer_state.json").unlink()  # the Trainer's last file: the save was interrupted
    assert prepare_output_dir(run, None, overwrite=False) == run / "checkpoint-4"
    assert not (run / "checkpoint-6").exists()


def test_a_save_only_model_checkpoint_is_not_resumed_and_the_field_is_part_of_the_result(run):
    checkpoint = run / "checkpoint-6"
    record = json.loads((checkpoint / RUN_RECORD_NAME).read_text())
    record["fields"] = {"save_only_model": True}
    record[FILES_KEY] = checkpoint_files(True, 1, method_state=False)
    (checkpoint / RUN_RECORD_NAME).write_text(json.dumps(record))
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (checkpoint / name).unlink()
    with pytest.raises(RunFolderError, match="saved with save_only_model true.*cannot continue where it stopped"):
        prepare_output_dir(run, None, overwrite=False)
    assert "save_only_model" not in RESUMABLE_FIELDS


# ---- the guard on the weights ---------------------------------------------------------------------------------
class OverflowRunningVariance(TrainerCallback):
    """After optimiser step `step`, a BatchNorm running variance overflows: what a diverging forward pass does
    to the statistics while the loss and the gradient stay finite."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            model.aduni.backbone.bn1.running_var[0] = float("inf")


def all_finite(path: Path) -> bool:
    return all(torch.isfinite(t).all() for t in safetensors.torch.load_file(str(path)).values())


def test_no_checkpoint_is_written_non_finite_and_the_guard_names_a_finite_one(tmp_path, splits):
    trainer = make_trainer(
        tmp_path, splits, epochs=1, save_strategy="steps", save_steps=1, callbacks=[OverflowRunningVariance(2)]
    )
    with pytest.raises(NonFiniteTrainingError) as error:
        trainer.train()
    message, run = str(error.value), tmp_path / "run"
    assert "non-finite weights (1 tensors: model.aduni.backbone.bn1.running_var)" in message
    assert "after optimiser step 2, before saving" in message
    assert f"the last good checkpoint is {run / 'checkpoint-1'}" in message
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1"]
    assert all_finite(run / "checkpoint-1" / "model.safetensors")
    assert json.loads((run / FAILURE_NAME).read_text())["last_checkpoint"] == str(run / "checkpoint-1")


def test_the_final_model_is_not_saved_non_finite(tmp_path, splits):
    trainer = make_trainer(tmp_path, splits, epochs=1, callbacks=[OverflowRunningVariance(3)])
    trainer.train()  # no checkpoint on the way
    with pytest.raises(NonFiniteTrainingError, match="non-finite weights"):
        trainer.save_model()
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_a_diverging_run_stops_with_every_checkpoint_finite(tmp_path, splits):
    """The issue's case: learning rate 1e6, a checkpoint at every step."""
    trainer = make_trainer(tmp_path, splits, epochs=2, save_strategy="steps", save_steps=1, learning_rate=1e6)
    with pytest.raises(NonFiniteTrainingError) as error:
        trainer.train()
    checkpoints = sorted((tmp_path / "run").glob("checkpoint-*"))
    assert all(all_finite(c / "model.safetensors") for c in checkpoints)
    named = json.loads((tmp_path / "run" / FAILURE_NAME).read_text())["last_checkpoint"]
    assert named is None or Path(named) in checkpoints, str(error.value)


# ---- one writer per run folder -----------------------------------------------------------------------------------
def hold_lock(folder: Path, fork: bool = False) -> subprocess.Popen:
    """A second process holding `folder`'s lock until it is killed (with `fork`: after forking a child that sleeps,
    as a DataLoader worker would). It imports run_lock.py alone: the packages' __init__ files (empty stand-ins
    here) would import torch and transformers, seconds it does not need."""
    code = (
        "import os, sys, time, types\n"
        "for name in ('aduni_hf', 'aduni_hf.recipes'):\n"
        "    sys.modules[name] = types.ModuleType(name)\n"
        f"    sys.modules[name].__path__ = [{str(ROOT)!r} + '/' + name.replace('.', '/')]\n"
        "from aduni_hf.recipes.run_lock import run_folder_lock\n"
        f"with run_folder_lock({str(folder)!r}):\n"
        "    print('held', flush=True)\n"
        f"    if {fork} and os.fork() == 0:\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "    time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holders_lock_is_taken_over(tmp_path, caplog):
    folder = tmp_path / "run"
    holder = hold_lock(folder)
    try:
        with pytest.raises(RunFolderError, match=rf"being written by another run: process {holder.pid} on "):
            with run_folder_lock(folder):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == holder.pid  # a SIGKILL leaves its name behind
    with run_folder_lock(folder):
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
        (folder / "run_config.yaml").write_text("")
    assert f"taking over the lock of {folder} from process {holder.pid}" in caplog.text
    assert sorted(p.name for p in folder.iterdir()) == ["run_config.yaml"]  # the lock file goes with its run
    with run_folder_lock(folder, main_process=False):  # the other processes of a run pass through
        assert not (folder / LOCK_NAME).exists()


def test_a_killed_holders_forked_children_do_not_keep_its_lock(tmp_path):
    """A run killed with SIGKILL leaves its DataLoader workers alive for seconds: the restart takes the lock at once."""
    folder = tmp_path / "run"
    holder = hold_lock(folder, fork=True)
    children = Path(f"/proc/{holder.pid}/task/{holder.pid}/children")
    deadline = time.monotonic() + 30
    while not children.read_text().split():  # the fork has happened
        assert time.monotonic() < deadline
        time.sleep(0.01)
    child = int(children.read_text().split()[0])
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    try:
        assert Path(f"/proc/{child}").exists()  # the orphan lives on, as a worker that has not noticed yet
        with run_folder_lock(folder):
            assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_run_that_writes_nothing_leaves_no_folder(tmp_path):
    with run_folder_lock(tmp_path / "new"):
        assert (tmp_path / "new" / LOCK_NAME).is_file()
    assert not (tmp_path / "new").exists()


def test_train_py_refuses_a_run_folder_another_run_is_writing(tmp_path):
    folder = tmp_path / "run"
    holder = hold_lock(folder)
    try:  # train.py in this process: the other writer is a real process
        done = run_script_here("train.py", str(ROOT / "configs" / "demo.yaml"), "--output_dir", str(folder),
                               "--use_cpu", "true", cwd=tmp_path)  # fmt: skip
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert done.returncode == 1
    assert f"error: output_dir='{folder}' is being written by another run: process {holder.pid}" in done.stderr
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # the holder's; nothing else written


# ---- a run folder is a run's ------------------------------------------------------------------------------------
def test_a_folder_that_holds_no_run_is_refused_and_left_as_it_was(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "README.md").write_text("my notes")
    (folder / "config.json").write_text("{}")
    for overwrite in (False, True):
        with pytest.raises(RunFolderError, match=r"is not empty and holds no training run \(README.md, config.json\)"):
            prepare_output_dir(folder, None, overwrite=overwrite)
    assert (folder / "README.md").read_text() == "my notes" and (folder / "config.json").read_text() == "{}"
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / ".gitkeep").write_text("")
    assert prepare_output_dir(hidden, None, overwrite=False) is None


# ---- recipe values that can train ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--num_train_epochs", "0"], "num_train_epochs must be > 0, got 0.0"),
        (["--num_train_epochs", "-1"], "num_train_epochs must be > 0, got -1.0"),
        (["--learning_rate", "0"], "learning_rate must be > 0, got 0.0"),
        (["--learning_rate", "-0.1"], "learning_rate must be > 0, got -0.1"),
        (["--per_device_train_batch_size", "0"], "per_device_train_batch_size must be >= 1, got 0"),
        (["--per_device_eval_batch_size", "-4"], "per_device_eval_batch_size must be >= 1, got -4"),
        (["--learning_rat", "0.05"], "unknown flag --learning_rat; did you mean --learning_rate"),
        (["--num_epochs", "1"], "unknown flag --num_epochs; did you mean --num_train_epochs"),
    ],
)
def test_recipe_values_that_cannot_train_are_refused_naming_the_field(flags, message):
    with pytest.raises(RecipeError) as error:
        parse_recipe(ARGUMENT_CLASSES, [str(ROOT / "configs" / "demo.yaml"), *flags])
    assert message in str(error.value)


def test_max_steps_trains_without_epochs():
    *_, training_args = parse_recipe(
        ARGUMENT_CLASSES, [str(ROOT / "configs" / "demo.yaml"), "--num_train_epochs", "0", "--max_steps", "3"]
    )
    assert training_args.max_steps == 3


# ---- a full disk ---------------------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 100 MiB tmpfs: one checkpoint of a resnet18 run (about 90 MiB with its optimiser) and no second."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=100m", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_during_a_save_says_so_and_leaves_the_previous_checkpoint(small_disk, splits):
    trainer = make_trainer(small_disk, splits, epochs=1, save_strategy="steps", save_steps=1, backbone="resnet18")
    started = time.monotonic()
    with pytest.raises(CheckpointWriteError) as error:
        trainer.train()
    message, run = str(error.value), small_disk / "run"
    assert message.startswith(f"no space left on device while writing checkpoint-2 in {run}"), message
    assert "The partial checkpoint-2 was removed" in message and "training resumes from checkpoint-1" in message
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1"]
    assert checkpoint_problems(run / "checkpoint-1") == []
    assert time.monotonic() - started < 300
