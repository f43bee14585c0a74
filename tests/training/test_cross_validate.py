"""scripts/cross_validate.py: one fresh model per fold, a summary in the paper's format, resuming, no mixing."""

import json
import math
import statistics
from pathlib import Path

import pytest

from aduni_hf.evaluation.cv_summary import mean_std, paper_format, results_markdown, summarise_folds
from aduni_hf.recipes.cross_validation import CV_MARKDOWN_NAME, CV_RECIPE_NAME, parse_folds
from tests.script_runs import run_script_here
from tests.tiny_run import TINY_RUN
from tests.training.test_cli import DEMO

ROOT = Path(__file__).resolve().parents[2]
# Folds, their summary and resuming are tested, not the encoder: timm's test network (TINY_RUN), 2 steps a fold.
QUICK = [*TINY_RUN, "--max_steps", "2", "--per_device_train_batch_size", "16", "--eval_strategy", "no",
         "--logging_strategy", "steps", "--logging_steps", "1", "--torch_threads", "1"]  # fmt: skip


def cross_validate(*flags, check=True):
    """scripts/cross_validate.py in this process (its process is tested in test_resume_from_hub.py)."""
    result = run_script_here("cross_validate.py", str(DEMO), *QUICK, *flags, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(result.stdout[-3000:] + result.stderr[-3000:])
    return result


def test_parse_folds():
    assert parse_folds(None, 5) == [0, 1, 2, 3, 4]
    assert parse_folds("3,1", 5) == [3, 1]
    for bad in ("5", "1,1", "a", "-1"):
        with pytest.raises(ValueError, match="folds="):
            parse_folds(bad, 5)


def test_mean_std_and_the_papers_format():
    values = [0.88, 0.874, 0.879, 0.871, 0.886]
    mean, std = mean_std(values)
    assert mean == pytest.approx(statistics.mean(values)) and std == pytest.approx(statistics.stdev(values))
    assert mean_std([0.5]) == (0.5, 0.0)
    assert paper_format(0.8781, 0.00436) == "0.878 ± 4.36e-03"


def test_summary_of_folds_and_its_markdown():
    names = ["a", "b"]
    folds = {
        0: {
            "accuracy": 0.9,
            "macro_f1": 0.8,
            "balanced_accuracy": 0.7,
            "f1": {"a": 1.0, "b": 0.6},
            "seconds": 60,
        },
        2: {
            "accuracy": 0.7,
            "macro_f1": 0.6,
            "balanced_accuracy": 0.5,
            "f1": {"a": 0.8, "b": 0.4},
            "seconds": 120,
        },
    }
    summary = summarise_folds(folds, names)
    assert summary["mean"]["accuracy"] == pytest.approx(0.8)
    assert summary["std"]["accuracy"] == pytest.approx(math.sqrt(0.02))  # sample std of 0.9 and 0.7
    assert summary["mean"]["f1"]["b"] == pytest.approx(0.5)
    markdown = results_markdown(
        {"title": "t", "folds": {str(k): v for k, v in folds.items()}, "class_names": names, "num_folds": 5,
         "selection": "the model after the last epoch", **summary}
    )  # fmt: skip
    assert (
        "0.800 ± 1.41e-01" in markdown and "| fold 2 | 0.7000 |" in markdown and "3.0 min in all" in markdown
    )


@pytest.mark.slow
def test_two_folds_resume_and_refuse_another_recipe(tmp_path):
    out = tmp_path / "cv"
    saving = ["--save_strategy", "steps", "--save_steps", "1", "--save_total_limit", "1"]
    first = cross_validate("--folds", "0,1", "--output_dir", str(out), *saving)
    assert (
        "fold 0: accuracy" in first.stderr + first.stdout
        and "fold 1: accuracy" in first.stderr + first.stdout
    )
    results = json.loads((out / "cv_results.json").read_text())
    assert sorted(results["folds"]) == ["0", "1"] and results["method"] == "aduni"
    for fold in ("0", "1"):
        test = json.loads((out / f"fold_{fold}" / "test_results.json").read_text())
        assert results["folds"][fold]["macro_f1"] == test["test_macro_f1"]
        assert (
            json.loads((out / f"fold_{fold}" / "all_results.json").read_text())["test_accuracy"]
            == test["test_accuracy"]
        )
    accuracies = [results["folds"][k]["accuracy"] for k in ("0", "1")]
    assert results["mean"]["accuracy"] == pytest.approx(sum(accuracies) / 2)
    assert results["std"]["accuracy"] == pytest.approx(statistics.stdev(accuracies))
    markdown = (out / CV_MARKDOWN_NAME).read_text()
    assert paper_format(results["mean"]["macro_f1"], results["std"]["macro_f1"]) in markdown

    # A fold killed after its checkpoint and before its test results resumes; the finished fold is not retrained.
    (out / "fold_1" / "test_results.json").unlink()
    weights_0 = (out / "fold_0" / "model.safetensors").stat().st_mtime_ns
    again = cross_validate("--folds", "0,1", "--output_dir", str(out), *saving)
    log = again.stdout + again.stderr
    assert "fold 0: finished earlier" in log and "fold 1: accuracy" in log
    assert "resuming the interrupted run" in log and "checkpoint-2" in log
    assert (out / "fold_0" / "model.safetensors").stat().st_mtime_ns == weights_0

    refused = cross_validate("--folds", "2", "--output_dir", str(out), "--learning_rate", "0.2", check=False)
    assert refused.returncode != 0
    assert "learning_rate: 0.1 in the earlier folds, 0.2 now" in refused.stderr
    assert (
        not (out / "fold_2").exists()
        and json.loads((out / CV_RECIPE_NAME).read_text())["learning_rate"] == 0.1
    )
