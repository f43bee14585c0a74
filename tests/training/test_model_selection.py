"""Honest model selection: the last-epoch model, the best on the inner validation split, and (labelled) the
released code's rule on the test fold, each tested once at the end of a real run."""

import json

import pytest
import safetensors.torch
import torch

from aduni_hf import AdUniForImageClassification
from aduni_hf.data import SingleViewDataset, build_dataset, collate_views, eval_transform, split_by_fold
from aduni_hf.recipes import ARGUMENT_CLASSES, parse_recipe, run_training
from tests.tiny_run import TINY_RUN
from tests.training.test_cli import DEMO

# The tiny encoder: the rules that choose the models are tested, not the encoder.
FLAGS = [*TINY_RUN, "--num_train_epochs", "4", "--warmup_epochs", "1", "--alpha_decay", "5",
         "--per_device_train_batch_size", "32", "--official_test_selection", "true"]  # fmt: skip


def _accuracy(model, dataset) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, collate_fn=collate_views)
    model.eval()
    correct = 0
    with torch.no_grad():
        for batch in loader:
            correct += int(
                (model(pixel_values=batch["pixel_values"]).logits.argmax(1) == batch["labels"]).sum()
            )
    return correct / len(dataset)


@pytest.mark.slow
def test_the_reported_models_are_chosen_by_their_rules_and_tested_once(tmp_path):
    output_dir = tmp_path / "run"
    arguments = parse_recipe(ARGUMENT_CLASSES, [str(DEMO), *FLAGS, "--output_dir", str(output_dir)])
    metrics = run_training(*arguments)
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]

    # best validation: the first epoch with the highest validation macro-F1 (strictly better replaces)
    evals = [entry for entry in history if "eval_macro_f1" in entry]
    assert len(evals) == 4
    best = max(evals, key=lambda entry: entry["eval_macro_f1"])  # max keeps the first of equal values
    chosen = json.loads((output_dir / "best_validation.json").read_text())
    assert chosen["value"] == best["eval_macro_f1"] and chosen["epoch"] == best["epoch"]
    assert metrics["test_best_val_epoch"] == best["epoch"]

    # the released code's rule: the last epoch at which test accuracy AND test macro-F1 both improved
    tests = [entry for entry in history if "test_every_epoch_accuracy" in entry]
    assert len(tests) == 4
    best_acc = best_f1 = -1.0
    expected_epoch = None
    for entry in tests:
        if entry["test_every_epoch_accuracy"] > best_acc and entry["test_every_epoch_macro_f1"] > best_f1:
            best_acc, best_f1 = entry["test_every_epoch_accuracy"], entry["test_every_epoch_macro_f1"]
            expected_epoch = entry["epoch"]
    assert metrics["test_official_selection_epoch"] == expected_epoch
    assert metrics["test_official_selection_accuracy"] == best_acc

    # each chosen model's test accuracy is that of its saved weights; the saved model is the last epoch's
    splits = split_by_fold(build_dataset("digits_lt"), test_fold=0, val_fraction=0.1, seed=42)
    test = SingleViewDataset(splits.test, eval_transform(16))
    model = AdUniForImageClassification.from_pretrained(output_dir)
    assert abs(_accuracy(model, test) - metrics["test_accuracy"]) < 1e-9
    model.load_state_dict(safetensors.torch.load_file(str(output_dir / "best_validation.safetensors")))
    assert abs(_accuracy(model, test) - metrics["test_best_val_accuracy"]) < 1e-9
    saved = json.loads((output_dir / "test_results.json").read_text())
    assert saved["test_best_val_macro_f1"] == metrics["test_best_val_macro_f1"]

    # a fresh run over the folder starts its choice afresh
    arguments = parse_recipe(
        ARGUMENT_CLASSES,
        [str(DEMO), *FLAGS[:-2], "--num_train_epochs", "1", "--warmup_epochs", "0", "--output_dir", str(output_dir),
         "--overwrite_output_dir", "true"],
    )  # fmt: skip
    metrics = run_training(*arguments)
    assert json.loads((output_dir / "best_validation.json").read_text())["epoch"] == 1.0
    assert (
        not (output_dir / "official_test_selection.json").exists()
        and "test_official_selection_accuracy" not in metrics
    )
