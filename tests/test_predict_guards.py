"""scripts/predict.py on what a hostile user gives it: file names that are not UTF-8 are predicted and written, and
a model whose weights, buffers or outputs are not finite is refused before anything is written."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aduni_hf import AdUniConfig, AdUniForImageClassification
from aduni_hf.hub import build_image_processor
from aduni_hf.inference import predict_images
from tests.script_runs import run_script_here

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["akiec", "bcc", "nv"]
NOT_UTF8 = os.fsdecode(b"scan-\xff.png")  # byte 0xff: a valid Linux file name that is not UTF-8


def save_model(folder: Path, change=None) -> Path:
    """A real saved tiny model (16x16, resnet18) with its image processor; `change(model)` edits it first."""
    torch.manual_seed(0)
    model = AdUniForImageClassification(
        AdUniConfig(num_labels=3, image_size=16, id2label=dict(enumerate(NAMES)))
    )
    if change is not None:
        with torch.no_grad():
            change(model)
    model.eval().save_pretrained(folder)
    build_image_processor(16).save_pretrained(folder)
    return folder


def run_predict(model: Path, images: Path, output: Path) -> subprocess.CompletedProcess:
    """predict.py in a process of its own, its console strict as on a desktop locale."""
    # A strict console, as on a desktop locale: a path is printed only in a form the console can show.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8:strict"}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "predict.py"), "--model", str(model), "--images", str(images),
         "--output", str(output), "--device", "cpu"],
        capture_output=True, text=True, errors="backslashreplace", env=env, timeout=300,
    )  # fmt: skip


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / "a.png")
    (folder / NOT_UTF8).write_bytes((folder / "a.png").read_bytes())  # the same image under a non-UTF-8 name
    return folder


@pytest.mark.slow
def test_a_file_name_that_is_not_utf8_is_predicted_and_written(tmp_path, images):
    model = save_model(tmp_path / "model")
    output = tmp_path / os.fsdecode(b"out-\xfe") / os.fsdecode(b"predictions-\xfe.csv")
    result = run_predict(model, images, output)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 images predicted, 0 unreadable" in result.stdout
    assert b"scan-\xff.png" in output.read_bytes()  # the file's own bytes, not a replacement character
    with open(output, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        rows = {Path(row["path"]).name: row for row in csv.DictReader(handle)}
    assert set(rows) == {"a.png", NOT_UTF8}
    assert (images / NOT_UTF8).is_file() and Path(rows[NOT_UTF8]["path"]) == images / NOT_UTF8
    assert rows[NOT_UTF8]["error"] == "" and rows[NOT_UTF8]["predicted_class"] in NAMES
    assert [rows[NOT_UTF8][f"p_{c}"] for c in NAMES] == [rows["a.png"][f"p_{c}"] for c in NAMES]
    assert sorted(os.listdir(output.parent)) == [output.name]  # no temporary file


def test_a_model_with_infinite_batchnorm_statistics_is_refused(tmp_path, images):
    def diverged(model):
        model.aduni.backbone.bn1.running_var[:22] = float("inf")  # issue 18: what a diverged run saved

    model = save_model(tmp_path / "diverged", diverged)
    output = tmp_path / "out" / "predictions.csv"
    result = run_script_here(  # before issue 18: "1 images predicted, 0 unreadable"
        "predict.py", "--model", str(model), "--images", str(images / "a.png"), "--output", str(output),
        "--device", "cpu", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    assert str(model) in result.stderr and "not finite" in result.stderr
    assert "aduni.backbone.bn1.running_var (22 of 64 values)" in result.stderr
    assert "earlier checkpoint" in result.stderr and "Traceback" not in result.stderr
    assert "images predicted" not in result.stdout
    assert not output.parent.exists() or not os.listdir(output.parent)  # nothing written


def test_finite_weights_whose_outputs_overflow_are_refused(tmp_path, images):
    def huge(model):
        model.classifier.dense.weight.fill_(1e38)  # finite, but the logits overflow to inf

    folder = save_model(tmp_path / "huge", huge)
    model = AdUniForImageClassification.from_pretrained(folder).eval()
    with pytest.raises(ValueError, match=r"huge.*not finite.*a\.png"):
        list(predict_images(model, build_image_processor(16), [images / "a.png"]))
