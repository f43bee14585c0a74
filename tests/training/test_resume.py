"""Never lose a run: real `scripts/train.py` processes killed with SIGKILL, mid-epoch and in the middle of
writing a checkpoint, then restarted with the same command, finish with the weights and test metrics of an
uninterrupted run; a finished run is not overwritten; a recipe that changes the result does not resume.

The run: the demo recipe with timm's test network at 16x16 (TINY_RUN: the mechanics are tested, not the encoder)
for 2 epochs of 8 steps, a checkpoint every 3 steps (3, 6, 9, 12, 15), the last two kept. Step 9 is the first step
of epoch 2 done; steps 10-16 remain. Only the killed runs are processes; the uninterrupted run, the restarts and
the refusals run scripts/train.py in this process (`run_script_here`: the same code path, without the seconds a new
interpreter takes to import torch).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from aduni_hf.training.checkpoints import checkpoint_problems
from tests.script_runs import run_script_here
from tests.tiny_run import TINY_RUN

pytestmark = pytest.mark.slow  # end-to-end runs (a training run in a fixture)


REPO = Path(__file__).resolve().parents[2]
SECRET = "hf_NeverWriteThisTokenAnywhere0123456789"  # a fake Hub token: it must not reach any file or log
RECIPE = [
    "configs/demo.yaml",
    *TINY_RUN,
    "--num_train_epochs", "2",
    "--eval_strategy", "no",
    "--save_strategy", "steps",
    "--save_steps", "3",
    "--save_total_limit", "2",
    "--hub_token", SECRET,
    "--torch_threads", "1",  # many times faster than 2 threads on a busy 2-core machine
]  # fmt: skip


def train_arguments(output_dir: Path, workers: int = 0, *extra: str) -> list[str]:
    return [*RECIPE, "--dataloader_num_workers", str(workers), "--output_dir", str(output_dir), *extra]


def train_command(output_dir: Path, workers: int = 0, *extra: str) -> list[str]:
    """The command of a training process (the one that is killed)."""
    return [sys.executable, "scripts/train.py", *train_arguments(output_dir, workers, *extra)]


def run(arguments: list[str], expect_ok: bool = True) -> subprocess.CompletedProcess:
    """scripts/train.py with `arguments`, in this process."""
    result = run_script_here("train.py", *arguments, cwd=REPO)
    if expect_ok:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def kill_when(command: list[str], ready) -> None:
    """Start `command` and SIGKILL it as soon as `ready()` holds (polled every 10 ms). Only the main process is
    killed: its DataLoader workers live on, orphaned, for the seconds they take to notice, and the restart, at once,
    must not find the run folder locked by them."""
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not ready():
        assert process.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL


def kill_while_saving(suffix: str, command: list[str]) -> None:
    """Run `command` under tests/training/kill_during_save.py: SIGKILL half-way through writing `suffix`."""
    killed = subprocess.run(
        [sys.executable, "tests/training/kill_during_save.py", suffix, *command[1:]],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]


def max_weight_difference(run_a: Path, run_b: Path) -> float:
    a, b = load_file(run_a / "model.safetensors"), load_file(run_b / "model.safetensors")
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def results_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "test_results.json").read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, and what it printed."""
    output_dir = tmp_path_factory.mktemp("reference") / "run"
    result = run(train_arguments(output_dir))
    return output_dir, result.stdout + result.stderr


@pytest.mark.parametrize("workers", [0, 2])
def test_sigkill_mid_epoch_then_the_same_command_resumes_exactly(reference, tmp_path, workers):
    reference_dir, _ = reference
    output_dir = tmp_path / "run"
    arguments = train_arguments(output_dir, workers)
    kill_when(train_command(output_dir, workers), lambda: not checkpoint_problems(output_dir / "checkpoint-9"))
    assert not (output_dir / "test_results.json").exists()  # killed: nothing looks finished

    resumed = run([*arguments, "--log_level", "info"])  # the Trainer's own account of where it resumes, too
    log = resumed.stdout + resumed.stderr
    assert "resuming the interrupted run" in log
    skipped = [line for line in log.splitlines() if "Fast-forwarding the dataloader past 1 epochs and" in line]
    assert skipped and " 0 batches" not in skipped[0], skipped  # resumed inside epoch 2

    difference = max_weight_difference(reference_dir, output_dir)
    print(f"workers={workers}: max |weight difference| after kill and resume = {difference:.3g}")
    assert difference <= 1e-6
    assert results_of(output_dir)["test_accuracy"] == results_of(reference_dir)["test_accuracy"]
    assert results_of(output_dir)["test_macro_f1"] == results_of(reference_dir)["test_macro_f1"]


def test_kill_while_a_checkpoint_is_written_leaves_the_previous_one(reference, tmp_path):
    reference_dir, _ = reference
    output_dir = tmp_path / "run"
    kill_while_saving("checkpoint-9/optimizer.pt", train_command(output_dir))
    cut_short = output_dir / "checkpoint-9"
    assert (cut_short / "model.safetensors").is_file() and (cut_short / "aduni_run.json").is_file()
    assert not (cut_short / "trainer_state.json").exists()  # the Trainer's last file never came: incomplete
    previous = output_dir / "checkpoint-6"
    torch.load(previous / "optimizer.pt", weights_only=True)  # loadable, and not rotated away meanwhile
    assert load_file(previous / "model.safetensors")

    resumed = run(train_arguments(output_dir))  # the same command again
    log = resumed.stdout + resumed.stderr
    assert "removing" in log and "checkpoint-9, a checkpoint whose writing was interrupted" in log
    assert "from checkpoint-6" in log
    assert max_weight_difference(reference_dir, output_dir) <= 1e-6
    assert results_of(output_dir)["test_macro_f1"] == results_of(reference_dir)["test_macro_f1"]


