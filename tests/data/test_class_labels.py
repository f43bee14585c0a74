"""Classes read from the data (csv labels, imagefolder sub-folders): a mistyped label never becomes a class, and a
data set of one class is refused when it is prepared and when a run would train on it."""

from __future__ import annotations

import runpy
from pathlib import Path

import datasets
import numpy as np
import pytest

from aduni_hf.data import DataValidationError, build_dataset, dataset_metadata, prepare_dataset
from aduni_hf.data.classes import edit_distance, looks_like_variant
from aduni_hf.recipes import ARGUMENT_CLASSES, RecipeError, parse_recipe, run_training
from tests.data.layouts import photo, write_csv

REPO = Path(__file__).resolve().parents[2]
TYPO_ROWS = (3, 11, 19, 27, 35)  # rows 0-based; CSV lines are these + 2


def write_labelled(root: Path, labels: list[str]) -> Path:
    """A csv data set: images/<k>.png with label labels[k]."""
    (root / "images").mkdir(parents=True)
    for k in range(len(labels)):
        photo(20, 16, seed=k).save(root / "images" / f"{k}.png")
    write_csv(root / "labels.csv", ["path", "label"], [[f"images/{k}.png", label] for k, label in enumerate(labels)])
    return root


def with_typo(typo: str = "melanomma") -> list[str]:
    labels = ["melanoma" if k % 2 else "nevus" for k in range(40)]
    for row in TYPO_ROWS:
        labels[row] = typo
    return labels


def test_a_misspelt_label_in_a_handful_of_rows_is_refused_not_made_a_class(tmp_path):
    root = write_labelled(tmp_path / "raw", with_typo())
    for skip_invalid in (False, True):  # which label is the class is the user's call, not a row to skip
        with pytest.raises(DataValidationError) as error:
            build_dataset("csv", str(root), skip_invalid=skip_invalid)
        message = str(error.value)
        assert "label 'melanomma' (5 image(s): labels.csv line 5, labels.csv line 13," in message
        assert "looks like a variant of 'melanoma' (15 image(s))" in message
        assert "--class_names" in message


def test_declared_classes_refuse_any_other_label_naming_file_row_and_value(tmp_path):
    root = write_labelled(tmp_path / "raw", with_typo())
    with pytest.raises(DataValidationError) as error:
        build_dataset("csv", str(root), class_names="melanoma,nevus")
    message = str(error.value)
    for row in TYPO_ROWS:
        assert f"labels.csv line {row + 2} [images/{row}.png]: label 'melanomma' is not one of the classes" in message
    skipped = build_dataset("csv", str(root), class_names="melanoma,nevus", skip_invalid=True)
    assert skipped.features["label"].names == ["melanoma", "nevus"] and len(skipped) == 35
    assert len(dataset_metadata(skipped)["invalid_items"]) == 5
    declared = build_dataset("csv", str(root), class_names=["nevus", "melanoma", "melanomma"])  # declared: a class
    assert declared.features["label"].names == ["nevus", "melanoma", "melanomma"]
    assert np.bincount(declared["label"]).tolist() == [20, 15, 5]


@pytest.mark.parametrize("variant", ["Melanoma", "MELANOMA", "mela-noma", "melanmoa", "melnoma"])
def test_case_punctuation_and_typing_slips_are_variants(tmp_path, variant):
    root = write_labelled(tmp_path / "raw", with_typo(variant))
    with pytest.raises(DataValidationError, match="look like misspellings of another class"):
        build_dataset("csv", str(root))


def test_distinct_classes_are_not_taken_for_variants():
    for first, second in [("grade1", "grade2"), ("class10", "class1"), ("normal", "abnormal"), ("MEL", "NV"),
                          ("AKIEC", "BKL"), ("benign", "malignant"), ("0", "1")]:  # fmt: skip
        assert not looks_like_variant(first, second), (first, second)
    assert [edit_distance(*pair) for pair in [("abc", "abc"), ("abcd", "abdc"), ("kitten", "sitting")]] == [0, 1, 3]


