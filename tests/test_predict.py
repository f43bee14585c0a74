"""scripts/predict.py: files and folders, batched, one CSV row per file, unreadable files reported, the rest go on."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aduni_hf import AdUniConfig, AdUniForImageClassification
from aduni_hf.hub import build_image_processor
from aduni_hf.inference import image_paths
from tests.script_runs import run_script_here

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["akiec", "bcc", "nv"]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    config = AdUniConfig(num_labels=3, image_size=16, id2label=dict(enumerate(NAMES)))
    AdUniForImageClassification(config).eval().save_pretrained(folder)
    build_image_processor(16).save_pretrained(folder)
    return folder


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    (folder / "nested").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(
        folder / "nested" / "b.jpg", quality=90
    )
    Image.fromarray(rng.integers(0, 65535, (18, 18), dtype=np.uint16)).save(folder / "c16.png")  # 16-bit grey
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    jpeg = folder / "truncated.jpg"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(jpeg)
    jpeg.write_bytes(jpeg.read_bytes()[:300])
    (folder / "notes.txt").write_text("not an image")  # skipped in a folder: not an image suffix
    single = tmp_path / "single.bmp"
    Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).save(single)
    return folder, single


def test_image_paths_walk_folders_and_keep_files(images):
    folder, single = images
    found = image_paths([folder, single])
    assert [p.name for p in found] == [
        "a.png",
        "broken.png",
        "c16.png",
        "b.jpg",
        "truncated.jpg",
        "single.bmp",
    ]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        image_paths([folder / "nowhere"])


def test_predict_writes_one_row_per_file_and_reports_unreadable_ones(saved_model, images, tmp_path):
    folder, single = images
    output = tmp_path / "out" / "predictions.csv"
    output.parent.mkdir()
    result = run_script_here(
        "predict.py", "--model", str(saved_model), "--images", str(folder), str(single), "--output", str(output),
        "--batch_size", "2", "--device", "cpu", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "4 images predicted, 2 unreadable" in result.stdout
    assert (
        "unreadable: " in result.stderr and "broken.png" in result.stderr and "truncated.jpg" in result.stderr
    )
    rows = {Path(row["path"]).name: row for row in csv.DictReader(output.open())}
    assert set(rows) == {"a.png", "b.jpg", "c16.png", "broken.png", "truncated.jpg", "single.bmp"}
    assert rows["broken.png"]["predicted_class"] == "" and rows["broken.png"]["error"]

    model = AdUniForImageClassification.from_pretrained(saved_model).eval()
    processor = build_image_processor(16)
    for name, path in (("a.png", folder / "a.png"), ("c16.png", folder / "c16.png"), ("single.bmp", single)):
        row = rows[name]
        probabilities = np.array([float(row[f"p_{c}"]) for c in NAMES])
        assert probabilities.sum() == pytest.approx(1.0, abs=1e-5) and row["error"] == ""
        image = Image.open(path)
        image = image.convert("L").convert("RGB") if image.mode.startswith("I") else image.convert("RGB")
        with torch.no_grad():
            expected = torch.softmax(model(**processor(images=image, return_tensors="pt")).logits, 1)[
                0
            ].numpy()
        if name != "c16.png":  # 16-bit grey is scaled to 8 bits by aduni_hf, not by PIL's convert
            assert probabilities == pytest.approx(expected, abs=1e-5)
        assert row["predicted_class"] == NAMES[int(probabilities.argmax())]
        assert float(row["probability"]) == pytest.approx(probabilities.max(), abs=1e-6)
