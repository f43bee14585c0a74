"""imagefolder and csv builders: class names, ids, path resolution, grouped folds, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import photo, write_csv

from aduni_hf.data import DataValidationError, build_dataset, dataset_metadata


def make_folder(root: Path, counts: dict[str, int]) -> Path:
    for index, (name, count) in enumerate(counts.items()):
        (root / name / "sub").mkdir(parents=True)
        for k in range(count):
            folder = root / name / ("sub" if k % 2 else "")
            photo(20, 16, seed=10 * index + k).save(folder / f"img{k}.png")
        (root / name / "notes.txt").write_text("not an image\n")
    return root


def test_imagefolder_classes_are_sorted_folder_names(tmp_path):
    root = make_folder(tmp_path / "raw", {"nevus": 4, "melanoma": 3, "bcc": 3})
    ds = build_dataset("imagefolder", str(root), num_folds=3)
    assert ds.features["label"].names == ["bcc", "melanoma", "nevus"]
    assert sorted(ds["label"]) == [0] * 3 + [1] * 3 + [2] * 4
    assert "melanoma/sub/img1.png" in ds["image_id"] and "melanoma/img0.png" in ds["image_id"]


def test_imagefolder_empty_class_and_stray_image(tmp_path):
    root = make_folder(tmp_path / "raw", {"a": 3, "b": 3})
    (root / "empty").mkdir()
    photo(20, 16, 0).save(root / "stray.png")
    with pytest.raises(DataValidationError) as error:
        build_dataset("imagefolder", str(root), num_folds=3)
    assert f"{root / 'empty'}: class folder holds no image files" in str(error.value)
    assert f"{root / 'stray.png'} [stray.png]: image is not inside a class sub-folder" in str(error.value)
    ds = build_dataset("imagefolder", str(root), num_folds=3, skip_invalid=True)
    assert ds.features["label"].names == ["a", "b"]
    assert len(dataset_metadata(ds)["invalid_items"]) == 2


def test_imagefolder_corrupt_image(tmp_path):
    root = make_folder(tmp_path / "raw", {"a": 4, "b": 3})
    (root / "a" / "img2.png").write_bytes(b"broken")
    with pytest.raises(DataValidationError, match="a/img2.png.*cannot decode image"):
        build_dataset("imagefolder", str(root), num_folds=3)
    ds = build_dataset("imagefolder", str(root), num_folds=3, skip_invalid=True)
    assert "a/img2.png" not in ds["image_id"] and len(ds) == 6


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