def test_a_missing_value_marker_is_an_invalid_row_not_a_class(tmp_path):
    labels = with_typo("nevus")
    labels[7] = "nan"
    root = write_labelled(tmp_path / "raw", labels)
    with pytest.raises(DataValidationError, match=r"labels.csv line 9 \[images/7.png\]: label 'nan' reads as a missing"):
        build_dataset("csv", str(root))
    assert build_dataset("csv", str(root), skip_invalid=True).features["label"].names == ["melanoma", "nevus"]


def test_imagefolder_refuses_a_misspelt_class_folder_unless_declared(tmp_path):
    root = tmp_path / "raw"
    for index, (folder, count) in enumerate({"melanoma": 10, "melanomma": 5, "nevus": 10}.items()):
        (root / folder).mkdir(parents=True)
        for k in range(count):
            photo(20, 16, seed=20 * index + k).save(root / folder / f"{k}.png")
    with pytest.raises(DataValidationError, match="class folder 'melanomma' .* looks like a variant of 'melanoma'"):
        build_dataset("imagefolder", str(root))
    with pytest.raises(DataValidationError, match="class folder 'melanomma' is not one of the classes"):
        build_dataset("imagefolder", str(root), class_names="melanoma,nevus")
    kept = build_dataset("imagefolder", str(root), class_names="melanoma,nevus", skip_invalid=True)
    assert kept.features["label"].names == ["melanoma", "nevus"] and len(kept) == 20


def test_a_data_set_of_one_class_is_not_prepared(tmp_path):
    root = write_labelled(tmp_path / "raw", ["nevus"] * 12)
    with pytest.raises(DataValidationError, match="every image is of one class, 'nevus' .12 images.; a classifier"):
        prepare_dataset("csv", str(root), tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists()
    with pytest.raises(DataValidationError, match="every image is of one class, 'images'"):
        build_dataset("imagefolder", str(root))


def test_a_run_refuses_a_one_class_data_set_before_training(tmp_path):
    """A one-class data set saved elsewhere (or by an earlier version) never reaches the Trainer."""
    prepared = tmp_path / "prepared"
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["nevus"]), "fold": datasets.Value("int64")}
    )
    images = [photo(16, 16, seed=k) for k in range(50)]
    datasets.Dataset.from_dict(
        {"image": images, "label": [0] * 50, "fold": [k % 5 for k in range(50)]}, features=features
    ).save_to_disk(str(prepared))
    output_dir = tmp_path / "run"
    arguments = parse_recipe(
        ARGUMENT_CLASSES,
        [str(REPO / "configs" / "demo.yaml"), "--dataset_path", str(prepared), "--output_dir", str(output_dir),
         "--num_train_epochs", "1", "--dataloader_num_workers", "0"],
    )  # fmt: skip
    with pytest.raises(RecipeError, match="has one class, 'nevus'; a classifier needs at least two"):
        run_training(*arguments)
    assert not (output_dir / "model.safetensors").exists() and not (output_dir / "test_results.json").exists()


def test_prepare_data_script_declares_classes_and_prints_each_class_count(tmp_path, capsys):
    root = write_labelled(tmp_path / "raw", with_typo())
    script = runpy.run_path(str(REPO / "scripts" / "prepare_data.py"))
    args = ["--dataset", "csv", "--data_dir", str(root), "--output_dir", str(tmp_path / "out"), "--num_workers", "0"]
    assert script["main"](args) == 2
    assert "label 'melanomma' (5 image(s)" in capsys.readouterr().err
    assert script["main"]([*args, "--class_names", "melanoma,nevus", "--skip_invalid"]) == 0
    printed = capsys.readouterr().out
    assert "saved 35 images" in printed and "images per class: melanoma 15, nevus 20" in printed
    assert "labels.csv line 5 [images/3.png]: label 'melanomma' is not one of the classes" in printed
