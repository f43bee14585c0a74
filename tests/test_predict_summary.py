"""scripts/predict.py where the true classes are known (a labels CSV, or class sub-folders): a summary with every
metric of a training run's test results, from the same probabilities as the CSV; an image without a label is
refused, named, before anything is predicted or written."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from aduni_hf import AdUniConfig, AdUniForImageClassification
from aduni_hf.hub import build_image_processor
from aduni_hf.inference import predict_and_summarise
from tests.script_runs import run_script_here
from tests.test_metrics import quadratic_kappa_oracle, roc_auc_oracle

NAMES = ["akiec", "bcc", "nv"]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(1)
    config = AdUniConfig(num_labels=3, image_size=16, id2label=dict(enumerate(NAMES)))
    AdUniForImageClassification(config).eval().save_pretrained(folder)
    build_image_processor(16).save_pretrained(folder)
    return folder


@pytest.fixture
def labelled_images(tmp_path):
    """images/<class>/<class>_<k>.png, three per class, and one unreadable file in nv/."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for label in NAMES:
        (root / label).mkdir(parents=True)
        for k in range(3):
            pixels = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{label}_{k}.png")
    (root / "nv" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return root


def expected_summary(predictions) -> dict[str, float]:
    """The metrics from their definitions, over the readable images' probabilities and labels."""
    read = [p for p in predictions if p.probabilities is not None]
    references = [p.label for p in read]
    predicted = [int(np.argmax(p.probabilities)) for p in read]
    matrix = [[0] * 3 for _ in range(3)]
    for p, r in zip(predicted, references, strict=True):
        matrix[r][p] += 1
    return {
        "accuracy": sum(p == r for p, r in zip(predicted, references, strict=True)) / len(read),
        "quadratic_kappa": quadratic_kappa_oracle(matrix),
        "roc_auc": roc_auc_oracle([p.probabilities for p in read], references),
    }


def test_labels_from_folders_give_the_summary(saved_model, labelled_images, tmp_path):
    predictions, summary = predict_and_summarise(
        str(saved_model), [labelled_images], tmp_path / "p.csv", device="cpu", progress=False,
        labels_from_folders=True,
    )  # fmt: skip
    assert (summary["num_images"], summary["num_unreadable"]) == (9, 1)
    assert [p.label for p in predictions if p.path.name != "broken.png"] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for key, value in expected_summary(predictions).items():
        assert summary[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key
    assert {"macro_f1", "balanced_accuracy", "f1_akiec", "f1_nv"} <= set(summary)


@pytest.mark.slow
def test_a_labels_csv_matches_paths_names_and_stems(saved_model, labelled_images, tmp_path):
    table = tmp_path / "labels.csv"
    rows = [("image", "label")]
    for label in NAMES:
        rows += [(str(labelled_images / label / f"{label}_0.png"), label), (f"{label}_1.png", label), (f"{label}_2", label)]
    rows.append(("broken", "nv"))
    with table.open("w", newline="") as file:
        csv.writer(file).writerows(rows)
    predictions, summary = predict_and_summarise(
        str(saved_model), [labelled_images], tmp_path / "p.csv", device="cpu", progress=False, labels_csv=table
    )
    _, by_folders = predict_and_summarise(
        str(saved_model), [labelled_images], tmp_path / "q.csv", device="cpu", progress=False,
        labels_from_folders=True,
    )  # fmt: skip
    assert json.dumps(summary) == json.dumps(by_folders)


def test_an_image_without_a_label_or_an_unknown_class_is_refused_before_predicting(
    saved_model, labelled_images, tmp_path
):
    table, output = tmp_path / "labels.csv", tmp_path / "p.csv"
    table.write_text("image,label\nakiec_0,akiec\n")
    with pytest.raises(ValueError, match=r"9 of 10 images have no label in .*labels.csv: .*akiec_1.png"):
        predict_and_summarise(str(saved_model), [labelled_images], output, device="cpu", labels_csv=table)
    assert not output.exists()
    table.write_text("image,label\nakiec_0,akiec\nakiec_1,melanoma\n")
    with pytest.raises(ValueError, match=r"labels.csv line 3: label 'melanoma' is not a class of the model"):
        predict_and_summarise(str(saved_model), [labelled_images], output, device="cpu", labels_csv=table)
    table.write_text("file,class\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['image', 'label'\]"):
        predict_and_summarise(str(saved_model), [labelled_images], output, device="cpu", labels_csv=table)


def test_the_script_prints_and_writes_the_summary(saved_model, labelled_images, tmp_path):
    script = ["--model", str(saved_model), "--images", str(labelled_images), "--output", str(tmp_path / "p.csv"),
              "--device", "cpu"]  # fmt: skip
    result = run_script_here(
        "predict.py", *script, "--labels_from_folders", "--summary_output", str(tmp_path / "summary.json"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "labelled images: 9 (1 unreadable, left out)" in result.stdout
    kappa = summary["quadratic_kappa"]
    rows = {line.rsplit(None, 1)[0]: line.rsplit(None, 1)[1] for line in result.stdout.splitlines() if len(line.split()) > 1}
    assert rows["quadratic weighted kappa"] == f"{kappa:.4f}" or math.isnan(kappa)
    assert rows["ROC-AUC (macro, one-vs-rest)"] == f"{summary['roc_auc']:.4f}"
    refused = run_script_here("predict.py", *script, "--summary_output", str(tmp_path / "s.json"), cwd=tmp_path)
    assert refused.returncode != 0 and "--summary_output needs the true classes" in refused.stderr
