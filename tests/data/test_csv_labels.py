"""csv builder: path and label columns, ids, path resolution, grouped folds, bad rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from aduni_hf.data import DataValidationError, build_dataset, dataset_metadata
from tests.data.layouts import photo, write_csv


def make_csv_set(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    rows = []
    for k in range(9):
        photo(20, 16, k).save(root / "images" / f"{k}.jpg")
        rows.append([f"images/{k}.jpg", ["nevus", "melanoma", "bcc"][k % 3], f"patient{k // 2}"])
    write_csv(root / "labels.csv", ["file", "diagnosis", "patient"], rows)
    return root


def test_csv_paths_labels_and_groups(tmp_path):
    root = make_csv_set(tmp_path / "raw")
    options = {"path_column": "file", "label_column": "diagnosis", "num_folds": 3}
    for data_dir in (root, root / "labels.csv"):
        ds = build_dataset("csv", str(data_dir), **options)
        assert ds.features["label"].names == ["bcc", "melanoma", "nevus"]
        assert ds["image_id"][0] == "images/0.jpg" and ds["label"][0] == 2
    grouped = build_dataset("csv", str(root), group_column="patient", **options)
    folds_of = {}
    for patient, fold in zip(grouped["group"], grouped["fold"], strict=True):
        folds_of.setdefault(patient, set()).add(fold)
    assert all(len(f) == 1 for f in folds_of.values())


def test_csv_paths_relative_to_data_dir(tmp_path):
    root = make_csv_set(tmp_path / "raw")
    (root / "meta").mkdir()
    (root / "labels.csv").rename(root / "meta" / "labels.csv")
    ds = build_dataset(
        "csv",
        str(root),
        csv_file="meta/labels.csv",
        path_column="file",
        label_column="diagnosis",
        num_folds=3,
    )
    assert len(ds) == 9


def write_rows(root: Path, change) -> None:
    rows = [[f"images/{k}.jpg", ["nevus", "melanoma", "bcc"][k % 3], "p"] for k in range(9)]
    write_csv(root / "labels.csv", ["file", "diagnosis", "patient"], change(rows))


CSV_OPTIONS = {"path_column": "file", "label_column": "diagnosis", "num_folds": 2}


def test_csv_empty_label_and_duplicate_row(tmp_path):
    root = make_csv_set(tmp_path / "raw")

    def change(rows):
        rows[2][1] = ""
        return rows + [rows[0]]

    write_rows(root, change)
    with pytest.raises(DataValidationError) as error:
        build_dataset("csv", str(root), **CSV_OPTIONS)
    assert "labels.csv line 4 [images/2.jpg]: empty diagnosis" in str(error.value)
    assert "labels.csv line 11 [images/0.jpg]: duplicate image id (first on line 2)" in str(error.value)
    ds = build_dataset("csv", str(root), skip_invalid=True, **CSV_OPTIONS)
    assert len(ds) == 8 and len(dataset_metadata(ds)["invalid_items"]) == 2
    assert "images/2.jpg" not in ds["image_id"]


def test_csv_missing_image(tmp_path):
    root = make_csv_set(tmp_path / "raw")

    def change(rows):
        rows[4][0] = "images/missing.jpg"
        return rows

    write_rows(root, change)
    with pytest.raises(DataValidationError, match="labels.csv line 6 .*missing.jpg does not exist"):
        build_dataset("csv", str(root), **CSV_OPTIONS)
    ds = build_dataset("csv", str(root), skip_invalid=True, **CSV_OPTIONS)
    assert len(ds) == 8 and dataset_metadata(ds)["invalid_items"][0]["image_id"] == "images/missing.jpg"


def test_csv_wrong_header(tmp_path):
    root = make_csv_set(tmp_path / "raw")
    for skip in (False, True):
        with pytest.raises(
            DataValidationError, match=r"labels.csv line 1: header .* lacks column\(s\) \['path'\]"
        ):
            build_dataset("csv", str(root), label_column="diagnosis", skip_invalid=skip)
