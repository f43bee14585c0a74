"""Several processes (gloo on CPU): AduC contrasts against the global batch, and training runs end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.script_runs import run_script_here
from tests.tiny_run import TINY_RUN

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_aduc_on_two_processes_equals_one_process_on_the_global_batch(tmp_path):
    result_file = tmp_path / "result.txt"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               str(REPO / "tests" / "ddp_aduc_worker.py"), str(result_file)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result_file.read_text() == "ok"


def _launch_two_processes(script: str, port: int, *arguments: str) -> subprocess.CompletedProcess:
    """`accelerate launch --multi_gpu --num_processes 2 scripts/<script> ...`: two gloo processes on this CPU."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(port), str(REPO / "scripts" / script), *arguments]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)


@pytest.mark.slow
def test_demo_trains_on_two_processes(tmp_path):
    """The demo recipe with the tiny encoder (the processes are tested, not the model)."""
    output_dir = tmp_path / "out"
    result = _launch_two_processes(
        "train.py", 29518, str(REPO / "configs" / "demo.yaml"), *TINY_RUN, "--num_train_epochs", "1",
        "--output_dir", str(output_dir), "--log_level", "info",  # the Trainer's "Running training" names the batch
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((output_dir / "test_results.json").read_text())
    assert 0 <= results["test_macro_f1"] <= 1
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    assert [log["alpha"] for log in history if "loss" in log] == [1.0]  # the schedule reached the logs
    assert "alpha 1" in result.stdout  # and the console line of the main process
    # one training over both processes (on CPU accelerate needs use_cpu for MULTI_CPU, set by our arguments)
    assert (
        "Total train batch size (w. parallel, distributed & accumulation) = 128"
        in result.stdout + result.stderr
    )


@pytest.mark.slow
def test_cross_validation_runs_under_accelerate_launch_with_two_processes(tmp_path):
    output_dir = tmp_path / "cv"
    result = _launch_two_processes(
        "cross_validate.py", 29519, str(REPO / "configs" / "demo.yaml"), "--folds", "0,1", "--max_steps", "2",
        *TINY_RUN, "--eval_strategy", "no", "--output_dir", str(output_dir), "--log_level", "info",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((output_dir / "cv_results.json").read_text())
    assert sorted(results["folds"]) == ["0", "1"] and results["recipe"]["per_device_train_batch_size"] == 64
    for fold in (0, 1):
        record = json.loads((output_dir / f"fold_{fold}" / "test_results.json").read_text())
        assert results["folds"][str(fold)]["accuracy"] == record["test_accuracy"]
    assert (output_dir / "README.md").is_file() and (output_dir / "figures" / "per_class_f1.png").is_file()
    assert result.stdout.count("2 folds: accuracy") == 1  # the summary comes from the main process only
    assert (
        "Total train batch size (w. parallel, distributed & accumulation) = 128"
        in result.stdout + result.stderr
    )


def _train(output_dir, processes, per_device, *flags):
    """3 steps of the demo recipe with the tiny encoder (BatchNorm throughout, as resnet18): torchrun for two
    processes, the script in this process for one (the process is not what is compared)."""
    common = [str(REPO / "configs" / "demo.yaml"), *TINY_RUN, "--per_device_train_batch_size", str(per_device),
              "--max_steps", "3", "--classifier_dropout", "0", "--eval_strategy", "no", "--figures", "false",
              "--output_dir", str(output_dir), *flags]  # fmt: skip
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                    "--master_port", "29521", str(REPO / "scripts" / "train.py")]  # fmt: skip
        result = subprocess.run([*launcher, *common], capture_output=True, text=True, timeout=600, cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    else:
        result = run_script_here("train.py", *common, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    from safetensors.torch import load_file

    return load_file(str(output_dir / "model.safetensors"))


def _largest_relative_difference(a, b):
    return max(
        float((a[k] - b[k]).norm() / b[k].norm().clamp_min(1e-12)) for k in b if b[k].is_floating_point()
    )


@pytest.mark.slow
def test_two_processes_train_to_the_weights_of_one_with_frozen_batch_norm(tmp_path):
    """torchrun with 2 x 8 images against one process with 16, 3 steps: with BatchNorm frozen and no dropout the
    global contrastive batch, the sampler shards and the gradient averaging make them one computation.

    Measured with the tiny encoder: 1.2e-7 (2.5e-7 chunked, 1.3e-7 shuffled) apart with BatchNorm frozen, 1.4
    with BatchNorm per process; resnet18 gave 6e-7 (1.6e-5 shuffled)."""
    exact = ("--freeze_bn", "true", "--batch_shuffle", "false")  # the sampler's order
    one = _train(tmp_path / "one", 1, 16, *exact)
    two = _train(tmp_path / "two", 2, 8, *exact)
    assert _largest_relative_difference(two, one) <= 1e-5
    # gradient caching composes with the processes: chunks of 4 rows, synchronised once per step
    chunked = _train(tmp_path / "two_chunked", 2, 8, *exact, "--contrast_chunk_size", "4")
    assert _largest_relative_difference(chunked, one) <= 1e-5
    # With the batch shuffle (the default) resnet18's runs were measured 1.6e-5 apart: bounded here, not yet
    # explained (the shuffled order is the same in both; see the issue-18 note)
    shuffled_one = _train(tmp_path / "one_shuffled", 1, 16, "--freeze_bn", "true")
    shuffled_two = _train(tmp_path / "two_shuffled", 2, 8, "--freeze_bn", "true")
    assert _largest_relative_difference(shuffled_two, shuffled_one) <= 1e-4
    # the control: with BatchNorm per process (8 images each) the two runs differ
    two_bn = _train(tmp_path / "two_bn", 2, 8)
    one_bn = _train(tmp_path / "one_bn", 1, 16)
    assert _largest_relative_difference(two_bn, one_bn) > 1e-4
