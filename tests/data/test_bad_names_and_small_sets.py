"""Two inputs that ended in tracebacks: a file name that is not UTF-8 (prepare_data names it, and --skip_invalid
leaves it out), and a data set too small for the inner validation split (refused before training, saying what
val_fraction would work)."""

from __future__ import annotations

import csv
import os
import runpy
from pathlib import Path

import datasets
import pytest

from aduni_hf.data import DataValidationError, prepare_dataset, split_by_fold
from aduni_hf.recipes import RecipeError
from aduni_hf.recipes.arguments import DataArguments, ModelArguments
from aduni_hf.recipes.run_data import read_run_data
from tests.data.layouts import photo

REPO = Path(__file__).resolve().parents[2]
LATIN1_NAME = b"caf\xe9.png"  # "café.png" written by a Latin-1 system: not UTF-8


def save_with_bytes_name(folder: Path, name: bytes, seed: int) -> Path:
    """Write a PNG under a file name given as bytes, or skip where the file system refuses non-UTF-8 names."""
    path = Path(os.fsdecode(os.fsencode(folder) + b"/" + name))
    try:
        photo(20, 16, seed=seed).save(path, format="PNG")
    except (OSError, UnicodeError) as error:
        pytest.skip(f"this file system does not store the file name {name!r}: {error}")
    return path


def image_folder(root: Path) -> Path:
    """Two classes of 6 images, and one more image in 'melanoma' whose name is not UTF-8."""
    for index, name in enumerate(("melanoma", "nevus")):
        (root / name).mkdir(parents=True)
        for k in range(6):
            photo(20, 16, seed=10 * index + k).save(root / name / f"{k}.png")
    save_with_bytes_name(root / "melanoma", LATIN1_NAME, seed=99)
    return root


def test_a_file_name_that_is_not_utf8_is_named_and_skipped_with_skip_invalid(tmp_path, capsys):
    root = image_folder(tmp_path / "raw")
    with pytest.raises(DataValidationError) as error:
        prepare_dataset("imagefolder", str(root), tmp_path / "out", num_folds=3)
    message = str(error.value)
    assert r"melanoma/caf\xe9.png" in message and "file name is not valid UTF-8" in message
    assert not (tmp_path / "out").exists()

    script = runpy.run_path(str(REPO / "scripts" / "prepare_data.py"))
    args = ["--dataset", "imagefolder", "--data_dir", str(root), "--output_dir", str(tmp_path / "out"),
            "--num_folds", "3", "--num_workers", "0"]  # fmt: skip
    assert script["main"](args) == 2
    assert r"caf\xe9.png" in capsys.readouterr().err
    assert script["main"]([*args, "--skip_invalid"]) == 0
    printed = capsys.readouterr().out
    assert "left out 1 invalid item(s)" in printed and r"caf\xe9.png" in printed
    assert len(datasets.load_from_disk(str(tmp_path / "out"))) == 12
    with open(tmp_path / "out" / "invalid_items.csv", newline="", encoding="utf-8") as handle:
        (item,) = list(csv.DictReader(handle))
    assert item["image_id"] == r"melanoma/caf\xe9.png" and "file name is not valid UTF-8" in item["reason"]


def test_a_stray_image_whose_name_is_not_utf8_is_reported_as_such(aptos, tmp_path):
    raw = aptos()
    save_with_bytes_name(raw.root / "train_images", LATIN1_NAME, seed=5)
    with pytest.raises(DataValidationError, match=r"caf\\xe9.png.*file name is not valid UTF-8"):
        prepare_dataset("aptos2019", str(raw.root), tmp_path / "out", num_folds=3)
    prepare_dataset("aptos2019", str(raw.root), tmp_path / "out", num_folds=3, skip_invalid=True)
    assert len(datasets.load_from_disk(str(tmp_path / "out"))) == len(raw.ids)


def small_prepared(tmp_path: Path, per_class: dict[str, int]) -> Path:
    root = tmp_path / "raw"
    for index, (name, count) in enumerate(per_class.items()):
        (root / name).mkdir(parents=True)
        for k in range(count):
            photo(20, 16, seed=10 * index + k).save(root / name / f"{k}.png")
    return prepare_dataset("imagefolder", str(root), tmp_path / "prepared", num_folds=3).output_dir


def test_a_validation_split_too_fine_for_the_classes_is_refused_before_training(tmp_path):
    prepared = small_prepared(tmp_path, {"melanoma": 6, "nevus": 9})  # training folds: 4 and 6 images
    with pytest.raises(RecipeError) as error:
        read_run_data(DataArguments(dataset_path=str(prepared), test_fold=0, val_fraction=0.1), ModelArguments())
    message = str(error.value)
    assert "test_fold=0: val_fraction=0.1 holds out one part of a 10-way stratified split" in message
    assert "images per class: 'melanoma' 4, 'nevus' 6" in message
    assert "Use val_fraction 0.17 or more (a 6-way split" in message and "val_fraction 0 (no validation" in message
    data = read_run_data(DataArguments(dataset_path=str(prepared), val_fraction=0.17), ModelArguments())
    assert data.splits.class_counts("val") == [1, 1]  # the advice works


def test_a_class_without_a_validation_image_is_named_in_the_log(tmp_path, caplog):
    prepared = small_prepared(tmp_path, {"nevus": 20, "vascular": 3})  # training folds: 13 and 2 images
    with caplog.at_level("WARNING", logger="aduni_hf.recipes.run_data"):
        data = read_run_data(DataArguments(dataset_path=str(prepared), val_fraction=0.1), ModelArguments())
    assert data.splits.class_counts("val") == [2, 0]
    assert "the validation split (val_fraction=0.1) has no image of ['vascular']" in caplog.text


def test_a_grouped_validation_split_with_too_few_groups_is_refused(tmp_path):
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"]),
                                  "fold": datasets.Value("int64"), "group": datasets.Value("string")})  # fmt: skip
    dataset = datasets.Dataset.from_dict(
        {"image": [photo(8, 8, seed=k) for k in range(48)], "label": [k % 2 for k in range(48)],
         "fold": [k // 16 for k in range(48)], "group": [f"lesion{k // 8}" for k in range(48)]},
        features=features,
    )  # fmt: skip
    with pytest.raises(ValueError, match="10-way split of the training folds by group .* they hold 4 groups"):
        split_by_fold(dataset, test_fold=0, val_fraction=0.1)