def interrupted_copy(reference_dir: Path, output_dir: Path, step: int = 15) -> None:
    """`output_dir` as a run killed after checkpoint `step` of the reference: that checkpoint, nothing else."""
    output_dir.mkdir()
    subprocess.run(["cp", "-r", str(reference_dir / f"checkpoint-{step}"), str(output_dir)], check=True)


def test_kill_while_the_final_model_is_written_never_looks_finished(reference, tmp_path):
    reference_dir, _ = reference
    output_dir = tmp_path / "run"
    interrupted_copy(reference_dir, output_dir)
    kill_while_saving("run/training_args.bin", train_command(output_dir))
    assert (output_dir / "model.safetensors").is_file() and (output_dir / "checkpoint-16").is_dir()
    assert not (output_dir / "test_results.json").exists()  # half-written outputs do not look finished

    finished = run(train_arguments(output_dir))  # resumes at the end of training: saves, evaluates, finishes
    assert "from checkpoint-16" in finished.stdout + finished.stderr
    assert max_weight_difference(reference_dir, output_dir) <= 1e-6
    assert results_of(output_dir)["test_macro_f1"] == results_of(reference_dir)["test_macro_f1"]


def test_a_longer_training_resumes_from_an_explicit_checkpoint_and_says_so(reference, tmp_path):
    reference_dir, _ = reference
    output_dir = tmp_path / "run"
    interrupted_copy(reference_dir, output_dir)
    checkpoint = str(output_dir / "checkpoint-15")
    result = run(train_arguments(output_dir, 0, "--num_train_epochs", "3", "--resume_from_checkpoint", checkpoint))
    assert "resuming checkpoint-15: num_train_epochs changed from 2.0 to 3.0" in result.stdout + result.stderr
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 24


def test_checkpoints_are_complete_safetensors_and_bounded(reference):
    output_dir, _ = reference
    checkpoints = sorted(p.name for p in output_dir.glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-15", "checkpoint-16"]  # save_total_limit 2 (16: the end of training)
    for name in checkpoints:
        files = {p.name for p in (output_dir / name).iterdir()}
        assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json",
                "aduni_run.json"} <= files  # fmt: skip
        assert not any(f.endswith((".bin", ".pt", ".pth")) and "model" in f for f in files)
    every_file = [p for p in output_dir.rglob("*") if p.is_file()]
    assert not [p for p in every_file if p.name.startswith("pytorch_model")]
    assert not list(output_dir.glob("tmp-*"))


def test_the_hub_token_reaches_no_file_and_no_log(reference):
    output_dir, log = reference
    assert SECRET not in log
    leaks = [str(p) for p in output_dir.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not leaks
    assert (output_dir / "training_args.bin").is_file()  # the Trainer's pickle is there, without the token


def test_a_finished_run_is_refused_unless_overwrite_is_asked(reference, tmp_path):
    reference_dir, _ = reference
    before = (reference_dir / "model.safetensors").stat().st_mtime_ns
    refused = run(train_arguments(reference_dir), expect_ok=False)
    assert refused.returncode == 1
    assert "holds a finished run" in refused.stderr and "--overwrite_output_dir true" in refused.stderr
    assert (reference_dir / "model.safetensors").stat().st_mtime_ns == before


def test_a_resume_with_another_recipe_is_refused_naming_the_fields(reference, tmp_path):
    reference_dir, _ = reference
    output_dir = tmp_path / "run"
    interrupted_copy(reference_dir, output_dir)
    refused = run(
        train_arguments(output_dir, 0, "--test_fold", "1", "--seed", "3", "--per_device_train_batch_size", "32",
                      "--image_size", "24", "--method", "ce"),  # fmt: skip
        expect_ok=False,
    )
    assert refused.returncode == 1, refused.stderr[-2000:]
    message = refused.stderr
    assert "cannot resume from" in message and "checkpoint-15" in message
    for field in ("test_fold: 0 in the checkpoint, 1 now", "seed: 0 in the checkpoint, 3 now",
                  "per_device_train_batch_size: 64 in the checkpoint, 32 now",
                  "image_size: 16 in the checkpoint, 24 now", "method: 'aduni' in the checkpoint, 'ce' now"):
        assert field in message, message
    assert not (output_dir / "test_results.json").exists()


def test_overwrite_output_dir_trains_a_fresh_run(reference, tmp_path):
    reference_dir, _ = reference
    output_dir = tmp_path / "run"
    subprocess.run(["cp", "-r", str(reference_dir), str(output_dir)], check=True)
    (output_dir / "checkpoint-15" / "model.safetensors").write_bytes(b"")  # would break a resume
    result = run(train_arguments(output_dir, 0, "--overwrite_output_dir", "true", "--num_train_epochs", "1",
                               "--log_level", "info"))  # fmt: skip  (info: the Trainer would say it resumes)
    log = result.stdout + result.stderr
    assert "overwrite_output_dir: a fresh run; removed" in log
    assert "***** Running training *****" in log and "Resuming training" not in log
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    assert sorted(p.name for p in output_dir.glob("checkpoint-*")) == ["checkpoint-6", "checkpoint-8"]
    assert os.path.getsize(output_dir / "checkpoint-6" / "model.safetensors") > 0
