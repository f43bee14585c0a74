"""End to end: a training run on RetinaMNIST (its metrics: ROC-AUC, the headline, and quadratic weighted kappa)
writes both to test_results.json, computed from the final model's test-fold predictions and probabilities, and
its model card carries them in the results table and the model-index."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard

from aduni_hf import AdUniForImageClassification
from aduni_hf.data import SingleViewDataset, build_dataset, eval_transform, split_by_fold
from tests.script_runs import run_script_here
from tests.test_metrics import quadratic_kappa_oracle, roc_auc_oracle

pytestmark = pytest.mark.slow  # a training run

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--num_folds", "2", "--augmentation", "digits", "--image_size", "16", "--max_steps", "2",
         "--per_device_train_batch_size", "16", "--val_fraction", "0", "--eval_strategy", "no",
         "--logging_strategy", "steps", "--logging_steps", "1", "--torch_threads", "1", "--figures", "false"]  # fmt: skip


def write_retinamnist(path: Path) -> Path:
    """A RetinaMNIST .npz in the medmnist package's layout: 60 random 28x28 RGB images, grades 0-4 in turn."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 40), ("val", 10), ("test", 10)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 5).reshape(n, 1).astype(np.uint8)
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture(scope="module")
def retinamnist_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("retina")
    npz, output_dir = write_retinamnist(folder / "retinamnist.npz"), folder / "run"
    result = run_script_here(
        "train.py", str(ROOT / "configs" / "demo.yaml"), "--dataset", "retinamnist", "--data_dir", str(npz),
        "--output_dir", str(output_dir), *QUICK, cwd=folder,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return npz, output_dir, result.stdout


def test_metrics_per_data_set_in_the_results(retinamnist_run):
    """test_quadratic_kappa and test_roc_auc equal the definitions applied to the saved model's test-fold
    predictions (argmax) and probabilities (softmax of the raw logits)."""
    npz, output_dir, stdout = retinamnist_run
    results = json.loads((output_dir / "test_results.json").read_text())
    splits = split_by_fold(build_dataset("retinamnist", str(npz), num_folds=2, seed=42), 0, 0.0, seed=42)
    test = SingleViewDataset(splits.test, eval_transform(16))
    model = AdUniForImageClassification.from_pretrained(output_dir).eval()
    with torch.no_grad():
        logits = model(pixel_values=torch.stack([test[i]["pixel_values"] for i in range(len(test))])).logits
    probabilities = torch.softmax(logits.double(), dim=1).numpy()
    references = [int(test[i]["labels"]) for i in range(len(test))]
    matrix = [[0] * 5 for _ in range(5)]
    for predicted, true in zip(probabilities.argmax(axis=1).tolist(), references, strict=True):
        matrix[true][predicted] += 1
    kappa = quadratic_kappa_oracle(matrix)
    assert results["test_quadratic_kappa"] == pytest.approx(kappa, abs=1e-6, nan_ok=True)
    assert results["test_roc_auc"] == pytest.approx(roc_auc_oracle(probabilities.tolist(), references), abs=1e-6)
    assert "ROC-AUC (macro, one-vs-rest)" in stdout and "quadratic weighted kappa" in stdout  # the console table


def test_the_card_carries_them_with_the_headline_first(retinamnist_run):
    _, output_dir, _ = retinamnist_run
    results = json.loads((output_dir / "test_results.json").read_text())
    card = ModelCard.load(output_dir / "README.md")
    index = [(r.metric_type, r.metric_value) for r in card.data.eval_results]
    assert index[0] == ("roc_auc", round(results["test_roc_auc"], 4))  # the headline, first
    if math.isfinite(results["test_quadratic_kappa"]):
        assert ("cohen_kappa", round(results["test_quadratic_kappa"], 4)) in index
    assert ("f1", round(results["test_macro_f1"], 4)) in index
    header = "| model | accuracy | macro-F1 | balanced accuracy | **ROC-AUC (macro, one-vs-rest)** | quadratic weighted kappa |"
    assert header in card.text
    row = next(line for line in card.text.splitlines() if line.startswith("| final model (last epoch) |"))
    assert row.endswith(f"| {results['test_roc_auc']:.4f} | {results['test_quadratic_kappa']:.4f} |")
    assert "the metric MedMNIST reports with accuracy" in card.text
